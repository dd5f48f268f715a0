#include "tarsplit/json_util.h"

#include <cstring>

namespace layerstore {
namespace tarsplit {

namespace {
const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const char kHex[] = "0123456789abcdef";

struct DecodeTable {
  int8_t v[256];
  DecodeTable() {
    std::memset(v, -1, sizeof v);
    for (int i = 0; i < 64; ++i) v[static_cast<uint8_t>(kB64[i])] = static_cast<int8_t>(i);
  }
};
const DecodeTable kDec;

// Length of the valid UTF-8 sequence at s[i], 0 if invalid (Go's rules: no overlongs,
// no surrogates, <= U+10FFFF).
size_t utf8_seq(const unsigned char* s, size_t n, size_t i) {
  unsigned char c = s[i];
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (i + len > n) return 0;
  if (s[i + 1] < lo || s[i + 1] > hi) return 0;
  for (size_t k = 2; k < len; ++k)
    if (s[i + k] < 0x80 || s[i + k] > 0xbf) return 0;
  return len;
}
}  // namespace

void base64_encode(const uint8_t* p, size_t n, std::string& out) {
  size_t start = out.size();
  out.resize(start + (n + 2) / 3 * 4);
  char* o = &out[start];
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = uint32_t{p[i]} << 16 | uint32_t{p[i + 1]} << 8 | p[i + 2];
    o[0] = kB64[v >> 18];
    o[1] = kB64[(v >> 12) & 63];
    o[2] = kB64[(v >> 6) & 63];
    o[3] = kB64[v & 63];
    o += 4;
  }
  if (n - i == 1) {
    uint32_t v = uint32_t{p[i]} << 16;
    o[0] = kB64[v >> 18];
    o[1] = kB64[(v >> 12) & 63];
    o[2] = '=';
    o[3] = '=';
  } else if (n - i == 2) {
    uint32_t v = uint32_t{p[i]} << 16 | uint32_t{p[i + 1]} << 8;
    o[0] = kB64[v >> 18];
    o[1] = kB64[(v >> 12) & 63];
    o[2] = kB64[(v >> 6) & 63];
    o[3] = '=';
  }
}

bool base64_decode(const char* p, size_t n, std::string& out) {
  size_t start = out.size();
  out.resize(start + n / 4 * 3);
  size_t produced = 0;
  bool ok = base64_decode_to(p, n, reinterpret_cast<uint8_t*>(&out[start]), &produced);
  out.resize(start + produced);
  return ok;
}

bool base64_decode_to(const char* p, size_t n, uint8_t* o, size_t* out_len) {
  if (n % 4 != 0) return false;
  size_t produced = 0;
  for (size_t i = 0; i < n; i += 4) {
    const unsigned char* q = reinterpret_cast<const unsigned char*>(p + i);
    int a = kDec.v[q[0]], b = kDec.v[q[1]], c = kDec.v[q[2]], d = kDec.v[q[3]];
    if ((a | b | c | d) >= 0) {
      uint32_t v = uint32_t(a) << 18 | uint32_t(b) << 12 | uint32_t(c) << 6 | uint32_t(d);
      o[produced++] = static_cast<uint8_t>(v >> 16);
      o[produced++] = static_cast<uint8_t>(v >> 8);
      o[produced++] = static_cast<uint8_t>(v);
      continue;
    }
    if (i + 4 != n || a < 0 || b < 0) return false;
    if (q[2] == '=' && q[3] == '=') {
      if (b & 15) return false;
      o[produced++] = static_cast<uint8_t>((a << 2) | (b >> 4));
    } else if (c >= 0 && q[3] == '=') {
      if (c & 3) return false;
      o[produced++] = static_cast<uint8_t>((a << 2) | (b >> 4));
      o[produced++] = static_cast<uint8_t>(((b & 15) << 4) | (c >> 2));
    } else {
      return false;
    }
  }
  *out_len = produced;
  return true;
}

bool valid_utf8(const std::string& s) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  for (size_t i = 0; i < n;) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t l = utf8_seq(p, n, i);
    if (l == 0) return false;
    i += l;
  }
  return true;
}

void json_quote(const std::string& s, std::string& out) {
  out.push_back('"');
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c < 0x80) {
      if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&') {
        out.push_back(static_cast<char>(c));
      } else if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else {
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
      }
      ++i;
      continue;
    }
    size_t l = utf8_seq(p, n, i);
    if (l == 0) {  // Go writes U+FFFD for invalid bytes
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (l == 3 && p[i] == 0xe2 && p[i + 1] == 0x80 && (p[i + 2] == 0xa8 || p[i + 2] == 0xa9)) {
      out += p[i + 2] == 0xa8 ? "\\u2028" : "\\u2029";
    } else {
      out.append(reinterpret_cast<const char*>(p + i), l);
    }
    i += l;
  }
  out.push_back('"');
}

std::string go_quote(const std::string& s) {
  std::string out = "\"";
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c >= 0x80) {
      size_t l = utf8_seq(p, n, i);
      if (l == 0) {
        out += "\\x";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
        ++i;
      } else {
        out.append(reinterpret_cast<const char*>(p + i), l);
        i += l;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\a':
        out += "\\a";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\v':
        out += "\\v";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\x";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
  return out;
}

}  // namespace tarsplit
}  // namespace layerstore
