// SHA-256 (OpenSSL) and CRC-64/ISO (ISA-L) against known vectors.
#include <algorithm>
#include <cstdio>
#include <string>

#include "digest/crc64.h"
#include "digest/sha256.h"

#include "check.h"

using namespace layerstore;

static std::string crc_hex(const std::string& s) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(crc64_iso_update(0, s.data(), s.size())));
  return buf;
}

int main() {
  // SPEC §5.3 vectors (Go's crc64.Checksum with the ISO table).
  CHECK(crc_hex("foo") == "3c3c303000000000");
  CHECK(crc_hex("bar") == "2dc416f000000000");
  CHECK(crc_hex("hello\n") == "614c3eeee2d81000");
  CHECK(crc_hex("imma hurr til I derp") == "0274a4b1abec6b4e");
  CHECK(crc_hex("") == "0000000000000000");
  // Continuation: crc(a+b) == update(update(0, a), b), for every split point.
  std::string s = "imma hurr til I derp";
  for (size_t i = 0; i <= s.size(); ++i) {
    uint64_t c = crc64_iso_update(0, s.data(), i);
    c = crc64_iso_update(c, s.data() + i, s.size() - i);
    CHECK(c == crc64_iso_update(0, s.data(), s.size()));
  }
  // Combining the CRCs of pieces computed apart gives the CRC of the whole, for every split
  // point, with empty pieces, and for pieces of 1 MiB + 1 bytes (long shifts).
  for (size_t i = 0; i <= s.size(); ++i) {
    uint64_t a = crc64_iso_update(0, s.data(), i);
    uint64_t b = crc64_iso_update(0, s.data() + i, s.size() - i);
    CHECK(crc64_iso_combine(a, b, s.size() - i) == crc64_iso_update(0, s.data(), s.size()));
  }
  std::string big((1 << 20) + 1, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  uint64_t whole = crc64_iso_update(0, big.data(), big.size());
  uint64_t pieces = 0;
  for (size_t off = 0; off < big.size(); off += 300007) {
    size_t n = std::min<size_t>(300007, big.size() - off);
    pieces = crc64_iso_combine(pieces, crc64_iso_update(0, big.data() + off, n), n);
  }
  CHECK(pieces == whole);

  // FIPS 180-2 vectors.
  CHECK(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(sha256_hex(m.data(), m.size()) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a', fed in uneven pieces.
  std::string a(1000000, 'a');
  Sha256 h;
  size_t off = 0, step = 1;
  while (off < a.size()) {
    size_t k = std::min(step, a.size() - off);
    h.update(a.data() + off, k);
    off += k;
    step = step * 3 + 1;
  }
  CHECK(h.hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  if (failures) std::fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
