// Shared by the harnesses. The tar ones: give every 512-byte block of a would-be tar a valid header
// checksum, so that mutated headers get past the checksum to the parser behind it. Headers
// always start at multiples of 512 (data and extended headers are padded), so fixing every
// non-zero block covers them all; data blocks just get 8 different bytes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "compress/byte_io.h"

// Counts the output it is given (touching the bytes) and throws CapReached once more than
// `cap` bytes came out: harnesses stop a bomb's output there.
struct CapReached {};
class CappedSink : public layerstore::ByteSink {
 public:
  explicit CappedSink(uint64_t cap) : cap_(cap) {}
  void write(const uint8_t* p, size_t n) override {
    if (n > 0) sum += p[0] + p[n - 1];
    total += n;
    if (total > cap_) throw CapReached{};
  }
  uint64_t total = 0;
  unsigned sum = 0;

 private:
  uint64_t cap_;
};

inline void fix_tar_checksums(std::string& tar) {
  static const char kZero[512] = {};
  for (size_t off = 0; off + 512 <= tar.size(); off += 512) {
    char* b = &tar[off];
    if (std::memcmp(b, kZero, 512) == 0) continue;
    std::memset(b + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; ++i) sum += static_cast<unsigned char>(b[i]);
    char field[8];
    std::snprintf(field, sizeof field, "%06o", sum & 0777777);  // "%06o\0", then the ' '
    std::memcpy(b + 148, field, 7);
  }
}
