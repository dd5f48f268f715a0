// Go archive/tar's Reader.Next, translated, with tar-split's raw accounting.
#include "tar/reader.h"

#include <algorithm>
#include <cstring>
#include <map>

namespace layerstore {

namespace {

constexpr size_t kBufSize = 1 << 20;
constexpr int64_t kMaxSpecialFileSize = 1 << 20;
const char kErrHeader[] = "archive/tar: invalid tar header";
const char kErrUnexpectedEOF[] = "unexpected EOF";
const char kErrMissData[] = "archive/tar: sparse file references non-existent data";
const char kErrUnrefData[] = "archive/tar: sparse file contains unreferenced data";
const uint8_t kZeros[1 << 16] = {};  // what read_view hands out for holes

[[noreturn]] void err_header() { throw ArchiveError(kErrHeader); }
[[noreturn]] void err_eof() { throw ArchiveError(kErrUnexpectedEOF); }

bool is_header_only_type(char t) {
  return t == '1' || t == '2' || t == '3' || t == '4' || t == '5' || t == '6';
}

// Go's parser: errors are sticky in `err`.
struct Parser {
  bool err = false;

  static std::string parse_string(const uint8_t* b, size_t n) {
    const void* z = std::memchr(b, 0, n);
    size_t len = z ? static_cast<size_t>(static_cast<const uint8_t*>(z) - b) : n;
    return std::string(reinterpret_cast<const char*>(b), len);
  }

  int64_t parse_octal(const uint8_t* b, size_t n) {
    size_t s = 0, e = n;
    while (s < e && (b[s] == ' ' || b[s] == 0)) ++s;
    while (e > s && (b[e - 1] == ' ' || b[e - 1] == 0)) --e;
    if (s == e) return 0;
    // parseString: cut at the first NUL inside
    const void* z = std::memchr(b + s, 0, e - s);
    if (z) e = static_cast<size_t>(static_cast<const uint8_t*>(z) - b);
    if (s == e) {
      err = true;
      return 0;
    }
    uint64_t x = 0;
    for (size_t i = s; i < e; ++i) {
      if (b[i] < '0' || b[i] > '7' || (x >> 61) != 0) {
        err = true;
        return 0;
      }
      x = x * 8 + (b[i] - '0');
    }
    return static_cast<int64_t>(x);
  }

  int64_t parse_numeric(const uint8_t* b, size_t n) {
    if (n > 0 && (b[0] & 0x80) != 0) {
      uint8_t inv = (b[0] & 0x40) ? 0xff : 0x00;
      uint64_t x = 0;
      for (size_t i = 0; i < n; ++i) {
        uint8_t c = b[i] ^ inv;
        if (i == 0) c &= 0x7f;
        if ((x >> 56) > 0) {
          err = true;
          return 0;
        }
        x = x << 8 | c;
      }
      if ((x >> 63) > 0) {
        err = true;
        return 0;
      }
      return inv == 0xff ? ~static_cast<int64_t>(x) : static_cast<int64_t>(x);
    }
    return parse_octal(b, n);
  }
};

bool parse_decimal(const std::string& s, int64_t* out) {
  // strconv.ParseInt(s, 10, 64)
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  if (i == s.size()) return false;
  uint64_t x = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (x > (UINT64_MAX - 9) / 10) return false;
    x = x * 10 + static_cast<uint64_t>(s[i] - '0');
  }
  if (neg ? x > (uint64_t{1} << 63) : x > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = neg ? static_cast<int64_t>(0 - x) : static_cast<int64_t>(x);
  return true;
}

bool parse_pax_time(const std::string& s, TarTime* t) {
  size_t dot = s.find('.');
  std::string ss = s.substr(0, dot);
  std::string sn = dot == std::string::npos ? "" : s.substr(dot + 1);
  int64_t secs;
  if (!parse_decimal(ss, &secs)) return false;
  int64_t nsecs = 0;
  if (!sn.empty()) {
    for (char c : sn)
      if (c < '0' || c > '9') return false;
    if (sn.size() < 9)
      sn.append(9 - sn.size(), '0');
    else
      sn.resize(9);
    nsecs = std::stoll(sn);
    if (!ss.empty() && ss[0] == '-') nsecs = -nsecs;
  }
  // time.Unix normalisation (Go's int64 arithmetic wraps)
  if (nsecs < 0) {
    secs = static_cast<int64_t>(static_cast<uint64_t>(secs) - 1);
    nsecs += 1000000000;
  }
  t->sec = secs;
  t->nsec = nsecs;
  t->set = true;
  return true;
}

using PaxRecords = std::vector<std::pair<std::string, std::string>>;

void pax_set(PaxRecords& recs, std::string k, std::string v) {
  for (auto& kv : recs)
    if (kv.first == k) {
      kv.second = std::move(v);
      return;
    }
  recs.emplace_back(std::move(k), std::move(v));
}

// Go's parsePAX, with its GNU sparse 0.0 -> 0.1 conversion: the repeated
// GNU.sparse.offset/numbytes pairs become one GNU.sparse.map record.
PaxRecords parse_pax(const std::string& buf) {
  PaxRecords recs;
  size_t pos = 0;
  std::string sparse_map;
  size_t sparse_fields = 0;
  while (pos < buf.size()) {
    size_t sp = buf.find(' ', pos);
    if (sp == std::string::npos) err_header();
    int64_t n;
    std::string nstr = buf.substr(pos, sp - pos);
    if (!parse_decimal(nstr, &n) || n < 5 || n > static_cast<int64_t>(buf.size() - pos))
      err_header();
    int64_t rest_n = n - static_cast<int64_t>(nstr.size() + 1);
    if (rest_n <= 0) err_header();
    size_t rec_start = sp + 1;
    size_t nl = rec_start + static_cast<size_t>(rest_n) - 1;
    if (buf[nl] != '\n') err_header();
    std::string rec = buf.substr(rec_start, nl - rec_start);
    pos = nl + 1;
    size_t eq = rec.find('=');
    if (eq == std::string::npos) err_header();
    std::string k = rec.substr(0, eq), v = rec.substr(eq + 1);
    if (k.empty()) err_header();
    if (k == "path" || k == "linkpath" || k == "uname" || k == "gname") {
      if (v.find('\0') != std::string::npos) err_header();
    } else if (k.find('\0') != std::string::npos) {
      err_header();
    }
    if (k == "GNU.sparse.offset" || k == "GNU.sparse.numbytes") {
      bool want_offset = sparse_fields % 2 == 0;
      if (want_offset != (k == "GNU.sparse.offset") || v.find(',') != std::string::npos)
        err_header();
      if (sparse_fields++ > 0) sparse_map += ',';
      sparse_map += v;
      continue;
    }
    pax_set(recs, std::move(k), std::move(v));
  }
  if (sparse_fields > 0) pax_set(recs, "GNU.sparse.map", std::move(sparse_map));
  return recs;
}

const std::string& pax_get(const PaxRecords& recs, const char* k) {
  static const std::string kEmpty;
  for (const auto& kv : recs)
    if (kv.first == k) return kv.second;
  return kEmpty;
}

// Go's readGNUSparsePAXHeaders, up to the map: 0 for 0.0/0.1 (map in the records), 1 for
// 1.0 (map in the data), -1 if not a PAX sparse file. Sets the name and the real size.
int pax_sparse_version(const PaxRecords& recs, TarHeader& h) {
  const std::string& major = pax_get(recs, "GNU.sparse.major");
  const std::string& minor = pax_get(recs, "GNU.sparse.minor");
  int version;
  if (major == "0" && (minor == "0" || minor == "1")) {
    version = 0;
  } else if (major == "1" && minor == "0") {
    version = 1;
  } else if (!major.empty() || !minor.empty()) {
    return -1;  // unknown version: a plain file, as in Go
  } else if (!pax_get(recs, "GNU.sparse.map").empty()) {
    version = 0;
  } else {
    return -1;
  }
  const std::string& name = pax_get(recs, "GNU.sparse.name");
  if (!name.empty()) h.name = name;
  const std::string* size = &pax_get(recs, "GNU.sparse.size");
  if (size->empty()) size = &pax_get(recs, "GNU.sparse.realsize");
  if (!size->empty() && !parse_decimal(*size, &h.size)) err_header();
  return version;
}

// Go's readGNUSparseMap0x1.
template <class Entry>
void sparse_map_0x1(const PaxRecords& recs, std::vector<Entry>& sp) {
  int64_t n;
  if (!parse_decimal(pax_get(recs, "GNU.sparse.numblocks"), &n) || n < 0 || n > INT64_MAX / 2)
    err_header();
  const std::string& map = pax_get(recs, "GNU.sparse.map");
  std::vector<std::string> fields;
  if (!map.empty()) {
    size_t start = 0;
    for (;;) {
      size_t comma = map.find(',', start);
      fields.push_back(map.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (static_cast<int64_t>(fields.size()) != 2 * n) err_header();
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    Entry e{0, 0};
    if (!parse_decimal(fields[i], &e.offset) || !parse_decimal(fields[i + 1], &e.length))
      err_header();
    sp.push_back(e);
  }
}

// Go's validateSparseEntries.
template <class Entry>
bool sparse_map_valid(const std::vector<Entry>& sp, int64_t size) {
  if (size < 0) return false;
  int64_t pre_end = 0;
  for (const Entry& e : sp) {
    if (e.offset < 0 || e.length < 0) return false;
    if (e.offset > INT64_MAX - e.length) return false;
    if (e.offset + e.length > size) return false;
    if (pre_end > e.offset) return false;
    pre_end = e.offset + e.length;
  }
  return true;
}

void merge_pax(TarHeader& h, const PaxRecords& recs) {
  for (const auto& kv : recs) {
    const std::string& k = kv.first;
    const std::string& v = kv.second;
    if (v.empty()) continue;
    bool ok = true;
    int64_t id;
    if (k == "path") {
      h.name = v;
    } else if (k == "linkpath") {
      h.linkname = v;
    } else if (k == "uname") {
      h.uname = v;
    } else if (k == "gname") {
      h.gname = v;
    } else if (k == "uid") {
      ok = parse_decimal(v, &id);
      if (ok) h.uid = id;
    } else if (k == "gid") {
      ok = parse_decimal(v, &id);
      if (ok) h.gid = id;
    } else if (k == "atime") {
      ok = parse_pax_time(v, &h.atime);
    } else if (k == "mtime") {
      ok = parse_pax_time(v, &h.mtime);
    } else if (k == "ctime") {
      ok = parse_pax_time(v, &h.ctime);
    } else if (k == "size") {
      ok = parse_decimal(v, &id);
      if (ok) h.size = id;
    } else if (k.compare(0, 13, "SCHILY.xattr.") == 0) {
      std::string name = k.substr(13);
      bool found = false;
      for (auto& x : h.xattrs)
        if (x.first == name) {
          x.second = v;
          found = true;
        }
      if (!found) h.xattrs.emplace_back(std::move(name), v);
    }
    if (!ok) err_header();
  }
}

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Parses one header block the way Go's readHeader does (checksum already verified).
void parse_block(const uint8_t* b, TarHeader& h) {
  Parser p;
  h = TarHeader();
  h.typeflag = static_cast<char>(b[156]);
  h.name = Parser::parse_string(b, 100);
  h.linkname = Parser::parse_string(b + 157, 100);
  h.size = p.parse_numeric(b + 124, 12);
  h.mode = p.parse_numeric(b + 100, 8);
  h.uid = p.parse_numeric(b + 108, 8);
  h.gid = p.parse_numeric(b + 116, 8);
  h.mtime.sec = p.parse_numeric(b + 136, 12);
  h.mtime.set = true;

  bool ustar = std::memcmp(b + 257, "ustar\0", 6) == 0;
  bool star = ustar && std::memcmp(b + 508, "tar\0", 4) == 0;
  bool gnu = std::memcmp(b + 257, "ustar ", 6) == 0 && std::memcmp(b + 263, " \0", 2) == 0;
  if (ustar || gnu) {
    h.uname = Parser::parse_string(b + 265, 32);
    h.gname = Parser::parse_string(b + 297, 32);
    h.devmajor = p.parse_numeric(b + 329, 8);
    h.devminor = p.parse_numeric(b + 337, 8);
    std::string prefix;
    if (star) {
      prefix = Parser::parse_string(b + 345, 131);
      h.atime.sec = p.parse_numeric(b + 476, 12);
      h.atime.set = true;
      h.ctime.sec = p.parse_numeric(b + 488, 12);
      h.ctime.set = true;
    } else if (ustar) {
      prefix = Parser::parse_string(b + 345, 155);
    } else {
      Parser p2;
      if (b[345] != 0) {
        h.atime.sec = p2.parse_numeric(b + 345, 12);
        h.atime.set = true;
      }
      if (b[357] != 0) {
        h.ctime.sec = p2.parse_numeric(b + 357, 12);
        h.ctime.set = true;
      }
      if (p2.err) {  // pre-Go1.8 writer bug: the fields hold a USTAR prefix
        h.atime = TarTime();
        h.ctime = TarTime();
        std::string s = Parser::parse_string(b + 345, 155);
        if (is_ascii(s)) prefix = s;
      }
    }
    if (!prefix.empty()) h.name = prefix + "/" + h.name;
  }
  if (p.err) err_header();
}

bool checksum_ok(const uint8_t* b) {
  Parser p;
  int64_t value = p.parse_octal(b + 148, 8);
  if (p.err) return false;
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (int i = 0; i < 512; ++i) {
    uint8_t c = (i >= 148 && i < 156) ? ' ' : b[i];
    unsigned_sum += c;
    signed_sum += static_cast<int8_t>(c);
  }
  return value == unsigned_sum || value == signed_sum;
}

bool is_zero_block(const uint8_t* b) {
  static const uint8_t kZero[512] = {};
  return std::memcmp(b, kZero, 512) == 0;
}

}  // namespace

TarReader::TarReader(ByteSource& src) : src_(src), buf_(kBufSize) {}

size_t TarReader::fill(size_t want) {
  size_t avail = end_ - pos_;
  if (avail >= want || eof_) return avail;
  if (pos_ + want > buf_.size()) {  // compact
    std::memmove(buf_.data(), buf_.data() + pos_, avail);
    pos_ = 0;
    end_ = avail;
  }
  while (end_ - pos_ < want) {
    size_t r = src_.read(buf_.data() + end_, buf_.size() - end_);
    if (r == 0) {
      eof_ = true;
      break;
    }
    end_ += r;
  }
  return end_ - pos_;
}

void TarReader::consume_raw(size_t n) {
  raw_.append(reinterpret_cast<const char*>(buf_.data() + pos_), n);
  pos_ += n;
  offset_ += n;
}

void TarReader::skip_data() {
  while (remaining_ > 0) {
    size_t avail = fill(1);
    if (avail == 0) err_eof();
    size_t k = static_cast<size_t>(std::min<int64_t>(remaining_, static_cast<int64_t>(avail)));
    pos_ += k;
    offset_ += k;
    remaining_ -= static_cast<int64_t>(k);
  }
}

bool TarReader::skip_to_header() {
  skip_data();
  if (pad_ > 0) {
    size_t avail = fill(static_cast<size_t>(pad_));
    size_t k = std::min(avail, static_cast<size_t>(pad_));
    consume_raw(k);
    if (k < static_cast<size_t>(pad_)) return false;  // Go's tryReadFull: io.EOF
    pad_ = 0;
  }
  return true;
}

bool TarReader::read_block(uint8_t* block) {
  size_t avail = fill(512);
  if (avail == 0) return false;
  if (avail < 512) {
    consume_raw(avail);
    err_eof();
  }
  std::memcpy(block, buf_.data() + pos_, 512);
  consume_raw(512);
  return true;
}

std::string TarReader::read_special(int64_t size) {
  if (size > kMaxSpecialFileSize) throw ArchiveError("archive/tar: header field too long");
  size_t n = static_cast<size_t>(size);
  size_t avail = fill(n);
  if (avail < n) {
    consume_raw(avail);
    err_eof();
  }
  std::string s(reinterpret_cast<const char*>(buf_.data() + pos_), n);
  consume_raw(n);
  remaining_ = 0;
  return s;
}

bool TarReader::next(TarHeader& h) {
  if (done_) return false;
  sparse_ = false;
  PaxRecords pax;
  std::string long_name, long_link;
  bool have_long_name = false, have_long_link = false;
  uint8_t blk[512];
  for (;;) {
    if (!skip_to_header() || !read_block(blk)) {
      done_ = true;
      return false;
    }
    if (is_zero_block(blk)) {
      if (!read_block(blk) || is_zero_block(blk)) {
        done_ = true;
        return false;
      }
      err_header();
    }
    if (!checksum_ok(blk)) err_header();
    parse_block(blk, h);
    auto set_data = [&](const TarHeader& hh) {
      int64_t nb = is_header_only_type(hh.typeflag) ? 0 : hh.size;
      if (nb < 0) err_header();
      remaining_ = nb;
      pad_ = (512 - (nb & 511)) & 511;
    };
    set_data(h);
    switch (h.typeflag) {
      case 'x':
      case 'g': {
        pax = parse_pax(read_special(remaining_));
        if (h.typeflag == 'g') {
          merge_pax(h, pax);
          TarHeader g;
          g.typeflag = 'g';
          g.name = h.name;
          g.xattrs = h.xattrs;
          g.mtime.set = false;
          h = std::move(g);
          return true;
        }
        continue;
      }
      case 'L':
      case 'K': {
        std::string s = read_special(remaining_);
        std::string v = Parser::parse_string(reinterpret_cast<const uint8_t*>(s.data()), s.size());
        if (h.typeflag == 'L') {
          long_name = std::move(v);
          have_long_name = !long_name.empty();
        } else {
          long_link = std::move(v);
          have_long_link = !long_link.empty();
        }
        continue;
      }
      // Old GNU sparse ('S') is expanded but keeps its type: the extractor refuses it as
      // Go's does ("unhandled tar header type 83").
      default: {
        merge_pax(h, pax);
        if (have_long_name) h.name = long_name;
        if (have_long_link) h.linkname = long_link;
        if (h.typeflag == '\0') {
          h.typeflag = (!h.name.empty() && h.name.back() == '/') ? '5' : '0';
        }
        set_data(h);  // the physical size
        std::vector<SparseEntry> sp;
        if (h.typeflag == 'S') {
          read_old_gnu_sparse_map(blk, h, sp);
        } else {
          int version = pax.empty() ? -1 : pax_sparse_version(pax, h);
          if (version < 0) return true;
          if (version == 1)
            read_sparse_map_1x0(sp);
          else
            sparse_map_0x1(pax, sp);
        }
        if (is_header_only_type(h.typeflag) || !sparse_map_valid(sp, h.size)) err_header();
        start_sparse(h, sp);
        return true;
      }
    }
  }
}

void TarReader::read_old_gnu_sparse_map(uint8_t* blk, TarHeader& h,
                                        std::vector<SparseEntry>& sp) {
  // Go's readOldGNUSparseMap: 4 entries in the header, 21 per extension block (raw).
  if (std::memcmp(blk + 257, "ustar ", 6) != 0 || std::memcmp(blk + 263, " \0", 2) != 0)
    err_header();  // STAR's 'S' has another layout
  Parser p;
  h.size = p.parse_numeric(blk + 483, 12);
  if (p.err) err_header();
  const uint8_t* entries = blk + 386;
  int count = 4;
  const uint8_t* extended = blk + 482;
  for (;;) {
    for (int i = 0; i < count; ++i) {
      const uint8_t* e = entries + 24 * i;
      if (e[0] == 0) break;
      SparseEntry s{p.parse_numeric(e, 12), p.parse_numeric(e + 12, 12)};
      if (p.err) err_header();
      sp.push_back(s);
    }
    if (*extended == 0) return;
    if (!read_block(blk)) err_eof();
    entries = blk;
    count = 21;
    extended = blk + 504;
  }
}

void TarReader::read_sparse_map_1x0(std::vector<SparseEntry>& sp) {
  // Go's readGNUSparseMap1x0: newline-terminated decimals in whole 512-byte blocks at the
  // front of the data, read as data (so neither raw nor in the entry's data).
  std::string text;
  size_t pos = 0;
  int64_t newlines = 0;
  auto feed = [&](int64_t want) {
    while (newlines < want) {
      if (want - newlines > remaining_) err_eof();  // the data cannot hold them
      uint8_t b[512];
      for (size_t got = 0; got < sizeof b;) {
        size_t r = read_dense(b + got, sizeof b - got);
        if (r == 0) err_eof();
        got += r;
      }
      text.append(reinterpret_cast<const char*>(b), sizeof b);
      newlines += std::count(b, b + sizeof b, '\n');
    }
  };
  auto token = [&](int64_t* out) {
    --newlines;
    size_t nl = text.find('\n', pos);
    bool ok = parse_decimal(text.substr(pos, nl - pos), out);
    pos = nl + 1;
    return ok;
  };
  feed(1);
  int64_t n;
  if (!token(&n) || n < 0 || n > INT64_MAX / 2) err_header();
  feed(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    SparseEntry e{0, 0};
    bool ok1 = token(&e.offset);
    bool ok2 = token(&e.length);
    if (!ok1 || !ok2) err_header();
    sp.push_back(e);
  }
}

void TarReader::start_sparse(const TarHeader& h, const std::vector<SparseEntry>& sp) {
  fragments_.clear();
  for (const SparseEntry& e : sp)
    if (e.length > 0) fragments_.push_back(e);
  fragment_ = 0;
  sparse_pos_ = 0;
  sparse_size_ = h.size;
  sparse_ = true;
}

size_t TarReader::read_sparse(uint8_t* buf, const uint8_t** p, size_t n) {
  // Go's sparseFileReader: holes read as zeros, data fragments from the stored data.
  uint64_t left = static_cast<uint64_t>(sparse_size_ - sparse_pos_);
  if (n > left) n = static_cast<size_t>(left);
  size_t done = 0;
  while (done < n) {
    while (fragment_ < fragments_.size() &&
           fragments_[fragment_].offset + fragments_[fragment_].length <= sparse_pos_)
      ++fragment_;
    int64_t want = static_cast<int64_t>(n - done);
    size_t k;
    if (fragment_ < fragments_.size() && sparse_pos_ >= fragments_[fragment_].offset) {
      const SparseEntry& f = fragments_[fragment_];
      size_t w = static_cast<size_t>(std::min(want, f.offset + f.length - sparse_pos_));
      k = buf ? read_dense(buf + done, w) : view_dense(p, w);
      if (k == 0) throw ArchiveError(kErrMissData);
    } else {
      int64_t hole_end =
          fragment_ < fragments_.size() ? fragments_[fragment_].offset : sparse_size_;
      k = static_cast<size_t>(std::min(want, hole_end - sparse_pos_));
      if (buf) {
        std::memset(buf + done, 0, k);
      } else {
        k = std::min(k, sizeof kZeros);
        *p = kZeros;
      }
    }
    done += k;
    sparse_pos_ += static_cast<int64_t>(k);
    if (!buf) break;  // a view is one piece
  }
  if (sparse_pos_ == sparse_size_ && remaining_ > 0) throw ArchiveError(kErrUnrefData);
  return done;
}

size_t TarReader::read(uint8_t* buf, size_t n) {
  if (sparse_) return read_sparse(buf, nullptr, n);
  return read_dense(buf, n);
}

size_t TarReader::read_view(const uint8_t** p, size_t max) {
  if (sparse_) return read_sparse(nullptr, p, max);
  return view_dense(p, max);
}

size_t TarReader::read_dense(uint8_t* buf, size_t n) {
  if (remaining_ <= 0 || n == 0) return 0;
  if (static_cast<int64_t>(n) > remaining_) n = static_cast<size_t>(remaining_);
  size_t avail = end_ - pos_;
  size_t k;
  if (avail > 0) {
    k = std::min(avail, n);
    std::memcpy(buf, buf_.data() + pos_, k);
    pos_ += k;
  } else if (n >= 64 * 1024 && !eof_) {
    k = src_.read(buf, n);  // big reads go straight to the caller's buffer
    if (k == 0) {
      eof_ = true;
      err_eof();
    }
  } else {
    avail = fill(1);
    if (avail == 0) err_eof();
    k = std::min(avail, n);
    std::memcpy(buf, buf_.data() + pos_, k);
    pos_ += k;
  }
  remaining_ -= static_cast<int64_t>(k);
  offset_ += k;
  return k;
}

size_t TarReader::view_dense(const uint8_t** p, size_t max) {
  if (remaining_ <= 0 || max == 0) return 0;
  if (end_ == pos_) {
    if (eof_) err_eof();
    pos_ = end_ = 0;
    size_t r = src_.read(buf_.data(), buf_.size());
    if (r == 0) {
      eof_ = true;
      err_eof();
    }
    end_ = r;
  }
  size_t k = std::min(end_ - pos_, max);
  if (static_cast<int64_t>(k) > remaining_) k = static_cast<size_t>(remaining_);
  *p = buf_.data() + pos_;
  pos_ += k;
  remaining_ -= static_cast<int64_t>(k);
  offset_ += k;
  return k;
}

std::string TarReader::take_raw() {
  std::string r;
  r.swap(raw_);
  return r;
}

void TarReader::drain_to_eof() {
  for (;;) {
    size_t avail = fill(buf_.size());
    if (avail == 0) return;
    consume_raw(avail);
  }
}

size_t TarReader::read_rest(uint8_t* buf, size_t n) {
  size_t avail = end_ - pos_;
  if (avail == 0) {
    if (eof_) return 0;
    size_t r = src_.read(buf, n);
    if (r == 0) eof_ = true;
    offset_ += r;
    return r;
  }
  size_t k = std::min(avail, n);
  std::memcpy(buf, buf_.data() + pos_, k);
  pos_ += k;
  offset_ += k;
  return k;
}

}  // namespace layerstore
