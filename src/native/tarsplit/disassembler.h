// Tar reader that records tar-split entries while the caller consumes the tar: what the
// apply pipeline uses (tar-split's asm.NewInputTarStream).
#pragma once

#include <cstddef>
#include <cstdint>

#include "compress/byte_io.h"
#include "tar/header.h"
#include "tar/reader.h"
#include "tarsplit/packer.h"

namespace layerstore {

class Disassembler {
 public:
  Disassembler(ByteSource& tar, TarSplitPacker& packer);
  // Next entry: emits the raw segment before it and, once its data is consumed (here on
  // the next call or in finish()), the file entry with the CRC-64 of its data. Unread data
  // of the previous entry is read, CRC'd and skipped. False at the end of the archive.
  bool next(TarHeader& h);
  // Current entry's data, CRC'd.
  size_t read(uint8_t* buf, size_t n);
  // Zero-copy variant (see TarReader::read_view), CRC'd.
  size_t read_view(const uint8_t** p, size_t max);
  // After next() returned false (or to stop early: drains the rest): the end segment and
  // all trailing bytes, in <= 1 MiB segments (no trailing empty segment).
  void finish();
  uint64_t tar_bytes() const { return reader_.offset(); }

 private:
  void close_entry();
  TarReader reader_;
  TarSplitPacker& packer_;
  bool in_entry_ = false;
  std::string entry_name_;
  int64_t entry_size_ = 0;
  uint64_t crc_ = 0;
  bool ended_ = false;
  bool finished_ = false;
};

}  // namespace layerstore
