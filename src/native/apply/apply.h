// Applying a layer tarball in one streaming pass (containers/storage's
// applyDiffWithOptions + the driver's ApplyDiff, SPEC §6.1): detect the compression from
// the first 10240 bytes, hash and count the input, decompress, hash and count the tar,
// disassemble it into tar-split entries, extract every entry into the layer directory,
// and collect what the layer record needs. The stages run on threads joined by bounded
// queues of 1 MiB blocks (wake-ups batched, see block_queue.h):
//
//   fd input:      reader + input SHA-256 -> decompressor -+-> tar SHA-256
//                                                          +-> tar parse + extract + tar-split
//   memory input (a buffer): no reader thread; the decompressor hashes and inflates the
//   memory; uncompressed, the hash and the parser each walk the memory.
//
// A regular file is read(2) into the pooled blocks, never mapped: a file truncated under
// us is an ArchiveError, not SIGBUS. A pipe or socket is polled together with an eventfd,
// so a failure anywhere returns promptly even while the writer keeps the pipe open and
// silent; a partial block is passed on when the pipe goes quiet.
//
// For uncompressed input one hash serves as both digests. Small files are created and
// written by the extractor's write-behind thread (extract/file_writer.h). The reader and
// the tar hash run at a lower priority than the decompressor and the extractor. gzip and
// zstd decompress straight into the queue's blocks; the blocks come from one mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "compress/byte_io.h"
#include "compress/compression.h"
#include "extract/extractor.h"

namespace layerstore {

struct ApplyOptions {
  ExtractOptions extract;
  // "sha256:<hex>" the caller vouches for: the input is then not hashed (Go's
  // OriginalDigest). Anything else is ignored and the input is hashed.
  std::string trusted_compressed_digest;
  size_t block_size = 1 << 20;
  size_t queue_blocks = 4;
  // Hash the decompressed stream on its own thread (true) or on the decompressor's.
  bool hash_thread = true;
};

struct ApplyResult {
  Compression compression = Compression::kNone;
  std::string compressed_digest;  // "sha256:<hex>"
  uint64_t compressed_size = 0;
  std::string uncompressed_digest;
  uint64_t uncompressed_size = 0;
  std::vector<uint32_t> uid_set;  // sorted, ids as in the tar headers (before mapping)
  std::vector<uint32_t> gid_set;
  int64_t size = 0;  // sum of the headers' sizes (the vfs driver's return value)
};

// Streams `input`; the tar-split gzip stream goes to tarsplit_gz_out (not closed).
// Throws ArchiveError on bad input, PathError / std::system_error on system errors; the
// layer directory is then half-made and the caller deletes it. A read blocked in `input`
// is not interrupted by a failure elsewhere (apply_layer_fd does that for fds).
ApplyResult apply_layer(ByteSource& input, int root_dirfd, const ApplyOptions& options,
                        ByteSink& tarsplit_gz_out);

// The same from a file descriptor (not closed), read from its current offset and left at
// the end of what was read. A regular file that ends before the size it had at the start
// (truncated while we read) is an ArchiveError.
ApplyResult apply_layer_fd(int fd, int root_dirfd, const ApplyOptions& options,
                           ByteSink& tarsplit_gz_out);

// The same over memory the caller keeps alive for the call (read without copying).
ApplyResult apply_layer(const uint8_t* data, size_t n, int root_dirfd,
                        const ApplyOptions& options, ByteSink& tarsplit_gz_out);

}  // namespace layerstore
