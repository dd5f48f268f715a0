#include "tarsplit/packer.h"

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>

#include <vector>

#include "tar/clean_path.h"
#include "tarsplit/json_util.h"

namespace layerstore {

namespace {
constexpr size_t kFlushAt = 256 * 1024;
}

// Streaming ISA-L level-1 deflate with c/storage's (pgzip's) gzip header.
struct TarSplitPacker::Deflater {
  isal_zstream zs;
  std::vector<uint8_t> level_buf = std::vector<uint8_t>(ISAL_DEF_LVL1_DEFAULT);
  std::vector<uint8_t> out = std::vector<uint8_t>(kFlushAt + kFlushAt / 2 + 4096);
  uint32_t crc = 0;
  uint64_t total = 0;

  Deflater() {
    isal_deflate_init(&zs);
    zs.level = 1;
    zs.level_buf = level_buf.data();
    zs.level_buf_size = static_cast<uint32_t>(level_buf.size());
    zs.gzip_flag = IGZIP_DEFLATE;
    zs.flush = NO_FLUSH;
  }

  void run(const uint8_t* p, size_t n, bool last, ByteSink& sink) {
    crc = crc32_gzip_refl(crc, p, n);
    total += n;
    zs.next_in = const_cast<uint8_t*>(p);
    zs.avail_in = static_cast<uint32_t>(n);
    zs.end_of_stream = last ? 1 : 0;
    for (;;) {
      zs.next_out = out.data();
      zs.avail_out = static_cast<uint32_t>(out.size());
      int r = isal_deflate(&zs);
      if (r != COMP_OK) throw ArchiveError("tar-split: deflate failed");
      size_t produced = out.size() - zs.avail_out;
      if (produced) sink.write(out.data(), produced);
      if (zs.avail_in == 0 && (last ? zs.internal_state.state == ZSTATE_END : zs.avail_out > 0))
        break;
    }
  }
};

TarSplitPacker::TarSplitPacker(ByteSink& gz_out) : out_(gz_out), deflater_(new Deflater) {
  static const uint8_t kHeader[10] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x04, 0xff};
  out_.write(kHeader, sizeof kHeader);
  json_.reserve(kFlushAt + 8192);
}

TarSplitPacker::~TarSplitPacker() = default;

void TarSplitPacker::add_segment(const uint8_t* p, size_t n) {
  json_ += "{\"type\":2,\"payload\":\"";
  tarsplit::base64_encode(p, n, json_);
  json_ += "\",\"position\":";
  json_ += std::to_string(position_++);
  json_ += "}\n";
  if (json_.size() >= kFlushAt) flush_json(false);
}

void TarSplitPacker::claim_name(const std::string& raw_name) {
  std::string c = clean_path(raw_name);
  if (!seen_.insert(c).second) throw ArchiveError("duplicates of file paths not supported");
  claimed_ = raw_name;
  has_claim_ = true;
}

void TarSplitPacker::add_file(const std::string& raw_name, int64_t size, bool has_crc,
                              uint64_t crc) {
  if (!(has_claim_ && claimed_ == raw_name)) claim_name(raw_name);
  has_claim_ = false;
  json_ += "{\"type\":1,";
  if (!raw_name.empty()) {
    if (tarsplit::valid_utf8(raw_name)) {
      json_ += "\"name\":";
      tarsplit::json_quote(raw_name, json_);
    } else {
      json_ += "\"name_raw\":\"";
      tarsplit::base64_encode(reinterpret_cast<const uint8_t*>(raw_name.data()), raw_name.size(),
                              json_);
      json_ += "\"";
    }
    json_ += ",";
  }
  if (size != 0) {
    json_ += "\"size\":";
    json_ += std::to_string(size);
    json_ += ",";
  }
  if (has_crc) {
    uint8_t be[8];
    for (int i = 0; i < 8; ++i) be[i] = static_cast<uint8_t>(crc >> (56 - 8 * i));
    json_ += "\"payload\":\"";
    tarsplit::base64_encode(be, 8, json_);
    json_ += "\",";
  } else {
    json_ += "\"payload\":null,";
  }
  json_ += "\"position\":";
  json_ += std::to_string(position_++);
  json_ += "}\n";
  if (json_.size() >= kFlushAt) flush_json(false);
}

void TarSplitPacker::flush_json(bool final_block) {
  deflater_->run(reinterpret_cast<const uint8_t*>(json_.data()), json_.size(), final_block, out_);
  json_.clear();
}

void TarSplitPacker::finish() {
  if (finished_) return;
  finished_ = true;
  flush_json(true);
  uint8_t trailer[8];
  for (int i = 0; i < 4; ++i) trailer[i] = static_cast<uint8_t>(deflater_->crc >> (8 * i));
  for (int i = 0; i < 4; ++i) trailer[4 + i] = static_cast<uint8_t>(deflater_->total >> (8 * i));
  out_.write(trailer, sizeof trailer);
}

}  // namespace layerstore
