#include "apply/apply.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "apply/block_queue.h"
#include "compress/decompress.h"
#include "digest/sha256.h"
#include "tar/errors.h"
#include "tarsplit/disassembler.h"
#include "tarsplit/packer.h"

namespace layerstore {

namespace {

constexpr size_t kDetectBytes = 10240;  // Go reads this much once to detect the format
constexpr size_t kMagicBytes = 6;       // the longest magic detect_compression looks at
constexpr int kQuietMs = 10;  // a pipe silent this long: pass on the partial block

// The reader and the tar hash only have to keep up (their queues make the decompressor
// wait when they fall behind); the decompressor, the extractor and its file writer are the
// chain every byte goes through. On two cores the chain should not give up half a core to
// them whenever all are runnable: these two threads run at a lower priority (lowering
// needs no privilege). Measured on the rootfs: -3% wall; on the writer too it cost the
// 50k-small-files import 5%. Other processes' commands also get in ahead of them.
constexpr int kBackgroundNice = 8;

void run_in_background() {
  const id_t tid = static_cast<id_t>(gettid());
  errno = 0;
  const int cur = getpriority(PRIO_PROCESS, tid);
  if (cur == -1 && errno != 0) return;
  setpriority(PRIO_PROCESS, tid, std::min(cur + kBackgroundNice, 19));
}

bool is_sha256_digest(const std::string& d) {
  if (d.size() != 7 + 64 || d.compare(0, 7, "sha256:") != 0) return false;
  return std::all_of(d.begin() + 7, d.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Go's path.Base: the last element, trailing slashes dropped; "" -> ".", "///" -> "/".
std::string go_path_base(const std::string& p) {
  if (p.empty()) return ".";
  size_t end = p.size();
  while (end > 0 && p[end - 1] == '/') --end;
  if (end == 0) return "/";
  size_t start = p.rfind('/', end - 1);
  start = start == std::string::npos ? 0 : start + 1;
  return p.substr(start, end - start);
}

// Where the pipeline's blocks come from.
class Input {
 public:
  virtual ~Input() = default;
  // The next block of up to `want` bytes, at least `min` unless the input ends; nullptr
  // at the end. Throws PipelineCancelled once cancel() was called.
  virtual BlockPtr next(BlockPool& pool, size_t want, size_t min) = 0;
  // The pipeline failed (called from any thread): a next() waiting for input returns.
  virtual void cancel() {}
};

// A ByteSource, read until each block is full. A blocked read is not interrupted.
class SourceInput : public Input {
 public:
  explicit SourceInput(ByteSource& src) : src_(src) {}
  BlockPtr next(BlockPool& pool, size_t want, size_t /*min*/) override {
    BlockPtr b = pool.get();
    size_t len = 0;
    while (len < want) {
      size_t r = src_.read(b->storage + len, want - len);
      if (r == 0) break;
      len += r;
    }
    if (len == 0) return nullptr;
    b->len = len;
    return b;
  }

 private:
  ByteSource& src_;
};

ArchiveError truncated_input(uint64_t got, uint64_t expected) {
  return ArchiveError("unexpected EOF: the input file was truncated to " + std::to_string(got) +
                      " of its " + std::to_string(expected) +
                      " bytes while it was being read");
}

// Asks the kernel to start reading a regular file's next window while we process this
// one: a file partly evicted from the page cache is then fetched in big asynchronous
// batches ahead of us, not one synchronous fault per hole.
class Readahead {
 public:
  Readahead(int fd, off_t start, uint64_t len) : fd_(fd), start_(start), len_(len) {}
  // We are at offset `at` (from start): keep the next window requested.
  void at(uint64_t at) {
    if (at + kWindow / 2 < advised_ || advised_ >= len_) return;
    const uint64_t from = std::max(advised_, at);
    const uint64_t n = std::min<uint64_t>(len_ - from, kWindow);
    posix_fadvise(fd_, start_ + static_cast<off_t>(from), static_cast<off_t>(n),
                  POSIX_FADV_WILLNEED);
    advised_ = from + n;
  }

 private:
  static constexpr uint64_t kWindow = 32u << 20;
  int fd_;
  off_t start_;
  uint64_t len_;
  uint64_t advised_ = 0;
};

// A regular file, read(2) into the blocks from its current offset. Not mapped: a file
// truncated while we read it is a short read and an ordinary error, never SIGBUS. The
// blocks come from the pool, so the input adds nothing to our RSS however big it is.
class FileInput : public Input {
 public:
  FileInput(int fd, off_t start, uint64_t expected)
      : fd_(fd), expected_(expected), readahead_(fd, start, expected) {}
  BlockPtr next(BlockPool& pool, size_t want, size_t /*min*/) override {
    readahead_.at(got_);
    BlockPtr b = pool.get();
    size_t len = 0;
    while (len < want) {
      ssize_t r = ::read(fd_, b->storage + len, want - len);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw std::system_error(errno, std::generic_category(), "read");
      }
      if (r == 0) {
        if (got_ + len < expected_) throw truncated_input(got_ + len, expected_);
        break;
      }
      len += static_cast<size_t>(r);
    }
    got_ += len;
    if (len == 0) return nullptr;
    b->len = len;
    return b;
  }

 private:
  int fd_;
  uint64_t expected_;  // bytes from the start offset to the end the file had at the start
  uint64_t got_ = 0;
  Readahead readahead_;
};

// A pipe, socket or device fd. Every read waits in poll() together with an eventfd that
// cancel() signals, so a failed pipeline returns at once even while the writer keeps the
// pipe open without writing. A block that has data when the input goes quiet for
// kQuietMs is passed on (marked idle) instead of waiting to be filled: whatever arrived
// is processed, and a bad header fails the call without more input.
class StreamFdInput : public Input {
 public:
  explicit StreamFdInput(int fd) : fd_(fd), cancel_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (cancel_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  ~StreamFdInput() override { close(cancel_fd_); }
  StreamFdInput(const StreamFdInput&) = delete;
  StreamFdInput& operator=(const StreamFdInput&) = delete;

  void cancel() override {
    const uint64_t one = 1;
    while (::write(cancel_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }
  BlockPtr next(BlockPool& pool, size_t want, size_t min) override {
    BlockPtr b = pool.get();
    size_t len = 0;
    while (len < want) {
      if (!wait_readable(len > 0 && len >= min ? kQuietMs : -1)) {
        b->idle = true;
        break;
      }
      ssize_t r = ::read(fd_, b->storage + len, want - len);
      if (r < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        throw std::system_error(errno, std::generic_category(), "read");
      }
      if (r == 0) break;
      len += static_cast<size_t>(r);
    }
    if (len == 0) return nullptr;
    b->len = len;
    return b;
  }

 private:
  // True when the fd is readable (or at its end / failed: read() tells); false after
  // timeout_ms (-1: no timeout). Throws PipelineCancelled once cancelled.
  bool wait_readable(int timeout_ms) {
    struct pollfd p[2] = {{fd_, POLLIN, 0}, {cancel_fd_, POLLIN, 0}};
    for (;;) {
      int r = poll(p, 2, timeout_ms);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw std::system_error(errno, std::generic_category(), "poll");
      }
      if (p[1].revents != 0) throw PipelineCancelled{};
      return r > 0;
    }
  }
  int fd_;
  int cancel_fd_;
};

// Decompressed bytes into blocks, each handed to every output queue (and an inline hash).
// The decompressor writes straight into the current block (SpanSink).
class BlockWriter : public SpanSink {
 public:
  BlockWriter(BlockPool& pool, std::vector<BlockQueue*> outs, Sha256* hash)
      : pool_(pool), outs_(std::move(outs)), hash_(hash) {}
  uint8_t* space(size_t* n) override {
    if (!cur_) cur_ = pool_.get();
    *n = pool_.block_size() - cur_->len;
    return cur_->storage + cur_->len;
  }
  void commit(size_t n) override {
    cur_->len += n;
    if (cur_->len == pool_.block_size()) flush();
  }
  void write(const uint8_t* p, size_t n) override {
    while (n > 0) {
      if (!cur_) cur_ = pool_.get();
      size_t k = std::min(n, pool_.block_size() - cur_->len);
      std::memcpy(cur_->storage + cur_->len, p, k);
      cur_->len += k;
      p += k;
      n -= k;
      if (cur_->len == pool_.block_size()) flush();
    }
  }
  void close() override { flush(); }
  // Passes on the partial block now, waking the consumers (its input went quiet).
  void flush_idle() { flush(true); }
  uint64_t count = 0;

 private:
  void flush(bool idle = false) {
    if (!cur_ || cur_->len == 0) return;
    cur_->idle = idle;
    count += cur_->len;
    if (hash_ != nullptr) hash_->update(cur_->data, cur_->len);
    for (BlockQueue* q : outs_) q->push(cur_);
    cur_.reset();
  }
  BlockPool& pool_;
  std::vector<BlockQueue*> outs_;
  Sha256* hash_;
  BlockPtr cur_;
};

// The tar stream for the parser, pulled from a queue.
class QueueSource : public ByteSource {
 public:
  explicit QueueSource(BlockQueue& q) : q_(q) {}
  size_t read(uint8_t* buf, size_t n) override {
    while (!cur_ || off_ == cur_->len) {
      cur_.reset();
      off_ = 0;
      if (eof_ || !q_.pop(&cur_)) {
        eof_ = true;
        return 0;
      }
    }
    size_t k = std::min(n, cur_->len - off_);
    std::memcpy(buf, cur_->data + off_, k);
    off_ += k;
    return k;
  }

 private:
  BlockQueue& q_;
  BlockPtr cur_;
  size_t off_ = 0;
  bool eof_ = false;
};

// Tar parse + tar-split + extraction + the uid/gid sets and size, on the calling thread.
void extract_stage(ByteSource& tar, int root_dirfd, const ApplyOptions& options,
                   ByteSink& tarsplit_gz_out, ApplyResult& res) {
  TarSplitPacker packer(tarsplit_gz_out);
  Disassembler dis(tar, packer);
  Extractor extractor(root_dirfd, options.extract);
  std::set<uint32_t> uids;
  std::set<uint32_t> gids;
  const Extractor::DataReader reader = [&dis](uint8_t* buf, size_t n) {
    return dis.read(buf, n);
  };
  TarHeader h;
  while (dis.next(h)) {
    // Go's tar reader hands out a PAX global header with zero ids and size.
    const bool global = h.typeflag == 'g';
    if (go_path_base(h.name).compare(0, 4, ".wh.") != 0) {
      uids.insert(global ? 0 : static_cast<uint32_t>(h.uid));
      gids.insert(global ? 0 : static_cast<uint32_t>(h.gid));
    }
    if (!global) res.size += h.size;
    extractor.apply(h, reader);
  }
  dis.finish();
  packer.finish();
  extractor.finish();
  res.uid_set.assign(uids.begin(), uids.end());
  res.gid_set.assign(gids.begin(), gids.end());
}

// The tar's own hash, on its thread: drain the hash queue.
void hash_blocks(BlockQueue& q, Sha256& hash) {
  BlockPtr b;
  while (q.pop(&b)) {
    hash.update(b->data, b->len);
    b.reset();
  }
}

// The end of the decompress stage: flush the decompressor, count, close both queues.
void finish_decompress(Decompressor& d, BlockWriter& w, uint64_t& tar_size, BlockQueue& q_tar,
                       BlockQueue& q_hash) {
  d.finish(w);
  w.close();
  tar_size = w.count;
  q_tar.close();
  q_hash.close();
}

// The record's digests and sizes (SPEC.md §6.1): for uncompressed input the diff digest is
// the compressed one, hashed once.
void set_digests(ApplyResult& res, const ApplyOptions& options, bool trusted,
                 uint64_t input_size, Sha256& input_hash, uint64_t tar_size, Sha256& tar_hash) {
  res.compressed_size = input_size;
  res.compressed_digest =
      trusted ? options.trusted_compressed_digest : "sha256:" + input_hash.hex();
  if (res.compression != Compression::kNone) {
    res.uncompressed_size = tar_size;
    res.uncompressed_digest = "sha256:" + tar_hash.hex();
  } else {
    res.uncompressed_size = input_size;
    res.uncompressed_digest = res.compressed_digest;
  }
}

ApplyResult run(Input& in, int root_dirfd, const ApplyOptions& options,
                ByteSink& tarsplit_gz_out) {
  ApplyResult res;
  BlockPool pool(std::max(options.block_size, kDetectBytes));
  const size_t depth = std::max<size_t>(options.queue_blocks, 1);
  BlockQueue q_in(depth);    // reader -> decompressor
  BlockQueue q_tar(depth);   // -> tar parse + extract
  BlockQueue q_hash(depth);  // decompressor -> tar hash
  std::exception_ptr errors[4];  // reader, decompressor, hasher, extractor: upstream first
  auto abort_all = [&] {
    q_in.abort();
    q_tar.abort();
    q_hash.abort();
    in.cancel();
  };
  auto guard = [&](int stage, const auto& fn) {
    try {
      fn();
    } catch (const PipelineCancelled&) {
    } catch (...) {
      errors[stage] = std::current_exception();
      abort_all();
    }
  };

  BlockPtr first;
  guard(0, [&] { first = in.next(pool, kDetectBytes, kMagicBytes); });
  if (errors[0]) std::rethrow_exception(errors[0]);
  res.compression = first ? detect_compression(first->data, first->len) : Compression::kNone;
  const bool compressed = res.compression != Compression::kNone;
  const bool trusted = is_sha256_digest(options.trusted_compressed_digest);

  Sha256 input_hash;
  Sha256 tar_hash;
  uint64_t input_size = 0;
  uint64_t tar_size = 0;
  BlockQueue& reader_out = compressed ? q_in : q_tar;

  std::thread reader([&] {
    run_in_background();
    guard(0, [&] {
      BlockPtr b = std::move(first);
      while (b) {
        input_size += b->len;
        if (!trusted) input_hash.update(b->data, b->len);
        reader_out.push(std::move(b));
        b = in.next(pool, pool.block_size(), 1);
      }
      reader_out.close();
    });
  });
  std::thread decompressor;
  std::thread hasher;
  if (compressed) {
    const bool hash_thread = options.hash_thread;
    decompressor = std::thread([&, hash_thread] {
      guard(1, [&] {
        std::unique_ptr<Decompressor> d = Decompressor::create(res.compression);
        std::vector<BlockQueue*> outs{&q_tar};
        if (hash_thread) outs.push_back(&q_hash);
        BlockWriter w(pool, outs, hash_thread ? nullptr : &tar_hash);
        BlockPtr b;
        while (q_in.pop(&b)) {
          d->feed(b->data, b->len, w);
          if (b->idle) w.flush_idle();
          b.reset();
        }
        finish_decompress(*d, w, tar_size, q_tar, q_hash);
      });
    });
    if (hash_thread) {
      hasher = std::thread([&] {
        run_in_background();
        guard(2, [&] {
          hash_blocks(q_hash, tar_hash);
        });
      });
    }
  }
  guard(3, [&] {
    QueueSource tar(q_tar);
    extract_stage(tar, root_dirfd, options, tarsplit_gz_out, res);
  });
  reader.join();
  if (decompressor.joinable()) decompressor.join();
  if (hasher.joinable()) hasher.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);

  set_digests(res, options, trusted, input_size, input_hash, tar_size, tar_hash);
  return res;
}


// The tar straight from memory for the parser (uncompressed input).
class MemoryTarSource : public ByteSource {
 public:
  MemoryTarSource(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t read(uint8_t* buf, size_t n) override {
    size_t k = std::min(n, n_ - off_);
    std::memcpy(buf, p_ + off_, k);
    off_ += k;
    return k;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
};

// Input in memory: no reader thread and no queue in front of the first stage. Uncompressed,
// the hash and the parser each walk the memory at their own pace; compressed, the
// decompressor hashes and inflates it, handing blocks to the tar hash and the parser.
ApplyResult run_memory(const uint8_t* mem, size_t len, int root_dirfd,
                       const ApplyOptions& options, ByteSink& tarsplit_gz_out) {
  ApplyResult res;
  res.compression = detect_compression(mem, std::min(len, kDetectBytes));
  const bool compressed = res.compression != Compression::kNone;
  const bool trusted = is_sha256_digest(options.trusted_compressed_digest);
  Sha256 input_hash;
  Sha256 tar_hash;
  uint64_t tar_size = 0;
  std::exception_ptr errors[3];  // producer, hasher, extractor: upstream first
  std::atomic<bool> cancelled{false};
  BlockPool pool(std::max(options.block_size, kDetectBytes));
  const size_t depth = std::max<size_t>(options.queue_blocks, 2) * 2;
  BlockQueue q_tar(depth);
  BlockQueue q_hash(depth);
  auto abort_all = [&] {
    cancelled = true;
    q_tar.abort();
    q_hash.abort();
  };
  auto guard = [&](int stage, const auto& fn) {
    try {
      fn();
    } catch (const PipelineCancelled&) {
    } catch (...) {
      errors[stage] = std::current_exception();
      abort_all();
    }
  };
  constexpr size_t kChunk = 1 << 20;

  if (!compressed) {
    std::thread hasher;
    if (!trusted) {
      hasher = std::thread([&] {
        guard(1, [&] {
          for (size_t off = 0; off < len && !cancelled; off += 4 * kChunk) {
            const size_t k = std::min(len - off, 4 * kChunk);
            input_hash.update(mem + off, k);
          }
        });
      });
    }
    guard(2, [&] {
      MemoryTarSource tar(mem, len);
      extract_stage(tar, root_dirfd, options, tarsplit_gz_out, res);
    });
    if (errors[2]) cancelled = true;
    if (hasher.joinable()) hasher.join();
  } else {
    const bool hash_thread = options.hash_thread;
    std::thread decompressor([&] {
      guard(0, [&] {
        std::unique_ptr<Decompressor> d = Decompressor::create(res.compression);
        std::vector<BlockQueue*> outs{&q_tar};
        if (hash_thread) outs.push_back(&q_hash);
        BlockWriter w(pool, outs, hash_thread ? nullptr : &tar_hash);
        for (size_t off = 0; off < len; off += kChunk) {
          if (cancelled) throw PipelineCancelled{};
          const size_t k = std::min(len - off, kChunk);
          if (!trusted) input_hash.update(mem + off, k);
          d->feed(mem + off, k, w);
        }
        finish_decompress(*d, w, tar_size, q_tar, q_hash);
      });
    });
    std::thread hasher;
    if (hash_thread) {
      hasher = std::thread([&] {
        guard(1, [&] {
          hash_blocks(q_hash, tar_hash);
        });
      });
    }
    guard(2, [&] {
      QueueSource tar(q_tar);
      extract_stage(tar, root_dirfd, options, tarsplit_gz_out, res);
    });
    decompressor.join();
    if (hasher.joinable()) hasher.join();
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);

  set_digests(res, options, trusted, len, input_hash, tar_size, tar_hash);
  return res;
}
// Keeps the hash of an uncompressed file from running more than `lead` bytes ahead of the
// parser (two readers far apart would each pull a big file through the page cache).
class Pacer {
 public:
  explicit Pacer(uint64_t lead) : lead_(lead) {}
  void parser_at(uint64_t off) {
    std::lock_guard<std::mutex> lk(mu_);
    parser_ = off;
    if (waiting_ && parser_ + lead_ / 2 >= wait_at_) cv_.notify_all();
  }
  // Waits while off is more than lead bytes ahead of the parser (one wake-up per lead/2).
  void hasher_at(uint64_t off) {
    std::unique_lock<std::mutex> lk(mu_);
    if (stopped_ || parser_ + lead_ >= off) return;
    waiting_ = true;
    wait_at_ = off;
    cv_.wait(lk, [&] { return stopped_ || parser_ + lead_ / 2 >= off; });
    waiting_ = false;
  }
  void stop() {
    std::lock_guard<std::mutex> lk(mu_);
    stopped_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t lead_;
  uint64_t parser_ = 0;
  uint64_t wait_at_ = 0;
  bool waiting_ = false;
  bool stopped_ = false;
};

// The next len bytes of a regular file for the parser, read(2) straight into its buffers.
class FileTarSource : public ByteSource {
 public:
  FileTarSource(int fd, uint64_t len, Pacer& pacer) : fd_(fd), len_(len), pacer_(pacer) {}
  size_t read(uint8_t* buf, size_t n) override {
    n = static_cast<size_t>(std::min<uint64_t>(n, len_ - off_));
    if (n == 0) return 0;
    ssize_t r;
    while ((r = ::read(fd_, buf, n)) < 0)
      if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "read");
    if (r == 0) throw truncated_input(off_, len_);
    off_ += static_cast<uint64_t>(r);
    if (off_ - reported_ >= (1u << 20) || off_ == len_) {
      pacer_.parser_at(off_);
      reported_ = off_;
    }
    return static_cast<size_t>(r);
  }

 private:
  int fd_;
  uint64_t len_;
  uint64_t off_ = 0;
  uint64_t reported_ = 0;
  Pacer& pacer_;
};

// An uncompressed regular file [start, start + len): the parser reads it on the calling
// thread and the hash preads it on its own (at most 64 MiB ahead), as two independent
// sequential readers with no queue between them. A file that ends sooner is truncated.
ApplyResult run_file_uncompressed(int fd, off_t start, uint64_t len, int root_dirfd,
                                  const ApplyOptions& options, ByteSink& tarsplit_gz_out) {
  ApplyResult res;
  const bool trusted = is_sha256_digest(options.trusted_compressed_digest);
  Sha256 input_hash;
  std::exception_ptr errors[2];  // hasher, extractor
  std::atomic<bool> cancelled{false};
  Pacer pacer(64u << 20);
  std::thread hasher;
  if (!trusted) {
    hasher = std::thread([&] {
      try {
        constexpr size_t kChunk = 4 << 20;
        std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
        Readahead readahead(fd, start, len);
        for (uint64_t off = 0; off < len && !cancelled;) {
          readahead.at(off);
          const size_t want = static_cast<size_t>(std::min<uint64_t>(len - off, kChunk));
          ssize_t r = pread(fd, buf.get(), want, start + static_cast<off_t>(off));
          if (r < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::generic_category(), "read");
          }
          if (r == 0) throw truncated_input(off, len);
          input_hash.update(buf.get(), static_cast<size_t>(r));
          off += static_cast<uint64_t>(r);
          pacer.hasher_at(off);
        }
      } catch (...) {
        errors[0] = std::current_exception();
      }
    });
  }
  try {
    FileTarSource tar(fd, len, pacer);
    extract_stage(tar, root_dirfd, options, tarsplit_gz_out, res);
  } catch (...) {
    errors[1] = std::current_exception();
    cancelled = true;
  }
  pacer.stop();  // the parser is done (or failed): the hash no longer waits for it
  if (hasher.joinable()) hasher.join();
  // The parser's error first: a truncation is seen by both, the archive's fault by it.
  for (const std::exception_ptr& e : {errors[1], errors[0]})
    if (e) std::rethrow_exception(e);
  res.compression = Compression::kNone;
  Sha256 unused;  // uncompressed: the tar's digest is the input's
  set_digests(res, options, trusted, len, input_hash, len, unused);
  return res;
}

}  // namespace

ApplyResult apply_layer(ByteSource& input, int root_dirfd, const ApplyOptions& options,
                        ByteSink& tarsplit_gz_out) {
  SourceInput in(input);
  return run(in, root_dirfd, options, tarsplit_gz_out);
}

ApplyResult apply_layer_fd(int fd, int root_dirfd, const ApplyOptions& options,
                           ByteSink& tarsplit_gz_out) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw std::system_error(errno, std::generic_category(), "fstat");
  if (S_ISREG(st.st_mode)) {
    const off_t pos = lseek(fd, 0, SEEK_CUR);
    const uint64_t expected =
        pos >= 0 && st.st_size > pos ? static_cast<uint64_t>(st.st_size - pos) : 0;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint8_t head[kMagicBytes];
    ssize_t n = expected > 0 ? pread(fd, head, sizeof(head), pos) : 0;
    if (n > 0 && detect_compression(head, static_cast<size_t>(n)) == Compression::kNone)
      return run_file_uncompressed(fd, pos, expected, root_dirfd, options, tarsplit_gz_out);
    FileInput in(fd, pos, expected);
    return run(in, root_dirfd, options, tarsplit_gz_out);
  }
  StreamFdInput in(fd);
  return run(in, root_dirfd, options, tarsplit_gz_out);
}

ApplyResult apply_layer(const uint8_t* data, size_t n, int root_dirfd,
                        const ApplyOptions& options, ByteSink& tarsplit_gz_out) {
  return run_memory(data, n, root_dirfd, options, tarsplit_gz_out);
}

}  // namespace layerstore
