// Go archive/tar Writer header layout (go1.19, as vendored into containers-storage 1.43).
#include "tar/writer.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "tar/clean_path.h"

namespace layerstore {

namespace {

constexpr size_t kBlock = 512;
constexpr size_t kBufSize = 1 << 20;

// Field offsets and sizes of a USTAR header block.
constexpr size_t kName = 0, kNameLen = 100;
constexpr size_t kMode = 100, kUid = 108, kGid = 116, kNumLen = 8;
constexpr size_t kSize = 124, kMtime = 136, kBigNumLen = 12;
constexpr size_t kChksum = 148;
constexpr size_t kType = 156;
constexpr size_t kLink = 157;
constexpr size_t kMagic = 257;
constexpr size_t kUname = 265, kGname = 297, kIdNameLen = 32;
constexpr size_t kDevMajor = 329, kDevMinor = 337;
constexpr size_t kPrefix = 345, kPrefixLen = 155;

enum Format : unsigned { kUSTAR = 1, kPAX = 2, kGNU = 4 };

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

bool has_nul(const std::string& s) { return s.find('\0') != std::string::npos; }

// Go's toASCII: keeps the runes below 0x80 other than NUL. Bytes >= 0x80 are never part of
// an ASCII rune, whatever the encoding around them, so this is a byte filter.
std::string to_ascii(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s)
    if (c < 0x80 && c != 0) out.push_back(static_cast<char>(c));
  return out;
}

bool fits_in_octal(size_t n, int64_t x) {
  unsigned oct_bits = static_cast<unsigned>(n - 1) * 3;
  return x >= 0 && (n >= 22 || x < (int64_t{1} << oct_bits));
}

bool fits_in_base256(size_t n, int64_t x) {
  if (n >= 9) return true;
  unsigned bin_bits = static_cast<unsigned>(n - 1) * 8;
  return -(int64_t{1} << bin_bits) <= x && x < (int64_t{1} << bin_bits);
}

// Go's formatter.formatString: copy, NUL-terminate when room, and never leave a
// truncated name ending in '/'.
void format_string(uint8_t* b, size_t len, const std::string& s) {
  std::memcpy(b, s.data(), std::min(len, s.size()));
  if (s.size() < len) b[s.size()] = 0;
  if (s.size() > len && b[len - 1] == '/') {
    size_t n = len - 1;
    while (n > 0 && s[n - 1] == '/') --n;
    b[n] = 0;
  }
}

// Go's formatter.formatOctal: zero-padded, leaving room for a NUL; 0 when it does not fit.
void format_octal(uint8_t* b, size_t len, int64_t x) {
  if (!fits_in_octal(len, x)) x = 0;
  char digits[32];
  int nd = 0;
  uint64_t v = static_cast<uint64_t>(x);
  do {
    digits[nd++] = static_cast<char>('0' + (v & 7));
    v >>= 3;
  } while (v != 0);
  std::string s;
  if (static_cast<size_t>(nd) + 1 < len) s.assign(len - 1 - static_cast<size_t>(nd), '0');
  for (int i = nd - 1; i >= 0; --i) s.push_back(digits[i]);
  format_string(b, len, s);
}

void set_format_and_checksum(uint8_t* blk) {
  std::memcpy(blk + kMagic, "ustar\0" "00", 8);
  unsigned sum = 0;
  for (size_t i = 0; i < kBlock; ++i)
    sum += (i >= kChksum && i < kChksum + 8) ? ' ' : blk[i];
  format_octal(blk + kChksum, 7, sum);
  blk[kChksum + 7] = ' ';
}

// Go's splitUSTARPath.
bool split_ustar_path(const std::string& name, std::string* prefix, std::string* suffix) {
  size_t length = name.size();
  if (length <= kNameLen || !is_ascii(name)) return false;
  if (length > kPrefixLen + 1) {
    length = kPrefixLen + 1;
  } else if (name[length - 1] == '/') {
    --length;
  }
  size_t i = name.rfind('/', length == 0 ? 0 : length - 1);
  if (i == std::string::npos || i == 0) return false;
  size_t nlen = name.size() - i - 1;
  size_t plen = i;
  if (nlen > kNameLen || nlen == 0 || plen > kPrefixLen) return false;
  *prefix = name.substr(0, i);
  *suffix = name.substr(i + 1);
  return true;
}

bool is_header_only(char flag) {
  switch (flag) {
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
      return true;
    default:
      return false;
  }
}

std::string pax_header_name(const std::string& real_name) {
  size_t slash = real_name.rfind('/');
  std::string dir = slash == std::string::npos ? "" : real_name.substr(0, slash + 1);
  std::string file = slash == std::string::npos ? real_name : real_name.substr(slash + 1);
  std::string joined;
  for (const std::string& part : {dir, std::string("PaxHeaders.0"), file}) {
    if (part.empty()) continue;
    if (!joined.empty()) joined.push_back('/');
    joined += part;
  }
  return clean_path(joined);
}

// The V7 + USTAR fields common to the USTAR and PAX main headers.
void template_v7_plus(uint8_t* blk, const TarHeader& h, int64_t mtime, bool ascii_only) {
  auto str = [&](size_t off, size_t len, const std::string& s) {
    format_string(blk + off, len, ascii_only ? to_ascii(s) : s);
  };
  blk[kType] = static_cast<uint8_t>(h.typeflag);
  str(kName, kNameLen, h.name);
  str(kLink, kNameLen, h.linkname);
  format_octal(blk + kMode, kNumLen, h.mode);
  format_octal(blk + kUid, kNumLen, h.uid);
  format_octal(blk + kGid, kNumLen, h.gid);
  format_octal(blk + kSize, kBigNumLen, h.size);
  format_octal(blk + kMtime, kBigNumLen, mtime);
  str(kUname, kIdNameLen, h.uname);
  str(kGname, kIdNameLen, h.gname);
  format_octal(blk + kDevMajor, kNumLen, h.devmajor);
  format_octal(blk + kDevMinor, kNumLen, h.devminor);
}

}  // namespace

std::string format_pax_record(const std::string& key, const std::string& value) {
  const size_t padding = 3;  // ' ', '=' and '\n'
  size_t size = key.size() + value.size() + padding;
  size += std::to_string(size).size();
  std::string record = std::to_string(size) + " " + key + "=" + value + "\n";
  if (record.size() != size) {
    size = record.size();
    record = std::to_string(size) + " " + key + "=" + value + "\n";
  }
  return record;
}

TarWriter::TarWriter(ByteSink& out) : out_(out), buf_(kBufSize) {}

void TarWriter::flush() {
  if (used_ == 0) return;
  out_.write(buf_.data(), used_);
  used_ = 0;
}

void TarWriter::put(const uint8_t* p, size_t n) {
  written_ += n;
  if (n >= buf_.size() / 2) {
    flush();
    out_.write(p, n);
    return;
  }
  if (used_ + n > buf_.size()) flush();
  std::memcpy(buf_.data() + used_, p, n);
  used_ += n;
}

void TarWriter::put_zeros(size_t n) {
  static const uint8_t zeros[kBlock] = {};
  while (n > 0) {
    size_t k = std::min(n, kBlock);
    put(zeros, k);
    n -= k;
  }
}

void TarWriter::finish_entry() {
  // Go would report "missed writing N bytes"; a file that shrank while being read is
  // zero-filled instead so the archive stays well formed.
  if (remaining_ > 0) put_zeros(static_cast<size_t>(remaining_));
  remaining_ = 0;
  put_zeros(pad_);
  pad_ = 0;
}

bool TarWriter::write_header(const TarHeader& in) {
  finish_entry();
  TarHeader h = in;
  if (h.typeflag == '\0') h.typeflag = (!h.name.empty() && h.name.back() == '/') ? '5' : '0';

  // Format unknown: round ModTime to the second; AccessTime and ChangeTime are dropped.
  int64_t mtime = 0;
  bool mtime_zero = !h.mtime.set;
  if (h.mtime.set) mtime = h.mtime.sec + (h.mtime.nsec >= 500000000 ? 1 : 0);

  unsigned format = kUSTAR | kPAX | kGNU;
  std::map<std::string, std::string> pax;

  auto verify_string = [&](const std::string& s, size_t size, const char* pax_key) {
    const bool too_long = s.size() > size;
    const std::string key = pax_key;
    const bool allow_long_gnu = key == "path" || key == "linkpath";
    if (has_nul(s) || (too_long && !allow_long_gnu)) format &= ~kGNU;
    if (!is_ascii(s) || too_long) {
      std::string p, q;
      if (key != "path" || !split_ustar_path(s, &p, &q)) format &= ~kUSTAR;
      pax[key] = s;
    }
  };
  auto verify_numeric = [&](int64_t n, size_t size, const char* pax_key) {
    if (!fits_in_base256(size, n)) format &= ~kGNU;
    if (!fits_in_octal(size, n)) {
      format &= ~kUSTAR;
      if (pax_key == nullptr) {
        format &= ~kPAX;
      } else {
        pax[pax_key] = std::to_string(n);
      }
    }
  };

  verify_string(h.name, kNameLen, "path");
  verify_string(h.linkname, kNameLen, "linkpath");
  verify_string(h.uname, kIdNameLen, "uname");
  verify_string(h.gname, kIdNameLen, "gname");
  verify_numeric(h.mode, kNumLen, nullptr);
  verify_numeric(h.uid, kNumLen, "uid");
  verify_numeric(h.gid, kNumLen, "gid");
  verify_numeric(h.size, kBigNumLen, "size");
  verify_numeric(h.devmajor, kNumLen, nullptr);
  verify_numeric(h.devminor, kNumLen, nullptr);
  if (!mtime_zero) {
    if (!fits_in_base256(kBigNumLen, mtime)) format &= ~kGNU;
    if (!fits_in_octal(kBigNumLen, mtime)) {
      format &= ~kUSTAR;
      pax["mtime"] = std::to_string(mtime);
    }
  }

  switch (h.typeflag) {
    case '0':
    case '3':
    case '4':
    case '6':
    case 'S':
      if (!h.name.empty() && h.name.back() == '/') return false;
      break;
    case 'x':
    case 'L':
    case 'K':
    case 'g':
      return false;  // not written by this writer
    default:
      break;
  }
  if (!is_header_only(h.typeflag) && h.size < 0) return false;

  if (!h.xattrs.empty()) {
    for (const auto& kv : h.xattrs) pax.emplace("SCHILY.xattr." + kv.first, kv.second);
    format &= kPAX;
  }
  for (const auto& kv : pax) {
    if (kv.first.empty() || kv.first.find('=') != std::string::npos) return false;
    const bool string_key = kv.first == "path" || kv.first == "linkpath" ||
                            kv.first == "uname" || kv.first == "gname";
    if (string_key ? has_nul(kv.second) : has_nul(kv.first)) return false;
  }

  uint8_t blk[kBlock];
  if (format & kUSTAR) {
    std::string prefix, suffix;
    TarHeader main = h;
    if (split_ustar_path(h.name, &prefix, &suffix)) main.name = suffix;
    std::memset(blk, 0, kBlock);
    template_v7_plus(blk, main, mtime, false);
    format_string(blk + kPrefix, kPrefixLen, prefix);
  } else if (format & kPAX) {
    std::string data;
    for (const auto& kv : pax) data += format_pax_record(kv.first, kv.second);
    if (!pax.empty()) {
      std::string name = to_ascii(pax_header_name(h.name));
      if (name.size() > kNameLen) name.resize(kNameLen);
      while (!name.empty() && name.back() == '/') name.pop_back();
      uint8_t ext[kBlock] = {};
      ext[kType] = 'x';
      format_string(ext + kName, kNameLen, name);
      format_octal(ext + kMode, kNumLen, 0);
      format_octal(ext + kUid, kNumLen, 0);
      format_octal(ext + kGid, kNumLen, 0);
      format_octal(ext + kSize, kBigNumLen, static_cast<int64_t>(data.size()));
      format_octal(ext + kMtime, kBigNumLen, 0);
      set_format_and_checksum(ext);
      put(ext, kBlock);
      put(reinterpret_cast<const uint8_t*>(data.data()), data.size());
      put_zeros((kBlock - data.size() % kBlock) % kBlock);
    }
    std::memset(blk, 0, kBlock);
    template_v7_plus(blk, h, mtime, true);
  } else {
    return false;  // only GNU could encode it; not produced for layer contents
  }
  set_format_and_checksum(blk);
  put(blk, kBlock);

  const int64_t data_size = is_header_only(h.typeflag) ? 0 : h.size;
  remaining_ = data_size;
  pad_ = static_cast<size_t>((kBlock - static_cast<uint64_t>(data_size) % kBlock) % kBlock);
  return true;
}

void TarWriter::write_data(const uint8_t* p, size_t n) {
  size_t k = static_cast<size_t>(std::min<int64_t>(remaining_, static_cast<int64_t>(n)));
  if (k == 0) return;
  put(p, k);
  remaining_ -= static_cast<int64_t>(k);
}

void TarWriter::close() {
  if (closed_) return;
  closed_ = true;
  finish_entry();
  put_zeros(2 * kBlock);
  flush();
}

}  // namespace layerstore
