#include "compress/byte_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace layerstore {

size_t FdSource::read(uint8_t* buf, size_t n) {
  for (;;) {
    ssize_t r = ::read(fd_, buf, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "read");
  }
}

void FdSink::write(const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write");
    }
    p += w;
    n -= static_cast<size_t>(w);
    written_ += static_cast<uint64_t>(w);
  }
}

size_t MemorySource::read(uint8_t* buf, size_t n) {
  size_t k = n_ - off_ < n ? n_ - off_ : n;
  if (k) std::memcpy(buf, p_ + off_, k);
  off_ += k;
  return k;
}

}  // namespace layerstore
