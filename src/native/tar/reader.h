// A tar reader with Go archive/tar semantics plus tar-split's raw accounting: every byte
// of the stream that is not file data is handed out by take_raw(), so that
// raw + file data == the stream, byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "compress/byte_io.h"
#include "tar/errors.h"
#include "tar/header.h"

namespace layerstore {

class TarReader {
 public:
  explicit TarReader(ByteSource& src);
  // Next entry; false at the end of the archive. Merges PAX (path, linkpath, size, uid,
  // gid, uname, gname, mtime/atime/ctime with sub-second, SCHILY.xattr.*), GNU L/K long
  // names; ustar prefix; base-256 numbers; '\0' -> '0' ('5' if the name ends in '/').
  // Unread data of the previous entry is skipped. Throws ArchiveError like Go
  // ("archive/tar: invalid tar header", "unexpected EOF").
  // Sparse entries are expanded as Go does: PAX GNU sparse 0.0/0.1/1.0 and old GNU 'S'
  // (which keeps its type 'S'). h.size is then the real size and name GNU.sparse.name;
  // read() gives holes as zeros. The 1.0 map (at the front of the data) is neither raw
  // nor data, 'S' extension blocks are raw: tar-split's accounting.
  bool next(TarHeader& h);
  // Current entry's data; 0 at its end. Throws ArchiveError("unexpected EOF") if short,
  // and Go's sparse errors if the stored data does not match the sparse map.
  size_t read(uint8_t* buf, size_t n);
  // Zero-copy read: points *p at up to `max` bytes of the current entry's data inside the
  // reader's buffer (valid until the next call on this reader); 0 at the entry's end.
  size_t read_view(const uint8_t** p, size_t max);
  // Bytes of the current entry's data not yet read (logical bytes for a sparse entry).
  int64_t remaining() const { return sparse_ ? sparse_size_ - sparse_pos_ : remaining_; }
  // True if the current entry is sparse (its data is expanded: not raw-accountable).
  bool sparse() const { return sparse_; }
  // Raw non-data bytes consumed since the last take (header blocks, extended headers and
  // their data, padding, end-of-archive zeros and anything after).
  std::string take_raw();
  // After next() returned false: consume every remaining byte of the stream into raw.
  void drain_to_eof();
  // After next() returned false: the bytes after the end of the archive, outside raw
  // accounting (tar-split stores them in <= 1 MiB segments). 0 at the end of the stream.
  size_t read_rest(uint8_t* buf, size_t n);
  // Total bytes consumed from the source so far.
  uint64_t offset() const { return offset_; }

 private:
  struct SparseEntry {
    int64_t offset;
    int64_t length;
  };
  size_t read_dense(uint8_t* buf, size_t n);
  size_t view_dense(const uint8_t** p, size_t max);
  // Sparse read: copies into buf, or (buf == nullptr) points *p at the bytes.
  size_t read_sparse(uint8_t* buf, const uint8_t** p, size_t n);
  void read_old_gnu_sparse_map(uint8_t* blk, TarHeader& h, std::vector<SparseEntry>& sp);
  void read_sparse_map_1x0(std::vector<SparseEntry>& sp);
  void start_sparse(const TarHeader& h, const std::vector<SparseEntry>& sp);
  size_t fill(size_t want);  // ensure `want` bytes buffered if possible; returns available
  void consume_raw(size_t n);
  void skip_data();
  bool skip_to_header();             // skip unread data + padding; false at clean EOF
  bool read_block(uint8_t* block);   // one 512-byte block into raw; false at clean EOF
  std::string read_special(int64_t size);  // extended header payload into raw

  ByteSource& src_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
  size_t end_ = 0;
  bool eof_ = false;
  std::string raw_;
  int64_t remaining_ = 0;  // data bytes of the current entry left
  int64_t pad_ = 0;        // padding bytes after the current entry's data
  uint64_t offset_ = 0;
  bool done_ = false;
  // Sparse entry state: the non-empty data fragments, the logical position and size.
  bool sparse_ = false;
  std::vector<SparseEntry> fragments_;
  size_t fragment_ = 0;
  int64_t sparse_pos_ = 0;
  int64_t sparse_size_ = 0;
};

}  // namespace layerstore
