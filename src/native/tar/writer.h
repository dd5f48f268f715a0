// A tar writer that lays out headers exactly as Go's archive/tar Writer does for a Header
// whose Format is unknown (what containers/storage's tarAppender hands it):
//   - ModTime rounded to the second, AccessTime/ChangeTime dropped;
//   - typeflag '\0' promoted to '0' (or '5' for a name ending in '/');
//   - USTAR when every field fits (long paths split into prefix/name where possible);
//   - otherwise PAX: one 'x' header named "<dir>/PaxHeaders.0/<base>" holding the sorted
//     records (path, linkpath, uname, gname, uid, gid, size, mtime, SCHILY.xattr.*), then a
//     main header with ASCII-only, truncated strings and zero for numbers that do not fit;
//   - xattrs always force PAX;
//   - close() writes two zero blocks and no further record padding.
// A header Go's writer refuses (mode/device numbers only GNU could hold, a file type with a
// trailing slash in its name, negative size) is skipped, as tarAppender logs and skips it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "compress/byte_io.h"
#include "tar/header.h"

namespace layerstore {

class TarWriter {
 public:
  // `out` is not owned; close() does not close it.
  explicit TarWriter(ByteSink& out);
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  // Writes the header of the next entry. `h.mode` is written as given (tarAppender passes
  // the file-type bits too, e.g. 0100644). Returns false, writing nothing, for a header
  // Go's writer would refuse. Pads the previous entry's data first.
  bool write_header(const TarHeader& h);
  // Data of the current entry; anything past its size is dropped.
  void write_data(const uint8_t* p, size_t n);
  // Data bytes the current entry still expects.
  int64_t remaining() const { return remaining_; }
  // Pads the last entry (zero-filling any data it still expects), writes the two zero
  // end blocks and flushes. Idempotent.
  void close();
  // Bytes handed to the sink so far (after close(): the whole archive).
  uint64_t bytes_written() const { return written_; }

 private:
  void finish_entry();
  void put(const uint8_t* p, size_t n);
  void put_zeros(size_t n);
  void flush();

  ByteSink& out_;
  std::vector<uint8_t> buf_;
  size_t used_ = 0;
  int64_t remaining_ = 0;
  size_t pad_ = 0;
  uint64_t written_ = 0;
  bool closed_ = false;
};

// Go's formatPAXRecord: "<len> <key>=<value>\n".
std::string format_pax_record(const std::string& key, const std::string& value);

}  // namespace layerstore
