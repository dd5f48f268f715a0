#include "apply/apply.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "apply/block_queue.h"
#include "compress/decompress.h"
#include "digest/sha256.h"
#include "tarsplit/disassembler.h"
#include "tarsplit/packer.h"

namespace layerstore {

namespace {

constexpr size_t kDetectBytes = 10240;  // Go reads this much once to detect the format

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

// Blocks read from a ByteSource (a pipe or socket) into pooled storage.
struct Input {
  ByteSource* src = nullptr;

  BlockPtr next(BlockPool& pool, size_t want) {
    BlockPtr b = pool.get();
    size_t len = 0;
    while (len < want) {
      size_t r = src->read(b->storage.data() + len, want - len);
      if (r == 0) break;
      len += r;
    }
    if (len == 0) return nullptr;
    b->len = len;
    return b;
  }
};

// Decompressed bytes into blocks, each handed to every output queue (and an inline hash).
class BlockWriter : public ByteSink {
 public:
  BlockWriter(BlockPool& pool, std::vector<BlockQueue*> outs, Sha256* hash)
      : pool_(pool), outs_(std::move(outs)), hash_(hash) {}
  void write(const uint8_t* p, size_t n) override {
    while (n > 0) {
      if (!cur_) cur_ = pool_.get();
      size_t k = std::min(n, pool_.block_size() - cur_->len);
      std::memcpy(cur_->storage.data() + cur_->len, p, k);
      cur_->len += k;
      p += k;
      n -= k;
      if (cur_->len == pool_.block_size()) flush();
    }
  }
  void close() override { flush(); }
  uint64_t count = 0;

 private:
  void flush() {
    if (!cur_ || cur_->len == 0) return;
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
  guard(0, [&] { first = in.next(pool, kDetectBytes); });
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
    guard(0, [&] {
      BlockPtr b = std::move(first);
      while (b) {
        input_size += b->len;
        if (!trusted) input_hash.update(b->data, b->len);
        reader_out.push(std::move(b));
        b = in.next(pool, pool.block_size());
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
          b.reset();
        }
        d->finish(w);
        w.close();
        tar_size = w.count;
        q_tar.close();
        q_hash.close();
      });
    });
    if (hash_thread) {
      hasher = std::thread([&] {
        guard(2, [&] {
          BlockPtr b;
          while (q_hash.pop(&b)) {
            tar_hash.update(b->data, b->len);
            b.reset();
          }
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

  res.compressed_size = input_size;
  res.compressed_digest =
      trusted ? options.trusted_compressed_digest : "sha256:" + input_hash.hex();
  if (compressed) {
    res.uncompressed_size = tar_size;
    res.uncompressed_digest = "sha256:" + tar_hash.hex();
  } else {
    res.uncompressed_size = input_size;
    res.uncompressed_digest = res.compressed_digest;
  }
  return res;
}


// Pages of our own file mapping that every reader has passed leave our RSS (they stay in
// the page cache), so a big mapped input keeps the footprint flat. A reader may also wait
// until the slowest one is within `lead` bytes of it (the hash would otherwise run through
// the whole mapping long before the parser, keeping all of it resident).
class PageDropper {
 public:
  PageDropper(const uint8_t* base, int readers, bool enabled)
      : base_(base), pos_(static_cast<size_t>(readers), 0), enabled_(enabled) {}
  void advance(int reader, size_t offset) {
    std::lock_guard<std::mutex> lk(mu_);
    pos_[static_cast<size_t>(reader)] = offset;
    const size_t low = *std::min_element(pos_.begin(), pos_.end());
    if (waiting_ && low + lead_ / 2 >= wait_at_) cv_.notify_all();
    if (!enabled_ || low < dropped_ + (4u << 20)) return;
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(base_ + dropped_) + page - 1) & ~(page - 1);
    const uintptr_t hi = reinterpret_cast<uintptr_t>(base_ + low) & ~(page - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    dropped_ = low;
  }
  // Publishes offset for reader, then waits while it is more than lead bytes ahead of the
  // slowest reader (one wake-up per lead/2 bytes), or until stop().
  void pace(int reader, size_t offset, size_t lead) {
    if (!enabled_) return;
    std::unique_lock<std::mutex> lk(mu_);
    pos_[static_cast<size_t>(reader)] = offset;
    lead_ = lead;
    auto low = [&] { return *std::min_element(pos_.begin(), pos_.end()); };
    if (stopped_ || low() + lead >= offset) return;
    waiting_ = true;
    wait_at_ = offset;
    cv_.wait(lk, [&] { return stopped_ || low() + lead / 2 >= offset; });
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
  const uint8_t* base_;
  std::vector<size_t> pos_;
  size_t dropped_ = 0;
  size_t lead_ = 0;
  size_t wait_at_ = 0;
  bool waiting_ = false;
  bool stopped_ = false;
  bool enabled_;
};

// The tar straight from memory for the parser (uncompressed input).
class MemoryTarSource : public ByteSource {
 public:
  MemoryTarSource(const uint8_t* p, size_t n, PageDropper& pages, int reader)
      : p_(p), n_(n), pages_(pages), reader_(reader) {}
  size_t read(uint8_t* buf, size_t n) override {
    size_t k = std::min(n, n_ - off_);
    std::memcpy(buf, p_ + off_, k);
    off_ += k;
    if (off_ - reported_ >= (1u << 20) || off_ == n_) {
      pages_.advance(reader_, off_);
      reported_ = off_;
    }
    return k;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
  size_t reported_ = 0;
  PageDropper& pages_;
  int reader_;
};

// Input in memory: no reader thread and no queue in front of the first stage. Uncompressed,
// the hash and the parser each walk the memory at their own pace; compressed, the
// decompressor hashes and inflates it, handing blocks to the tar hash and the parser.
ApplyResult run_memory(const uint8_t* mem, size_t len, bool drop_pages, int root_dirfd,
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
    PageDropper pages(mem, trusted ? 1 : 2, drop_pages);
    std::thread hasher;
    if (!trusted) {
      hasher = std::thread([&] {
        guard(1, [&] {
          for (size_t off = 0; off < len && !cancelled; off += 4 * kChunk) {
            const size_t k = std::min(len - off, 4 * kChunk);
            input_hash.update(mem + off, k);
            pages.advance(1, off + k);
            pages.pace(1, off + k, 16u << 20);
          }
        });
      });
    }
    guard(2, [&] {
      MemoryTarSource tar(mem, len, pages, 0);
      extract_stage(tar, root_dirfd, options, tarsplit_gz_out, res);
    });
    if (errors[2]) cancelled = true;
    pages.stop();  // the parser is done (or failed): the hash no longer waits for it
    if (hasher.joinable()) hasher.join();
  } else {
    PageDropper pages(mem, 1, drop_pages);
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
          pages.advance(0, off + k);
        }
        d->finish(w);
        w.close();
        tar_size = w.count;
        q_tar.close();
        q_hash.close();
      });
    });
    std::thread hasher;
    if (hash_thread) {
      hasher = std::thread([&] {
        guard(1, [&] {
          BlockPtr b;
          while (q_hash.pop(&b)) {
            tar_hash.update(b->data, b->len);
            b.reset();
          }
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

  res.compressed_size = len;
  res.compressed_digest =
      trusted ? options.trusted_compressed_digest : "sha256:" + input_hash.hex();
  if (compressed) {
    res.uncompressed_size = tar_size;
    res.uncompressed_digest = "sha256:" + tar_hash.hex();
  } else {
    res.uncompressed_size = len;
    res.uncompressed_digest = res.compressed_digest;
  }
  return res;
}
}  // namespace

ApplyResult apply_layer(ByteSource& input, int root_dirfd, const ApplyOptions& options,
                        ByteSink& tarsplit_gz_out) {
  Input in;
  in.src = &input;
  return run(in, root_dirfd, options, tarsplit_gz_out);
}

ApplyResult apply_layer_fd(int fd, int root_dirfd, const ApplyOptions& options,
                           ByteSink& tarsplit_gz_out) {
  struct stat st;
  const off_t pos = lseek(fd, 0, SEEK_CUR);
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && pos >= 0 && st.st_size > pos) {
    const long page = sysconf(_SC_PAGESIZE);
    const off_t start = pos - pos % page;
    const size_t len = static_cast<size_t>(st.st_size - start);
    void* map = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, start);
    if (map != MAP_FAILED) {
      madvise(map, len, MADV_SEQUENTIAL);
      struct Unmap {
        void* p;
        size_t n;
        ~Unmap() { munmap(p, n); }
      } unmap{map, len};
      const size_t skip = static_cast<size_t>(pos - start);
      ApplyResult r = run_memory(static_cast<const uint8_t*>(map) + skip, len - skip, true,
                                 root_dirfd, options, tarsplit_gz_out);
      lseek(fd, 0, SEEK_END);
      return r;
    }
  }
  FdSource src(fd);
  return apply_layer(src, root_dirfd, options, tarsplit_gz_out);
}

ApplyResult apply_layer(const uint8_t* data, size_t n, int root_dirfd,
                        const ApplyOptions& options, ByteSink& tarsplit_gz_out) {
  return run_memory(data, n, false, root_dirfd, options, tarsplit_gz_out);
}

}  // namespace layerstore
