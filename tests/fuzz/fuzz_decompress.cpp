// libFuzzer: the decompressors (gzip, zstd, bzip2, xz) over arbitrary bytes, through the
// push API (Decompressor::feed/finish, fed in pieces) and the pull API (DecompressingSource,
// by detection or by a given format). The first byte picks format and API; output stops at
// 8 MiB. Only ArchiveError may come out, and the pull API may not hold more than a bounded
// amount of output at once.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "compress/byte_io.h"
#include "compress/compression.h"
#include "compress/decompress.h"
#include "tar/errors.h"

#include "fuzz_util.h"

using namespace layerstore;

namespace {

constexpr uint64_t kCap = 8 << 20;

const Compression kFormats[] = {Compression::kGzip, Compression::kZstd, Compression::kBzip2,
                                Compression::kXz};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  const Compression c = kFormats[mode & 3];
  try {
    if ((mode & 0x0c) == 0) {
      // Push: fed in pieces whose size comes from the mode byte.
      std::unique_ptr<Decompressor> d = Decompressor::create(c);
      CappedSink out(kCap);
      const size_t piece = size_t{1} << ((mode >> 4) & 15);
      for (size_t off = 0; off < size; off += piece)
        d->feed(data + off, std::min(piece, size - off), out);
      d->finish(out);
    } else {
      MemorySource src(data, size);
      std::unique_ptr<DecompressingSource> ds =
          (mode & 0x0c) == 4 ? std::make_unique<DecompressingSource>(src)
                             : std::make_unique<DecompressingSource>(src, c);
      uint8_t buf[65536];
      uint64_t total = 0;
      for (size_t n; (n = ds->read(buf, sizeof buf)) > 0;) {
        total += n;
        if (total > kCap) break;
      }
    }
  } catch (const ArchiveError&) {
  } catch (const CapReached&) {
  }
  return 0;
}
