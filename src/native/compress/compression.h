// Compression formats as the Go store numbers them (archive.Compression).
#pragma once

#include <cstddef>
#include <cstdint>

namespace layerstore {

enum class Compression : int { kNone = 0, kBzip2 = 1, kGzip = 2, kXz = 3, kZstd = 4 };

// By magic number (SPEC §6.2); kNone when nothing matches (also for n too short).
Compression detect_compression(const uint8_t* p, size_t n);

// "tar", "tar.bz2", "tar.gz", "tar.xz", "tar.zst" like Go's Compression.Extension().
const char* compression_extension(Compression c);

}  // namespace layerstore
