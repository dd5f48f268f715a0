// Output compression: pigz-style parallel gzip on ISA-L and multi-threaded zstd.
//
// gzip: the input is cut into fixed 128 KiB blocks (independent of write sizes and thread
// count); each block is deflated by a worker with the previous 32 KiB as dictionary and
// ends with a sync flush (the last one with the final block), so concatenating the blocks
// gives one valid deflate stream. The caller's thread keeps order and writes.
#include "compress/compress.h"

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tar/errors.h"

namespace layerstore {

namespace {

constexpr size_t kBlock = 128 * 1024;
constexpr size_t kDict = 32 * 1024;

class PassThroughSink final : public ByteSink {
 public:
  explicit PassThroughSink(ByteSink& out) : out_(out) {}
  void write(const uint8_t* p, size_t n) override { out_.write(p, n); }
  void close() override { out_.close(); }

 private:
  ByteSink& out_;
};

struct GzJob {
  std::vector<uint8_t> data;  // dict (dict_len bytes) followed by the block
  size_t dict_len = 0;
  bool last = false;
  std::vector<uint8_t> out;
  uint32_t crc = 0;
  size_t len = 0;
  bool done = false;
  std::string error;
};

int isal_level(int level) {
  if (level < 0) return 1;
  if (level <= 1) return level;
  if (level <= 5) return 2;
  return 3;
}

size_t level_buf_size(int lvl) {
  switch (lvl) {
    case 0:
      return ISAL_DEF_LVL0_DEFAULT;
    case 1:
      return ISAL_DEF_LVL1_DEFAULT;
    case 2:
      return ISAL_DEF_LVL2_DEFAULT;
    default:
      return ISAL_DEF_LVL3_DEFAULT;
  }
}

class ParallelGzipSink final : public ByteSink {
 public:
  ParallelGzipSink(ByteSink& out, int level, int threads)
      : out_(out), level_(isal_level(level)) {
    unsigned n = threads > 0 ? static_cast<unsigned>(threads) : std::thread::hardware_concurrency();
    if (n == 0) n = 1;
    if (n > 64) n = 64;
    max_inflight_ = 2 * n + 2;
    cur_ = new_job();
    // The header goes out before any thread exists, so a failing sink cannot strand them.
    static const uint8_t kHeader[10] = {0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff};
    out_.write(kHeader, sizeof kHeader);
    for (unsigned i = 0; i < n; ++i) workers_.emplace_back([this] { work(); });
  }

  ~ParallelGzipSink() override { stop(); }

  void write(const uint8_t* p, size_t n) override {
    while (n > 0) {
      size_t room = cur_->dict_len + kBlock - cur_->data.size();
      size_t k = std::min(room, n);
      cur_->data.insert(cur_->data.end(), p, p + k);
      p += k;
      n -= k;
      if (cur_->data.size() == cur_->dict_len + kBlock) submit(false);
    }
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    submit(true);
    while (!order_.empty()) emit_front(true);
    uint8_t trailer[8];
    for (int i = 0; i < 4; ++i) trailer[i] = static_cast<uint8_t>(crc_ >> (8 * i));
    for (int i = 0; i < 4; ++i) trailer[4 + i] = static_cast<uint8_t>(total_ >> (8 * i));
    out_.write(trailer, sizeof trailer);
    stop();
    out_.close();
  }

 private:
  std::shared_ptr<GzJob> new_job() {
    std::shared_ptr<GzJob> j;
    if (!free_.empty()) {
      j = std::move(free_.back());
      free_.pop_back();
      j->data.clear();
      j->out.clear();
      j->done = false;
      j->last = false;
      j->error.clear();
    } else {
      j = std::make_shared<GzJob>();
      j->data.reserve(kDict + kBlock);
    }
    return j;
  }

  void submit(bool last) {
    std::shared_ptr<GzJob> job = cur_;
    job->last = last;
    job->len = job->data.size() - job->dict_len;
    std::shared_ptr<GzJob> next = new_job();
    size_t d = std::min(kDict, job->len);
    if (!last) {
      next->data.insert(next->data.end(), job->data.end() - static_cast<std::ptrdiff_t>(d),
                        job->data.end());
      next->dict_len = d;
    }
    cur_ = next;
    {
      std::lock_guard<std::mutex> g(mu_);
      queue_.push_back(job);
      order_.push_back(job);
    }
    cv_work_.notify_one();
    // Write out finished blocks; bound the memory in flight.
    while (!order_.empty() && (order_.size() > max_inflight_ || front_done())) emit_front(true);
  }

  bool front_done() {
    std::lock_guard<std::mutex> g(mu_);
    return order_.front()->done;
  }

  void emit_front(bool wait) {
    std::shared_ptr<GzJob> j = order_.front();
    {
      std::unique_lock<std::mutex> g(mu_);
      if (!j->done) {
        if (!wait) return;
        cv_done_.wait(g, [&] { return j->done; });
      }
      order_.pop_front();
    }
    if (!j->error.empty()) throw ArchiveError(j->error);
    crc_ = static_cast<uint32_t>(crc32_combine(crc_, j->crc, static_cast<z_off_t>(j->len)));
    total_ += j->len;
    out_.write(j->out.data(), j->out.size());
    if (free_.size() < max_inflight_ + 2) free_.push_back(std::move(j));
  }

  void work() {
    std::vector<uint8_t> level_buf(level_buf_size(level_));
    isal_zstream zs;
    for (;;) {
      std::shared_ptr<GzJob> j;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_work_.wait(g, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        j = queue_.front();
        queue_.pop_front();
      }
      try {
        compress_block(zs, level_buf, *j);
      } catch (const std::exception& e) {
        j->error = e.what();
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        j->done = true;
      }
      cv_done_.notify_all();
    }
  }

  void compress_block(isal_zstream& zs, std::vector<uint8_t>& level_buf, GzJob& j) {
    uint8_t* block = j.data.data() + j.dict_len;
    j.crc = crc32_gzip_refl(0, block, j.len);
    isal_deflate_init(&zs);
    zs.level = static_cast<uint32_t>(level_);
    zs.level_buf = level_buf.data();
    zs.level_buf_size = static_cast<uint32_t>(level_buf.size());
    zs.gzip_flag = IGZIP_DEFLATE;
    zs.end_of_stream = j.last ? 1 : 0;
    zs.flush = j.last ? NO_FLUSH : SYNC_FLUSH;
    if (j.dict_len && isal_deflate_set_dict(&zs, j.data.data(), static_cast<uint32_t>(j.dict_len)))
      throw ArchiveError("gzip: cannot set deflate dictionary");
    j.out.resize(j.len + j.len / 8 + 1024);
    zs.next_in = block;
    zs.avail_in = static_cast<uint32_t>(j.len);
    zs.next_out = j.out.data();
    zs.avail_out = static_cast<uint32_t>(j.out.size());
    for (;;) {
      int r = isal_deflate(&zs);
      if (r != COMP_OK) throw ArchiveError("gzip: deflate failed (" + std::to_string(r) + ")");
      bool complete = zs.avail_in == 0 && (j.last ? zs.internal_state.state == ZSTATE_END
                                                  : zs.avail_out > 0);
      if (complete) break;
      size_t used = j.out.size() - zs.avail_out;
      j.out.resize(j.out.size() * 2);
      zs.next_out = j.out.data() + used;
      zs.avail_out = static_cast<uint32_t>(j.out.size() - used);
    }
    j.out.resize(j.out.size() - zs.avail_out);
  }

  void stop() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopping_ = true;
      queue_.clear();
    }
    cv_work_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  ByteSink& out_;
  int level_;
  size_t max_inflight_ = 4;
  std::shared_ptr<GzJob> cur_;
  std::vector<std::shared_ptr<GzJob>> free_;
  std::deque<std::shared_ptr<GzJob>> order_;  // submitted, in stream order (caller thread)
  std::deque<std::shared_ptr<GzJob>> queue_;  // waiting for a worker
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
  bool closed_ = false;
  uint32_t crc_ = 0;
  uint64_t total_ = 0;
};

class ZstdSink final : public ByteSink {
 public:
  ZstdSink(ByteSink& out, int level, int threads)
      : out_(out), cctx_(ZSTD_createCCtx()), buf_(ZSTD_CStreamOutSize() * 4) {
    unsigned n = threads > 0 ? static_cast<unsigned>(threads) : std::thread::hardware_concurrency();
    if (n == 0) n = 1;
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level < 0 ? 3 : level);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_nbWorkers, static_cast<int>(n));
  }
  ~ZstdSink() override { ZSTD_freeCCtx(cctx_); }

  void write(const uint8_t* p, size_t n) override { run(p, n, ZSTD_e_continue); }
  void close() override {
    if (closed_) return;
    closed_ = true;
    run(nullptr, 0, ZSTD_e_end);
    out_.close();
  }

 private:
  void run(const uint8_t* p, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer ib{p, n, 0};
    for (;;) {
      ZSTD_outBuffer ob{buf_.data(), buf_.size(), 0};
      size_t r = ZSTD_compressStream2(cctx_, &ob, &ib, mode);
      if (ZSTD_isError(r)) throw ArchiveError(std::string("zstd: ") + ZSTD_getErrorName(r));
      if (ob.pos) out_.write(buf_.data(), ob.pos);
      if (mode == ZSTD_e_end ? r == 0 : ib.pos == ib.size) break;
    }
  }
  ByteSink& out_;
  ZSTD_CCtx* cctx_;
  std::vector<uint8_t> buf_;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<ByteSink> make_compressing_sink(Compression c, ByteSink& out, int level,
                                                int threads) {
  switch (c) {
    case Compression::kNone:
      return std::make_unique<PassThroughSink>(out);
    case Compression::kGzip:
      return std::make_unique<ParallelGzipSink>(out, level, threads);
    case Compression::kZstd:
      return std::make_unique<ZstdSink>(out, level, threads);
    default:
      throw ArchiveError(std::string("unsupported compression format ") +
                         compression_extension(c));
  }
}

}  // namespace layerstore
