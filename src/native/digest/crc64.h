// CRC-64 with the ISO polynomial, exactly Go's crc64.Checksum(data, crc64.MakeTable(crc64.ISO))
// (what tar-split records per file). ISA-L's crc64_iso_refl does the carry-less multiply.
#pragma once

#include <cstddef>
#include <cstdint>

namespace layerstore {

// Start with crc = 0; feed the result of the previous call to continue.
uint64_t crc64_iso_update(uint64_t crc, const void* p, size_t n);

// The CRC of A followed by B, from crc_a = CRC(A), crc_b = CRC(B) and B's length: lets
// pieces of one file be checked on different threads.
uint64_t crc64_iso_combine(uint64_t crc_a, uint64_t crc_b, uint64_t len_b);

}  // namespace layerstore
