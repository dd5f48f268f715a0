// Writes a tar-split stream: gzip (ISA-L level 1) of NDJSON entries exactly as Go's
// encoding/json Encoder writes tar-split's storage.Entry (SPEC §5.2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>

#include "compress/byte_io.h"
#include "tar/errors.h"

namespace layerstore {

class TarSplitPacker {
 public:
  // gz_out receives the gzip stream; it is not closed by finish().
  explicit TarSplitPacker(ByteSink& gz_out);
  ~TarSplitPacker();
  // A raw segment {"type":2,"payload":"<base64>","position":N}; empty n is allowed.
  void add_segment(const uint8_t* p, size_t n);
  // A file entry {"type":1,"name"|"name_raw":...,"size":N,"payload":<crc|null>,"position":N}.
  // A second entry with the same filepath.Clean(name) -> ArchiveError("duplicates of file
  // paths not supported").
  void add_file(const std::string& raw_name, int64_t size, bool has_crc, uint64_t crc);
  // The duplicate check of add_file, done early (the disassembler calls it when a header is
  // read, before the entry's data is extracted); add_file of the same name skips it.
  void claim_name(const std::string& raw_name);
  // Flushes and ends the gzip stream.
  void finish();
  int64_t entries() const { return position_; }

 private:
  void flush_json(bool final_block);
  ByteSink& out_;
  std::string json_;
  int64_t position_ = 0;
  std::unordered_set<std::string> seen_;
  std::string claimed_;
  bool has_claim_ = false;
  struct Deflater;
  std::unique_ptr<Deflater> deflater_;
  bool finished_ = false;
};

}  // namespace layerstore
