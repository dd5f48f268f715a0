// Applying a layer tarball in one streaming pass (containers/storage's
// applyDiffWithOptions + the driver's ApplyDiff, SPEC §6.1): detect the compression from
// the first 10240 bytes, hash and count the input, decompress, hash and count the tar,
// disassemble it into tar-split entries, extract every entry into the layer directory,
// and collect what the layer record needs. The stages run on threads joined by bounded
// queues of 1 MiB blocks (wake-ups batched, see block_queue.h):
//
//   stream input:  reader + input SHA-256 -> decompressor -+-> tar SHA-256
//                                                          +-> tar parse + extract + tar-split
//   memory input (a buffer, or a regular file, memory-mapped): no reader thread; the
//   decompressor hashes and inflates the memory; uncompressed, the hash and the parser
//   each walk the memory (the hash at most 16 MiB ahead), and consumed pages of a mapped
//   file are dropped from RSS.
//
// For uncompressed input one hash serves as both digests. Small files are written by the
// extractor's write-behind thread (extract/file_writer.h).
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
// layer directory is then half-made and the caller deletes it.
ApplyResult apply_layer(ByteSource& input, int root_dirfd, const ApplyOptions& options,
                        ByteSink& tarsplit_gz_out);

// The same from a file descriptor (not closed), read from its current offset: a regular
// file is memory-mapped (no copy into the pipeline) and left positioned at its end; a pipe
// or socket is read in blocks.
ApplyResult apply_layer_fd(int fd, int root_dirfd, const ApplyOptions& options,
                           ByteSink& tarsplit_gz_out);

// The same over memory the caller keeps alive for the call (read without copying).
ApplyResult apply_layer(const uint8_t* data, size_t n, int root_dirfd,
                        const ApplyOptions& options, ByteSink& tarsplit_gz_out);

}  // namespace layerstore
