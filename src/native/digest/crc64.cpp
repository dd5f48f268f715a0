#include "digest/crc64.h"

#include <isa-l/crc64.h>

namespace layerstore {

uint64_t crc64_iso_update(uint64_t crc, const void* p, size_t n) {
  return crc64_iso_refl(crc, static_cast<const unsigned char*>(p), n);
}

}  // namespace layerstore
