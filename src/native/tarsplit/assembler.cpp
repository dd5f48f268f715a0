// tar-split's asm.NewOutputTarStream, as one tight loop: inflate the entries, replay the
// segments, stream each file through CRC-64 into a big output buffer.
#include "tarsplit/assembler.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <utility>

#include "compress/decompress.h"
#include "compress/ordered_workers.h"
#include "digest/crc64.h"
#include "tar/clean_path.h"
#include "tar/errors.h"
#include "tarsplit/json_util.h"
#include "tarsplit/packer.h"

namespace layerstore {

// ---- file getter -------------------------------------------------------------------

RootsFileGetter::RootsFileGetter(const std::vector<std::string>& roots) : roots_(roots) {
  for (const auto& r : roots) {
    int fd = ::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      for (int f : root_fds_) ::close(f);
      throw FileError(e, r);
    }
    root_fds_.push_back(fd);
  }
}

RootsFileGetter::~RootsFileGetter() {
  for (int f : root_fds_) ::close(f);
}

// Like c/storage's overlayFileGetter: the first root that opens wins; if none does, the
// error is the first root's.
int RootsFileGetter::open(const std::string& raw_name) {
  int first_err = 0;
  for (int root : root_fds_) {
    struct open_how how;
    std::memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | (noatime_ ? O_NOATIME : 0);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    const char* name = raw_name.empty() ? "." : raw_name.c_str();
    int fd;
    do {
      fd = static_cast<int>(::syscall(SYS_openat2, root, name, &how, sizeof how));
    } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
    if (fd >= 0) return fd;
    if (errno == EPERM && noatime_) {  // O_NOATIME needs ownership or CAP_FOWNER
      noatime_ = false;
      return open(raw_name);
    }
    if (first_err == 0) first_err = errno;
  }
  if (first_err == 0) first_err = ENOENT;  // no roots at all
  std::string root = roots_.empty() ? std::string() : roots_.front();
  if (!root.empty() && root.back() != '/') root.push_back('/');
  throw FileError(first_err, root + clean_path("/" + raw_name).substr(1));
}

// ---- assembler -----------------------------------------------------------------------

namespace {

constexpr size_t kOutBuf = 1 << 20;
constexpr size_t kInChunk = 256 * 1024;

[[noreturn]] void bad_json(const std::string& what) {
  throw ArchiveError("tar-split: invalid JSON: " + what);
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// A JSON string token: raw span (between the quotes) and whether it holds escapes.
struct StrTok {
  const char* p = nullptr;
  size_t n = 0;
  bool escaped = false;
};

// Where parsed entries go: the serial writer or the parallel batcher below.
class EntryHandler {
 public:
  virtual ~EntryHandler() = default;
  // Room for n decoded segment bytes; segment_done(k) commits k of them.
  virtual uint8_t* segment_space(size_t n) = 0;
  virtual void segment_done(size_t k) = 0;
  virtual void file(const std::string& name, int64_t size, const std::string& want) = 0;
  virtual void finish() = 0;
};

void check_crc(uint64_t crc, const std::string& name, const std::string& want) {
  uint8_t be[8];
  for (int i = 0; i < 8; ++i) be[i] = static_cast<uint8_t>(crc >> (56 - 8 * i));
  if (want.size() != 8 || std::memcmp(want.data(), be, 8) != 0) throw ChecksumError(name);
}

// A big file read in pieces on several threads: opened once, checked against its CRC-64
// when the last piece is in. It must hold exactly the entry's size: shorter or longer, its
// CRC would not match in Go either (Go copies the whole file, then compares).
class PiecewiseFile {
 public:
  PiecewiseFile(FileGetter& files, const std::string& name, const std::string& want,
                uint64_t size)
      : files_(files), name_(name), want_(want), size_(size) {}
  ~PiecewiseFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  PiecewiseFile(const PiecewiseFile&) = delete;
  PiecewiseFile& operator=(const PiecewiseFile&) = delete;

  // Reads bytes [off, off + n) into p; any thread, any order, each piece once.
  void read_piece(uint64_t off, uint8_t* p, size_t n) {
    const int fd = open_once();
    const bool last = off + n == size_;
    uint8_t extra;
    size_t got = 0;
    for (;;) {
      // The last piece asks for one byte more and reads on to EOF: a file that grew fails.
      struct iovec iov[2] = {{p + got, n - got}, {&extra, 1}};
      ssize_t r = ::preadv(fd, iov, last ? 2 : 1, static_cast<off_t>(off + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw FileError(errno, name_);
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
      if (got > n) throw ChecksumError(name_);
      if (got == n && !last) break;
    }
    if (got < n) throw ChecksumError(name_);
    const uint64_t crc = crc64_iso_update(0, p, n);
    std::lock_guard<std::mutex> g(mu_);
    crcs_.emplace(off, std::make_pair(crc, n));
    read_ += n;
    if (read_ < size_) return;
    uint64_t whole = 0;
    for (const auto& piece : crcs_)
      whole = crc64_iso_combine(whole, piece.second.first, piece.second.second);
    check_crc(whole, name_, want_);
  }

 private:
  int open_once() {
    std::lock_guard<std::mutex> g(mu_);
    if (fd_ < 0) fd_ = files_.open(name_);
    return fd_;
  }

  FileGetter& files_;
  const std::string name_, want_;
  const uint64_t size_;
  std::mutex mu_;
  int fd_ = -1;                                           // guarded by mu_
  std::map<uint64_t, std::pair<uint64_t, size_t>> crcs_;  // offset -> CRC, length; mu_
  uint64_t read_ = 0;                                     // guarded by mu_
};

// Streams `fd` (closed here) into the space room() gives ({pointer, size > 0}), handing
// each read's byte count to fill(k), and checks the CRC-64 against `want`.
template <class Room, class Fill>
void copy_checked(int fd, const std::string& name, const std::string& want, Room&& room,
                  Fill&& fill) {
  uint64_t crc = 0;
  try {
    for (;;) {
      std::pair<uint8_t*, size_t> space = room();
      ssize_t r = ::read(fd, space.first, space.second);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw FileError(errno, name);  // read error: name as in the entry
      }
      if (r == 0) break;
      crc = crc64_iso_update(crc, space.first, static_cast<size_t>(r));
      fill(static_cast<size_t>(r));
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  check_crc(crc, name, want);
}

// One thread: segments and file data go into the sink's own buffer when it lends one (the
// gzip sink: files are read straight into its blocks), else through a 1 MiB buffer.
class SerialHandler final : public EntryHandler {
 public:
  SerialHandler(FileGetter& files, ByteSink& out) : files_(files), out_(out) {
    size_t room = 0;
    direct_ = out_.lend(&room) != nullptr;
    if (!direct_) obuf_.reserve(kOutBuf);
    refill();
  }

  uint8_t* segment_space(size_t n) override {
    if (n > cap_ - used_) flush();
    if (n <= cap_ - used_) return base_ + used_;
    big_.resize(n);
    in_big_ = true;
    return big_.data();
  }
  void segment_done(size_t k) override {
    if (in_big_) {
      out_.write(big_.data(), k);
      in_big_ = false;
      refill();  // write() moved the lent space on
    } else {
      used_ += k;
    }
  }
  void file(const std::string& name, int64_t, const std::string& want) override {
    copy_checked(
        files_.open(name), name, want,
        [this] {
          if (used_ == cap_) flush();
          return std::make_pair(base_ + used_, cap_ - used_);
        },
        [this](size_t k) { used_ += k; });
  }
  void finish() override { flush(); }

 private:
  void flush() {
    if (used_) {
      if (direct_)
        out_.commit(used_);
      else
        out_.write(obuf_.data(), used_);
    }
    used_ = 0;
    refill();
  }
  void refill() {
    if (direct_) {
      base_ = out_.lend(&cap_);
    } else {
      base_ = obuf_.data();
      cap_ = obuf_.size();
    }
  }
  FileGetter& files_;
  ByteSink& out_;
  bool direct_ = false;
  RawBuffer obuf_;
  uint8_t* base_ = nullptr;  // the space being filled: cap_ bytes, used_ of them so far
  size_t cap_ = 0;
  size_t used_ = 0;
  std::vector<uint8_t> big_;
  bool in_big_ = false;
};

// Several threads: entries are cut into batches of about 1 MiB of output; workers fill a
// batch's buffer (segments + file contents, CRC-checked) and the parsing thread writes the
// batches in order. Files bigger than a batch are cut into pieces of a batch at most,
// read by the workers like the rest, so memory stays bounded whatever the file sizes and
// the parsing thread only parses and writes.
class ParallelHandler final : public EntryHandler {
 public:
  ParallelHandler(FileGetter& files, ByteSink& out, unsigned workers)
      : files_(files),
        out_(out),
        max_inflight_(2 * workers + 1),
        workers_(workers, [this] { return [this](Batch& b) { run(b); }; }) {
    cur_ = new_batch();
  }
  ~ParallelHandler() override { workers_.stop(); }

  uint8_t* segment_space(size_t n) override {
    seg_mark_ = cur_->segdata.size();
    cur_->segdata.resize(seg_mark_ + n);
    return reinterpret_cast<uint8_t*>(&cur_->segdata[seg_mark_]);
  }
  void segment_done(size_t k) override {
    cur_->segdata.resize(seg_mark_ + k);
    cur_->ops.push_back(Op{true, seg_mark_, k, std::string(), std::string()});
    cur_->expect += k;
    if (cur_->expect >= kBatch) submit();
  }
  void file(const std::string& name, int64_t size, const std::string& want) override {
    if (size > static_cast<int64_t>(kBatch)) {
      const uint64_t total = static_cast<uint64_t>(size);
      auto big = std::make_shared<PiecewiseFile>(files_, name, want, total);
      for (uint64_t off = 0; off < total;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kBatch, total - off));
        Op op{false, 0, n, std::string(), std::string()};
        op.piece_of = big;
        op.piece_off = off;
        cur_->ops.push_back(std::move(op));
        cur_->expect += n;
        off += n;
        if (cur_->expect >= kBatch) submit();
      }
      return;
    }
    cur_->ops.push_back(Op{false, 0, 0, name, want});
    cur_->expect += size > 0 ? static_cast<size_t>(size) : 0;
    if (cur_->expect >= kBatch) submit();
  }
  void finish() override {
    submit();
    drain_all();
    workers_.stop();
  }

 private:
  static constexpr size_t kBatch = 1 << 20;
  struct Op {
    bool segment;
    size_t off, len;  // segment bytes in Batch::segdata; a piece's length
    std::string name, want;
    std::shared_ptr<PiecewiseFile> piece_of;  // set for a piece of a big file
    uint64_t piece_off = 0;
  };
  struct Batch {
    std::vector<Op> ops;
    std::string segdata;
    size_t expect = 0;
    RawBuffer out;
    size_t used = 0;
  };

  // Batches (and their buffers) are recycled: no fresh pages per batch.
  std::shared_ptr<Batch> new_batch() {
    if (free_.empty()) return std::make_shared<Batch>();
    std::shared_ptr<Batch> b = std::move(free_.back());
    free_.pop_back();
    b->ops.clear();
    b->segdata.clear();
    b->expect = 0;
    b->used = 0;
    return b;
  }

  void submit() {
    if (cur_->ops.empty()) return;
    workers_.submit(std::move(cur_));
    cur_ = new_batch();
    while (workers_.pending() > max_inflight_) write_front();
  }

  void drain_all() {
    while (workers_.pending() > 0) write_front();
  }

  void write_front() {
    std::shared_ptr<Batch> b = workers_.take_front();  // rethrows the batch's failure
    if (b->used) out_.write(b->out.data(), b->used);
    if (free_.size() <= max_inflight_) free_.push_back(std::move(b));
  }

  void run(Batch& b) {
    b.out.reserve(2 * kBatch + 65536);  // one size for all: recycled buffers never regrow
    for (const Op& op : b.ops) {
      if (op.segment) {
        if (b.out.size() - b.used < op.len) b.out.grow(b.used + op.len + 4096, b.used);
        std::memcpy(b.out.data() + b.used, b.segdata.data() + op.off, op.len);
        b.used += op.len;
      } else if (op.piece_of) {
        if (b.out.size() - b.used < op.len) b.out.grow(b.used + op.len + 4096, b.used);
        op.piece_of->read_piece(op.piece_off, b.out.data() + b.used, op.len);
        b.used += op.len;
      } else {
        copy_checked(
            files_.open(op.name), op.name, op.want,
            [&b] {
              if (b.used == b.out.size()) b.out.grow(b.out.size() * 2, b.used);
              return std::make_pair(b.out.data() + b.used, b.out.size() - b.used);
            },
            [&b](size_t k) { b.used += k; });
      }
    }
    b.ops.clear();  // a big file closes once its last piece is read
  }

  FileGetter& files_;
  ByteSink& out_;
  size_t max_inflight_;
  std::shared_ptr<Batch> cur_;
  std::vector<std::shared_ptr<Batch>> free_;  // parsing thread only
  size_t seg_mark_ = 0;
  OrderedWorkers<Batch> workers_;  // last: its threads stop before the rest goes
};

// Parses the NDJSON entries (any key order, whitespace, unknown keys skipped, as Go's
// decoder) and hands them to an EntryHandler.
class EntryParser final : public ByteSink {
 public:
  explicit EntryParser(EntryHandler& handler) : h_(handler) {}

  // Receives inflated NDJSON.
  void write(const uint8_t* p, size_t n) override {
    const char* s = reinterpret_cast<const char*>(p);
    if (!text_.empty()) {
      // A line is still open: only a newline in the new bytes can end it. (Rescanning all
      // the buffered text for every chunk made one long line quadratic.)
      const bool ends_a_line = std::memchr(s, '\n', n) != nullptr;
      text_.append(s, n);
      if (!ends_a_line) return;
      size_t done = parse_complete(text_.data(), text_.size());
      text_.erase(0, done);
      return;
    }
    size_t done = parse_complete(s, n);
    text_.assign(s + done, n - done);
  }

  void finish() {
    if (!text_.empty()) {
      size_t pos = 0;
      while ((pos = skip_ws(text_.data(), text_.size(), pos)) < text_.size())
        pos = parse_entry(text_.data(), text_.size(), pos);
      text_.clear();
    }
    h_.finish();
  }

 private:
  // Parses every complete line; returns bytes consumed.
  size_t parse_complete(const char* s, size_t n) {
    const void* nl = memrchr(s, '\n', n);
    if (!nl) return 0;
    size_t end = static_cast<size_t>(static_cast<const char*>(nl) - s) + 1;
    size_t pos = 0;
    while ((pos = skip_ws(s, end, pos)) < end) pos = parse_entry(s, end, pos);
    return end;
  }

  static size_t skip_ws(const char* s, size_t n, size_t pos) {
    while (pos < n && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t')) ++pos;
    return pos;
  }

  static StrTok parse_string(const char* s, size_t n, size_t& pos) {
    if (pos >= n || s[pos] != '"') bad_json("expected string");
    StrTok t;
    t.p = s + ++pos;
    for (;;) {
      const char* q = static_cast<const char*>(std::memchr(s + pos, '"', n - pos));
      if (!q) bad_json("unterminated string");
      size_t end = static_cast<size_t>(q - s);
      // Is this quote escaped? Count the backslashes right before it.
      size_t bs = 0;
      while (end - bs > pos && s[end - bs - 1] == '\\') ++bs;
      if (!t.escaped && std::memchr(s + pos, '\\', end - pos)) t.escaped = true;
      pos = end + 1;
      if (bs % 2 == 0) {
        t.n = static_cast<size_t>(q - t.p);
        return t;
      }
    }
  }

  static std::string unescape(const StrTok& t) {
    if (!t.escaped) return std::string(t.p, t.n);
    std::string out;
    for (size_t i = 0; i < t.n; ++i) {
      char c = t.p[i];
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (++i >= t.n) bad_json("bad escape");
      switch (t.p[i]) {
        case '"':
        case '\\':
        case '/':
          out.push_back(t.p[i]);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          auto hex4 = [&](size_t at) {
            if (at + 4 > t.n) bad_json("bad \\u escape");
            uint32_t v = 0;
            for (size_t k = at; k < at + 4; ++k) {
              char h = t.p[k];
              v <<= 4;
              if (h >= '0' && h <= '9')
                v |= static_cast<uint32_t>(h - '0');
              else if (h >= 'a' && h <= 'f')
                v |= static_cast<uint32_t>(h - 'a' + 10);
              else if (h >= 'A' && h <= 'F')
                v |= static_cast<uint32_t>(h - 'A' + 10);
              else
                bad_json("bad \\u escape");
            }
            return v;
          };
          uint32_t cp = hex4(i + 1);
          i += 4;
          if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < t.n + 0 && t.p[i + 1] == '\\' &&
              t.p[i + 2] == 'u') {
            uint32_t lo = hex4(i + 3);
            if (lo >= 0xdc00 && lo < 0xe000) {
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
              i += 6;
            } else {
              cp = 0xfffd;
            }
          } else if (cp >= 0xd800 && cp < 0xe000) {
            cp = 0xfffd;
          }
          append_utf8(cp, out);
          break;
        }
        default:
          bad_json("bad escape");
      }
    }
    return out;
  }

  static void skip_value(const char* s, size_t n, size_t& pos) {
    if (pos >= n) bad_json("unexpected end");
    char c = s[pos];
    if (c == '"') {
      parse_string(s, n, pos);
    } else if (c == '{' || c == '[') {
      int depth = 0;
      while (pos < n) {
        char d = s[pos];
        if (d == '"') {
          parse_string(s, n, pos);
          continue;
        }
        if (d == '{' || d == '[') ++depth;
        if (d == '}' || d == ']') {
          if (--depth == 0) {
            ++pos;
            return;
          }
        }
        ++pos;
      }
      bad_json("unterminated value");
    } else {
      while (pos < n && s[pos] != ',' && s[pos] != '}' && s[pos] != ' ' && s[pos] != '\n') ++pos;
    }
  }

  static int64_t parse_int(const char* s, size_t n, size_t& pos) {
    bool neg = false;
    if (pos < n && s[pos] == '-') {
      neg = true;
      ++pos;
    }
    if (pos >= n || s[pos] < '0' || s[pos] > '9') bad_json("expected number");
    uint64_t v = 0;
    while (pos < n && s[pos] >= '0' && s[pos] <= '9') {
      if (v > (UINT64_MAX - 9) / 10) bad_json("number out of range");
      v = v * 10 + static_cast<uint64_t>(s[pos++] - '0');
    }
    if (v > (neg ? uint64_t{1} << 63 : static_cast<uint64_t>(INT64_MAX)))
      bad_json("number out of range");
    return neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  }

  // Parses one object at pos and acts on it; returns the position after it.
  size_t parse_entry(const char* s, size_t n, size_t pos) {
    if (s[pos] != '{') bad_json(std::string("invalid character '") + s[pos] +
                                "' looking for beginning of value");
    ++pos;
    int64_t type = 0, size = 0;
    StrTok name, name_raw, payload;
    bool has_name = false, has_name_raw = false, has_payload = false;
    pos = skip_ws(s, n, pos);
    if (pos < n && s[pos] == '}') {
      ++pos;
    } else {
      for (;;) {
        pos = skip_ws(s, n, pos);
        StrTok key = parse_string(s, n, pos);
        pos = skip_ws(s, n, pos);
        if (pos >= n || s[pos] != ':') bad_json("expected ':'");
        pos = skip_ws(s, n, pos + 1);
        if (pos >= n) bad_json("unexpected end");
        bool is_null = s[pos] == 'n';
        auto key_is = [&](const char* k) {
          return key.n == std::strlen(k) && std::memcmp(key.p, k, key.n) == 0;
        };
        if (is_null) {
          skip_value(s, n, pos);
        } else if (key_is("type")) {
          type = parse_int(s, n, pos);
        } else if (key_is("size")) {
          size = parse_int(s, n, pos);
        } else if (key_is("name")) {
          name = parse_string(s, n, pos);
          has_name = true;
        } else if (key_is("name_raw")) {
          name_raw = parse_string(s, n, pos);
          has_name_raw = true;
        } else if (key_is("payload")) {
          payload = parse_string(s, n, pos);
          has_payload = true;
        } else {
          skip_value(s, n, pos);
        }
        pos = skip_ws(s, n, pos);
        if (pos < n && s[pos] == ',') {
          ++pos;
          continue;
        }
        if (pos < n && s[pos] == '}') {
          ++pos;
          break;
        }
        bad_json("expected ',' or '}'");
      }
    }
    if (type == 2) {
      if (has_payload && payload.n) segment(payload);
    } else if (type == 1) {
      std::string fname;
      if (has_name_raw) {
        std::string raw = unescape(name_raw);
        if (!tarsplit::base64_decode(raw.data(), raw.size(), fname)) bad_json("bad name_raw");
      }
      if (fname.empty() && has_name) fname = unescape(name);
      if (!seen_.insert(clean_path(fname)).second)
        throw ArchiveError("duplicates of file paths not supported");
      if (size != 0) {
        std::string want;
        if (has_payload) {
          std::string p = unescape(payload);
          if (!tarsplit::base64_decode(p.data(), p.size(), want)) bad_json("bad payload");
        }
        h_.file(fname, size, want);
      }
    }
    return pos;
  }

  void segment(const StrTok& t) {
    if (t.escaped) {
      std::string p = unescape(t);
      size_t need = p.size() / 4 * 3;
      size_t got = 0;
      if (!tarsplit::base64_decode_to(p.data(), p.size(), h_.segment_space(need), &got))
        bad_json("bad payload");
      h_.segment_done(got);
      return;
    }
    size_t got = 0;
    if (!tarsplit::base64_decode_to(t.p, t.n, h_.segment_space(t.n / 4 * 3), &got))
      bad_json("bad payload");
    h_.segment_done(got);
  }

  EntryHandler& h_;
  std::string text_;
  std::unordered_set<std::string> seen_;
};

}  // namespace

void assemble(ByteSource& tarsplit_gz, FileGetter& files, ByteSink& out, int threads) {
  unsigned workers =
      threads > 0 ? static_cast<unsigned>(threads) : std::thread::hardware_concurrency();
  std::unique_ptr<EntryHandler> handler;
  if (workers > 1 && files.thread_safe())
    handler = std::make_unique<ParallelHandler>(files, out, std::min(workers, 16u));
  else
    handler = std::make_unique<SerialHandler>(files, out);
  EntryParser parser(*handler);
  std::unique_ptr<Decompressor> gz = Decompressor::create(Compression::kGzip);
  std::vector<uint8_t> in(kInChunk);
  for (;;) {
    size_t r = tarsplit_gz.read(in.data(), in.size());
    if (r == 0) break;
    gz->feed(in.data(), r, parser);
  }
  gz->finish(parser);
  parser.finish();
}

}  // namespace layerstore
