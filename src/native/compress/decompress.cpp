// Decompressors behind one push interface. Error texts follow Go's readers so that the
// Python layer shows what the Go store would.
#include "compress/decompress.h"

#include <bzlib.h>
#include <isa-l/igzip_lib.h>
#include <lzma.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "tar/errors.h"

namespace layerstore {

Decompressor::~Decompressor() = default;

namespace {

constexpr size_t kOutChunk = 256 * 1024;

class PassThrough final : public Decompressor {
 public:
  size_t feed_some(const uint8_t* in, size_t n, ByteSink& out, size_t) override {
    if (n) out.write(in, n);
    return n;
  }
  void finish(ByteSink&) override {}
};

// gzip, possibly multi-member (Go's gzip.Reader is multistream by default).
class GzipDecompressor final : public Decompressor {
 public:
  GzipDecompressor() : state_(new inflate_state), out_(kOutChunk) {}

  size_t feed_some(const uint8_t* in, size_t n, ByteSink& out, size_t max_out) override {
    const size_t total = n;
    budget_ = max_out;
    produced_ = 0;
    while (n > 0 && produced_ < budget_) {
      if (!in_member_) {
        // Between members: need the 10 header bytes to decide (Go reads exactly 10).
        size_t take = std::min(n, size_t{10} - pending_.size());
        pending_.append(reinterpret_cast<const char*>(in), take);
        in += take;
        n -= take;
        if (pending_.size() < 10) return total - n;
        start_member();
        std::string hdr;
        hdr.swap(pending_);
        run(reinterpret_cast<const uint8_t*>(hdr.data()), hdr.size(), out, false);
        continue;
      }
      size_t chunk = std::min(n, size_t{1} << 30);
      size_t used = run(in, chunk, out, true);
      in += used;
      n -= used;
    }
    return total - n;
  }

  void finish(ByteSink& out) override {
    if (in_member_) {
      // Push out anything ISA-L still holds.
      run(nullptr, 0, out, false);
      if (in_member_) throw ArchiveError("unexpected EOF");
    }
    if (!pending_.empty() || !seen_member_) throw ArchiveError("unexpected EOF");
  }

 private:
  void start_member() {
    if (static_cast<uint8_t>(pending_[0]) != 0x1f || static_cast<uint8_t>(pending_[1]) != 0x8b ||
        static_cast<uint8_t>(pending_[2]) != 0x08)
      throw ArchiveError("gzip: invalid header");
    isal_inflate_init(state_.get());
    state_->crc_flag = ISAL_GZIP;
    in_member_ = true;
    seen_member_ = true;
  }

  // Inflates from `in` until the member ends or the input is used up (or, if may_stop, the
  // output budget is spent); returns bytes used. ISA-L keeps the window it needs in its own
  // state, so the output may go anywhere.
  size_t run(const uint8_t* in, size_t n, ByteSink& out, bool may_stop) {
    inflate_state* s = state_.get();
    SpanSink* span = dynamic_cast<SpanSink*>(&out);
    s->next_in = const_cast<uint8_t*>(in);
    s->avail_in = static_cast<uint32_t>(n);
    for (;;) {
      size_t room = out_.size();
      uint8_t* dst = span != nullptr ? span->space(&room) : out_.data();
      room = std::min(room, size_t{1} << 30);
      s->next_out = dst;
      s->avail_out = static_cast<uint32_t>(room);
      int ret = isal_inflate(s);
      size_t produced = room - s->avail_out;
      if (produced) {
        if (span != nullptr)
          span->commit(produced);
        else
          out.write(dst, produced);
      }
      if (ret < 0) fail(ret, n - s->avail_in);
      produced_ += produced;
      if (s->block_state == ISAL_BLOCK_FINISH ||
          (may_stop && produced_ >= budget_ && s->avail_in > 0)) {
        if (s->block_state == ISAL_BLOCK_FINISH) in_member_ = false;
        size_t used = n - s->avail_in;
        consumed_ += used;
        return used;
      }
      if (s->avail_in == 0 && produced < room) break;
    }
    consumed_ += n;
    return n;
  }

  [[noreturn]] void fail(int ret, size_t used) {
    switch (ret) {
      case ISAL_INVALID_WRAPPER:
      case ISAL_UNSUPPORTED_METHOD:
        throw ArchiveError("gzip: invalid header");
      case ISAL_INCORRECT_CHECKSUM:
        throw ArchiveError("gzip: invalid checksum");
      default:
        throw ArchiveError("flate: corrupt input before offset " +
                           std::to_string(consumed_ + used));
    }
  }

  std::unique_ptr<inflate_state> state_;
  std::vector<uint8_t> out_;
  std::string pending_;
  bool in_member_ = false;
  bool seen_member_ = false;
  uint64_t consumed_ = 0;
  size_t budget_ = SIZE_MAX;  // feed_some's max_out, and the bytes it has put out so far
  size_t produced_ = 0;
};

class ZstdDecompressor final : public Decompressor {
 public:
  ZstdDecompressor() : ds_(ZSTD_createDStream()), out_(ZSTD_DStreamOutSize() * 2) {
    // Go's zstd reader refuses frames that need a window over 512 MiB ("window size
    // exceeded"); so do we, and so a few bytes of header cannot make us allocate 1 GiB+.
    ZSTD_DCtx_setParameter(ds_, ZSTD_d_windowLogMax, 29);
  }
  ~ZstdDecompressor() override { ZSTD_freeDStream(ds_); }

  size_t feed_some(const uint8_t* in, size_t n, ByteSink& out, size_t max_out) override {
    if (n == 0) return 0;
    SpanSink* span = dynamic_cast<SpanSink*>(&out);
    ZSTD_inBuffer ib{in, n, 0};
    size_t produced = 0;
    for (;;) {
      size_t room = out_.size();
      uint8_t* dst = span != nullptr ? span->space(&room) : out_.data();
      ZSTD_outBuffer ob{dst, room, 0};
      const size_t in_before = ib.pos;
      size_t r = ZSTD_decompressStream(ds_, &ob, &ib);
      if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge)
          throw ArchiveError("window size exceeded");  // Go's text
        throw ArchiveError(std::string("zstd: ") + ZSTD_getErrorName(r));
      }
      if (ob.pos) {
        if (span != nullptr)
          span->commit(ob.pos);
        else
          out.write(dst, ob.pos);
      }
      // A call that did nothing (the frame ended exactly at the end of the last output
      // buffer) hints at the next frame's header: the frame is still complete.
      if (ob.pos > 0 || ib.pos > in_before) last_ = r;
      any_ = true;
      produced += ob.pos;
      if (ib.pos == ib.size && ob.pos < ob.size) break;
      if (produced >= max_out && ib.pos < ib.size) break;
    }
    return ib.pos;
  }
  void finish(ByteSink&) override {
    // feed() drains all output it can; a frame is complete when the last call returned 0.
    if (!any_ || last_ != 0) throw ArchiveError("unexpected EOF");
  }

 private:
  ZSTD_DStream* ds_;
  std::vector<uint8_t> out_;
  size_t last_ = 1;
  bool any_ = false;
};

class Bzip2Decompressor final : public Decompressor {
 public:
  Bzip2Decompressor() : out_(kOutChunk) { init(); }
  ~Bzip2Decompressor() override { BZ2_bzDecompressEnd(&s_); }

  size_t feed_some(const uint8_t* in, size_t n, ByteSink& out, size_t max_out) override {
    const size_t total = n;
    size_t produced_all = 0;
    while (n > 0 && produced_all < max_out) {
      if (ended_) {  // another concatenated stream follows
        BZ2_bzDecompressEnd(&s_);
        init();
      }
      size_t chunk = std::min(n, size_t{1} << 30);
      s_.next_in = reinterpret_cast<char*>(const_cast<uint8_t*>(in));
      s_.avail_in = static_cast<unsigned>(chunk);
      for (;;) {
        s_.next_out = reinterpret_cast<char*>(out_.data());
        s_.avail_out = static_cast<unsigned>(out_.size());
        int r = BZ2_bzDecompress(&s_);
        size_t produced = out_.size() - s_.avail_out;
        if (produced) out.write(out_.data(), produced);
        produced_all += produced;
        if (r == BZ_STREAM_END) {
          ended_ = true;
          break;
        }
        if (r != BZ_OK) throw ArchiveError("bzip2 data invalid: error " + std::to_string(r));
        if (s_.avail_in == 0 && produced < out_.size()) break;
        if (produced_all >= max_out && s_.avail_in > 0) break;
      }
      size_t used = chunk - s_.avail_in;
      in += used;
      n -= used;
    }
    return total - n;
  }
  void finish(ByteSink&) override {
    if (!ended_) throw ArchiveError("unexpected EOF");
  }

 private:
  void init() {
    std::memset(&s_, 0, sizeof(s_));
    if (BZ2_bzDecompressInit(&s_, 0, 0) != BZ_OK) throw ArchiveError("bzip2: cannot initialise");
    ended_ = false;
  }
  bz_stream s_;
  std::vector<uint8_t> out_;
  bool ended_ = false;
};

class XzDecompressor final : public Decompressor {
 public:
  XzDecompressor() : out_(kOutChunk) {
    if (lzma_stream_decoder(&s_, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK)
      throw ArchiveError("xz: cannot initialise decoder");
  }
  ~XzDecompressor() override { lzma_end(&s_); }

  size_t feed_some(const uint8_t* in, size_t n, ByteSink& out, size_t max_out) override {
    run(in, n, LZMA_RUN, out, max_out);
    return n - s_.avail_in;
  }
  void finish(ByteSink& out) override {
    if (run(nullptr, 0, LZMA_FINISH, out, SIZE_MAX) != LZMA_STREAM_END)
      throw ArchiveError("unexpected EOF");
  }

 private:
  lzma_ret run(const uint8_t* in, size_t n, lzma_action action, ByteSink& out, size_t max_out) {
    s_.next_in = in;
    s_.avail_in = n;
    size_t produced_all = 0;
    for (;;) {
      s_.next_out = out_.data();
      s_.avail_out = out_.size();
      lzma_ret r = lzma_code(&s_, action);
      size_t produced = out_.size() - s_.avail_out;
      if (produced) out.write(out_.data(), produced);
      if (r == LZMA_STREAM_END) return r;
      if (r == LZMA_BUF_ERROR && action == LZMA_FINISH) return r;
      if (r != LZMA_OK)
        throw ArchiveError("xz: corrupt input (lzma error " + std::to_string(r) + ")");
      if (s_.avail_in == 0 && produced < out_.size()) return r;
      produced_all += produced;
      if (produced_all >= max_out && s_.avail_in > 0) return r;
    }
  }
  lzma_stream s_ = LZMA_STREAM_INIT;
  std::vector<uint8_t> out_;
};

// Collects decompressed bytes for the pull adapter.
class BufferSink final : public ByteSink {
 public:
  void write(const uint8_t* p, size_t n) override { buf.insert(buf.end(), p, p + n); }
  std::vector<uint8_t> buf;
};

}  // namespace

std::unique_ptr<Decompressor> Decompressor::create(Compression c) {
  switch (c) {
    case Compression::kGzip:
      return std::make_unique<GzipDecompressor>();
    case Compression::kZstd:
      return std::make_unique<ZstdDecompressor>();
    case Compression::kBzip2:
      return std::make_unique<Bzip2Decompressor>();
    case Compression::kXz:
      return std::make_unique<XzDecompressor>();
    default:
      return std::make_unique<PassThrough>();
  }
}

// Output the pull adapter holds at once: feed_some() stops there (plus one block).
constexpr size_t kMaxPending = 1 << 20;

struct DecompressingSource::Impl {
  std::unique_ptr<Decompressor> dec;
  std::vector<uint8_t> in;
  size_t in_pos = 0;  // in[in_pos, in_len) is yet to be fed
  size_t in_len = 0;
  BufferSink out;
  size_t out_pos = 0;
  std::vector<uint8_t> head;  // bytes read for detection, not yet served / fed
  bool in_eof = false;
  bool finished = false;
};

DecompressingSource::DecompressingSource(ByteSource& in) : in_(in), impl_(new Impl) {
  impl_->head.resize(10240);
  size_t got = 0;
  while (got < 6) {  // the longest magic
    size_t r = in_.read(impl_->head.data() + got, impl_->head.size() - got);
    if (r == 0) {
      impl_->in_eof = true;
      break;
    }
    got += r;
  }
  impl_->head.resize(got);
  c_ = detect_compression(impl_->head.data(), got);
  impl_->dec = Decompressor::create(c_);
}

DecompressingSource::DecompressingSource(ByteSource& in, Compression c)
    : in_(in), c_(c), impl_(new Impl) {
  impl_->dec = Decompressor::create(c_);
}

DecompressingSource::~DecompressingSource() = default;

size_t DecompressingSource::read(uint8_t* buf, size_t n) {
  Impl& s = *impl_;
  if (n == 0) return 0;
  if (c_ == Compression::kNone) {
    if (!s.head.empty()) {
      size_t k = std::min(n, s.head.size());
      std::memcpy(buf, s.head.data(), k);
      s.head.erase(s.head.begin(), s.head.begin() + static_cast<std::ptrdiff_t>(k));
      return k;
    }
    return s.in_eof ? 0 : in_.read(buf, n);
  }
  for (;;) {
    if (s.out_pos < s.out.buf.size()) {
      size_t k = std::min(n, s.out.buf.size() - s.out_pos);
      std::memcpy(buf, s.out.buf.data() + s.out_pos, k);
      s.out_pos += k;
      return k;
    }
    s.out.buf.clear();
    s.out_pos = 0;
    if (s.finished) return 0;
    if (!s.head.empty()) {  // the bytes read for detection go first
      s.in.swap(s.head);
      s.in_pos = 0;
      s.in_len = s.in.size();
      s.head.clear();
      s.head.shrink_to_fit();
    }
    if (s.in_pos < s.in_len) {
      s.in_pos += s.dec->feed_some(s.in.data() + s.in_pos, s.in_len - s.in_pos, s.out,
                                   kMaxPending);
      continue;
    }
    if (s.in_eof) {
      s.dec->finish(s.out);
      s.finished = true;
      continue;
    }
    if (s.in.size() < 256 * 1024) s.in.resize(256 * 1024);
    s.in_pos = 0;
    s.in_len = in_.read(s.in.data(), s.in.size());
    if (s.in_len == 0) s.in_eof = true;
  }
}

}  // namespace layerstore
