// Output-side compression.
#pragma once

#include <memory>

#include "compress/byte_io.h"
#include "compress/compression.h"

namespace layerstore {

// Returns a sink that compresses into `out` (not owned; close() of the returned sink
// finishes the stream and closes `out`). kNone: pass-through.
// gzip: pigz-style parallel deflate with ISA-L over fixed 1 MiB blocks, already-compressed
// 64 KiB chunks stored as they are (the output bytes never depend on `threads`), one valid
// gzip stream; level -1 = default (1), 0..9 mapped onto ISA-L levels. The sink lends its
// block buffer (ByteSink::lend), so a producer can read files straight into it.
// zstd: libzstd with nbWorkers = threads (0 = single-threaded); level -1 = 3.
// bzip2/xz: ArchiveError("unsupported compression format tar.bz2" / "tar.xz").
std::unique_ptr<ByteSink> make_compressing_sink(Compression c, ByteSink& out, int level,
                                                int threads);

}  // namespace layerstore
