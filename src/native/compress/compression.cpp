#include "compress/compression.h"

#include <cstring>

namespace layerstore {

namespace {
bool has_prefix(const uint8_t* p, size_t n, const char* magic, size_t m) {
  return n >= m && std::memcmp(p, magic, m) == 0;
}
}  // namespace

Compression detect_compression(const uint8_t* p, size_t n) {
  if (has_prefix(p, n, "BZh", 3)) return Compression::kBzip2;
  if (has_prefix(p, n, "\x1f\x8b\x08", 3)) return Compression::kGzip;
  if (has_prefix(p, n, "\xfd\x37\x7a\x58\x5a\x00", 6)) return Compression::kXz;
  if (has_prefix(p, n, "\x28\xb5\x2f\xfd", 4)) return Compression::kZstd;
  return Compression::kNone;
}

const char* compression_extension(Compression c) {
  switch (c) {
    case Compression::kBzip2:
      return "tar.bz2";
    case Compression::kGzip:
      return "tar.gz";
    case Compression::kXz:
      return "tar.xz";
    case Compression::kZstd:
      return "tar.zst";
    default:
      return "tar";
  }
}

}  // namespace layerstore
