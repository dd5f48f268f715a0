#include "tarsplit/disassembler.h"

#include <algorithm>
#include <vector>

#include "digest/crc64.h"

namespace layerstore {

namespace {
constexpr size_t kPaddingChunk = 1 << 20;
}

Disassembler::Disassembler(ByteSource& tar, TarSplitPacker& packer)
    : reader_(tar), packer_(packer) {}

bool Disassembler::next(TarHeader& h) {
  if (in_entry_) close_entry();
  if (ended_) return false;
  if (!reader_.next(h)) {
    ended_ = true;
    return false;
  }
  std::string raw = reader_.take_raw();
  if (!raw.empty()) packer_.add_segment(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
  packer_.claim_name(h.name);
  in_entry_ = true;
  entry_name_ = h.name;
  entry_size_ = h.size;
  crc_ = 0;
  return true;
}

size_t Disassembler::read(uint8_t* buf, size_t n) {
  if (!in_entry_) return 0;
  size_t k = reader_.read(buf, n);
  crc_ = crc64_iso_update(crc_, buf, k);
  return k;
}

size_t Disassembler::read_view(const uint8_t** p, size_t max) {
  if (!in_entry_) return 0;
  size_t k = reader_.read_view(p, max);
  crc_ = crc64_iso_update(crc_, *p, k);
  return k;
}

void Disassembler::close_entry() {
  const uint8_t* p;
  while (read_view(&p, SIZE_MAX) > 0) {  // unread data still counts in the CRC
  }
  in_entry_ = false;
  packer_.add_file(entry_name_, entry_size_, entry_size_ > 0, crc_);
  std::string raw = reader_.take_raw();
  if (!raw.empty()) packer_.add_segment(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
}

void Disassembler::finish() {
  if (finished_) return;
  TarHeader h;
  while (next(h)) {
  }
  finished_ = true;
  std::string raw = reader_.take_raw();
  if (!raw.empty()) packer_.add_segment(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
  std::vector<uint8_t> chunk(kPaddingChunk);
  for (;;) {
    size_t got = 0;
    while (got < chunk.size()) {
      size_t r = reader_.read_rest(chunk.data() + got, chunk.size() - got);
      if (r == 0) break;
      got += r;
    }
    if (got == 0) break;
    packer_.add_segment(chunk.data(), got);
    if (got < chunk.size()) break;
  }
}

}  // namespace layerstore
