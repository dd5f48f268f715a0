#include "digest/crc64.h"

#include <isa-l/crc64.h>

#include <array>

namespace layerstore {

uint64_t crc64_iso_update(uint64_t crc, const void* p, size_t n) {
  return crc64_iso_refl(crc, static_cast<const unsigned char*>(p), n);
}

namespace {

// Polynomials over GF(2) modulo the ISO polynomial, bit-reflected like the CRC itself: the
// top bit is x^0. zlib's crc32_combine, widened to 64 bits.
constexpr uint64_t kIsoPoly = 0xD800000000000000ull;
constexpr uint64_t kOne = uint64_t{1} << 63;

uint64_t mult_mod_p(uint64_t a, uint64_t b) {
  uint64_t product = 0;
  for (uint64_t m = kOne; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kIsoPoly : b >> 1;
  }
  return product;
}

// x^(2^k) for k = 0..66: enough for 8 * any 64-bit length.
const std::array<uint64_t, 67>& x_pow_2k() {
  static const std::array<uint64_t, 67> table = [] {
    std::array<uint64_t, 67> t{};
    t[0] = kOne >> 1;  // x^1
    for (size_t k = 1; k < t.size(); ++k) t[k] = mult_mod_p(t[k - 1], t[k - 1]);
    return t;
  }();
  return table;
}

}  // namespace

uint64_t crc64_iso_combine(uint64_t crc_a, uint64_t crc_b, uint64_t len_b) {
  // crc_a times x^(8 len_b): the pre- and post-inversion of both CRCs cancel out.
  uint64_t shift = kOne;
  unsigned k = 3;  // 8 = 2^3 bits per byte
  for (uint64_t n = len_b; n != 0; n >>= 1, ++k)
    if (n & 1) shift = mult_mod_p(x_pow_2k()[k], shift);
  return mult_mod_p(shift, crc_a) ^ crc_b;
}

}  // namespace layerstore
