// The tar reader: archives made by GNU tar (gnu, posix/PAX, ustar formats), crafted headers
// (base-256, PAX times and xattrs, legacy '\0' type, global headers), raw accounting that
// gives back every byte, and Go's errors on corrupt or truncated input.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/byte_io.h"
#include "tar/reader.h"

#include "check.h"
#include "test_io.h"

using namespace layerstore;

struct Entry {
  TarHeader h;
  std::string data;
};

static std::string tmpdir;

// Reads every entry; *rebuilt gets raw + data in stream order (must equal the input).
static std::vector<Entry> read_all(const std::string& tar, std::string* rebuilt = nullptr,
                                   size_t chunk = 7777) {
  MemorySource src(tar.data(), tar.size());
  TarReader r(src);
  std::vector<Entry> out;
  std::string all;
  Entry e;
  std::vector<uint8_t> buf(chunk);
  while (r.next(e.h)) {
    all += r.take_raw();
    e.data.clear();
    for (size_t n; (n = r.read(buf.data(), buf.size())) > 0;)
      e.data.append(reinterpret_cast<char*>(buf.data()), n);
    all += e.data;
    all += r.take_raw();
    out.push_back(e);
  }
  r.drain_to_eof();
  all += r.take_raw();
  if (rebuilt) *rebuilt = all;
  return out;
}

static std::string error_of(const std::string& tar) {
  try {
    read_all(tar);
  } catch (const ArchiveError& e) {
    return e.what();
  }
  return "";
}

static const Entry* find(const std::vector<Entry>& es, const std::string& name) {
  for (const auto& e : es)
    if (e.h.name == name) return &e;
  return nullptr;
}

// ---- a minimal header writer for crafted cases ----
static void put_octal(char* f, size_t n, int64_t v) {
  std::snprintf(f, n, "%0*llo", static_cast<int>(n - 1), static_cast<long long>(v));
}
static std::string block(const std::string& name, char type, int64_t size,
                         const std::string& linkname = "", bool ustar = true) {
  char b[512];
  std::memset(b, 0, sizeof b);
  std::memcpy(b, name.data(), std::min<size_t>(name.size(), 100));
  put_octal(b + 100, 8, 0644);
  put_octal(b + 108, 8, 1000);
  put_octal(b + 116, 8, 1000);
  put_octal(b + 124, 12, size);
  put_octal(b + 136, 12, 1600000000);
  b[156] = type;
  std::memcpy(b + 157, linkname.data(), std::min<size_t>(linkname.size(), 100));
  if (ustar) {
    std::memcpy(b + 257, "ustar\0" "00", 8);
    std::memcpy(b + 265, "user", 4);
    std::memcpy(b + 297, "group", 5);
  }
  std::memset(b + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : b) sum += c;
  std::snprintf(b + 148, 8, "%06o", sum);
  return std::string(b, 512);
}
static void rechecksum(std::string& blk, size_t off = 0) {
  std::memset(&blk[off + 148], ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) sum += static_cast<unsigned char>(blk[off + i]);
  std::snprintf(&blk[off + 148], 8, "%06o", sum);
}
static std::string pad(const std::string& data) {
  return data + std::string((512 - data.size() % 512) % 512, '\0');
}
static std::string pax_record(const std::string& k, const std::string& v) {
  std::string body = " " + k + "=" + v + "\n";
  size_t n = body.size() + 1;
  while (std::to_string(n).size() + body.size() != n) ++n;
  return std::to_string(n) + body;
}
static const std::string kEnd(1024, '\0');

// Sparse entries, expanded as Go's archive/tar does: GNU tar's PAX 0.0/0.1/1.0 and old GNU
// 'S' (which keeps its type), with leading/trailing holes and all-hole files; Go's errors
// for maps that are corrupt, truncated or do not match the stored data.
static std::string pax_entry(const std::string& records, const std::string& name, char type,
                             const std::string& stored) {
  return block("PaxHeaders/" + name, 'x', static_cast<int64_t>(records.size())) +
         pad(records) + block(name, type, static_cast<int64_t>(stored.size())) + pad(stored);
}

static void test_sparse() {
  const std::string d = tmpdir + "/sparse";
  sh("mkdir -p " + d);
  // lead: hole then data; trail: data then hole; holes: all hole; mid: data-hole-data.
  sh("cd " + d + " && truncate -s 1000000 holes && printf tail | dd of=lead bs=1 seek=700000 " +
     "status=none && printf head > trail && truncate -s 300000 trail && " +
     "printf AB > mid && printf CD | dd of=mid bs=1 seek=200000 status=none");
  std::string lead = std::string(700000, '\0') + "tail";
  std::string trail = "head" + std::string(300000 - 4, '\0');
  std::string mid = "AB" + std::string(200000 - 2, '\0') + "CD";
  for (const char* fmt : {"--sparse-version=0.0 --format=posix", "--sparse-version=0.1 "
                          "--format=posix", "--sparse-version=1.0 --format=posix",
                          "--format=gnu"}) {
    const std::string out = d + "/out.tar";
    sh("tar --sparse " + std::string(fmt) + " -cf " + out + " -C " + d + " lead trail holes mid");
    const std::string tar = read_file(out);
    for (size_t chunk : {size_t{7777}, size_t{1} << 20}) {
      auto es = read_all(tar, nullptr, chunk);
      CHECK(es.size() == 4);
      const char want_type = std::string(fmt) == "--format=gnu" ? 'S' : '0';
      const Entry* e = find(es, "lead");
      CHECK(e && e->h.typeflag == want_type && e->h.size == 700004 && e->data == lead);
      e = find(es, "trail");
      CHECK(e && e->h.size == 300000 && e->data == trail);
      e = find(es, "holes");
      CHECK(e && e->h.size == 1000000 && e->data == std::string(1000000, '\0'));
      e = find(es, "mid");
      CHECK(e && e->h.size == 200002 && e->data == mid);
    }
    // read_view gives the same bytes (holes from a zero buffer), and remaining() counts
    // logical bytes.
    MemorySource src(tar.data(), tar.size());
    TarReader r(src);
    TarHeader h;
    std::string got;
    while (r.next(h)) {
      if (h.name != "lead") continue;
      CHECK(r.remaining() == 700004);
      const uint8_t* p;
      for (size_t n; (n = r.read_view(&p, 100000)) > 0;)
        got.append(reinterpret_cast<const char*>(p), n);
      CHECK(r.remaining() == 0);
    }
    CHECK(got == lead);
  }

  // Crafted PAX 0.1 / 1.0 entries.
  auto rec01 = [](const std::string& size, const std::string& blocks, const std::string& map) {
    return pax_record("GNU.sparse.size", size) + pax_record("GNU.sparse.numblocks", blocks) +
           pax_record("GNU.sparse.map", map);
  };
  auto es = read_all(pax_entry(rec01("10", "2", "1,2,8,2"), "f", '0', "abcd") + kEnd);
  CHECK(es.size() == 1 && es[0].h.size == 10 &&
        es[0].data == std::string("\0ab\0\0\0\0\0cd", 10));
  // 0.0: offset/numbytes pairs make the map.
  std::string r00 = pax_record("GNU.sparse.size", "4") + pax_record("GNU.sparse.numblocks", "1") +
                    pax_record("GNU.sparse.offset", "2") + pax_record("GNU.sparse.numbytes", "2");
  es = read_all(pax_entry(r00, "f", '0', "xy") + kEnd);
  CHECK(es.size() == 1 && es[0].data == std::string("\0\0xy", 4));
  std::string r00bad =
      pax_record("GNU.sparse.numbytes", "2") + pax_record("GNU.sparse.offset", "2");
  CHECK(error_of(pax_entry(r00bad, "f", '0', "xy") + kEnd) == "archive/tar: invalid tar header");
  // 1.0: the map is in the data; the name and real size come from the records.
  std::string r10 = pax_record("GNU.sparse.major", "1") + pax_record("GNU.sparse.minor", "0") +
                    pax_record("GNU.sparse.name", "real/name") +
                    pax_record("GNU.sparse.realsize", "6");
  es = read_all(pax_entry(r10, "GNUSparseFile.0/name", '0', pad("1\n3\n2\n") + "zz") + kEnd);
  CHECK(es.size() == 1 && es[0].h.name == "real/name" && es[0].h.size == 6 &&
        es[0].data == std::string("\0\0\0zz\0", 6));
  // An unknown version is a plain file.
  std::string r20 = pax_record("GNU.sparse.major", "2") + pax_record("GNU.sparse.minor", "0");
  es = read_all(pax_entry(r20, "f", '0', "abc") + kEnd);
  CHECK(es.size() == 1 && es[0].h.size == 3 && es[0].data == "abc");

  const std::string bad = "archive/tar: invalid tar header";
  CHECK(error_of(pax_entry(rec01("10", "3", "1,2,8,2"), "f", '0', "abcd") + kEnd) == bad);
  CHECK(error_of(pax_entry(rec01("10", "x", "1,2"), "f", '0', "ab") + kEnd) == bad);
  CHECK(error_of(pax_entry(rec01("10", "1", "9,2"), "f", '0', "ab") + kEnd) == bad);  // past size
  CHECK(error_of(pax_entry(rec01("10", "2", "4,2,1,2"), "f", '0', "abcd") + kEnd) == bad);  // order
  CHECK(error_of(pax_entry(rec01("10", "1", "-1,2"), "f", '0', "ab") + kEnd) == bad);
  CHECK(error_of(pax_entry(rec01("x", "1", "1,2"), "f", '0', "ab") + kEnd) == bad);
  CHECK(error_of(pax_entry(rec01("10", "1", "1,2"), "s", '2', "") + kEnd) == bad);  // symlink
  CHECK(error_of(pax_entry(rec01("10", "1", "1,5"), "f", '0', "ab") + kEnd) ==
        "archive/tar: sparse file references non-existent data");
  CHECK(error_of(pax_entry(rec01("10", "1", "1,2"), "f", '0', "abcdef") + kEnd) ==
        "archive/tar: sparse file contains unreferenced data");
  CHECK(error_of(pax_entry(r10, "f", '0', pad("1\n3\nx\n") + "zz") + kEnd) == bad);
  CHECK(error_of(pax_entry(r10, "f", '0', pad("-1\n")) + kEnd) == bad);
  CHECK(error_of(pax_entry(r10, "f", '0', pad("4\n1\n1\n")) + kEnd) == "unexpected EOF");
  CHECK(error_of(pax_entry(r10, "f", '0', "1\n3\n") + kEnd) == "unexpected EOF");
  std::string cut = pax_entry(r10, "f", '0', pad("1\n3\n2\n") + "zz");
  CHECK(error_of(cut.substr(0, cut.size() - 512 - 300)) == "unexpected EOF");  // inside the map

  // Old GNU 'S': a ustar (not GNU) block is refused, as is a missing extension block.
  CHECK(error_of(block("old", 'S', 3) + pad("abc") + kEnd) == bad);
  std::string s = block("old", 'S', 2);
  std::memcpy(&s[257], "ustar  \0", 8);
  put_octal(&s[386], 12, 1);   // offset 1
  put_octal(&s[398], 12, 2);   // length 2
  put_octal(&s[483], 12, 5);   // real size
  rechecksum(s);
  es = read_all(s + pad("xy") + kEnd);
  CHECK(es.size() == 1 && es[0].h.typeflag == 'S' && es[0].h.size == 5 &&
        es[0].data == std::string("\0xy\0\0", 5));
  s[482] = 1;  // "extended": an extension block must follow
  rechecksum(s);
  CHECK(error_of(s) == "unexpected EOF");
}

int main() {
  char tmpl[] = "/tmp/test_tar.XXXXXX";
  tmpdir = mkdtemp(tmpl);
  const std::string d = tmpdir + "/src";
  const std::string longdir = std::string(60, 'd') + "/" + std::string(70, 'e');
  const std::string longname = std::string(120, 'n') + ".txt";
  const std::string longtarget = std::string(150, 't');
  sh("mkdir -p " + d + "/sub " + d + "/" + longdir);
  sh("printf 'hello\\n' > " + d + "/a.txt");
  sh("head -c 70000 /dev/urandom > " + d + "/sub/big.bin");
  sh(": > " + d + "/empty");
  sh("printf 'x' > " + d + "/" + longname);
  sh("printf 'deep' > " + d + "/" + longdir + "/f");
  sh("printf 'latin1' > " + d + "/$(printf 'file-\\344')");
  sh("ln -s a.txt " + d + "/link");
  sh("ln -s " + longtarget + " " + d + "/longlink");
  sh("ln " + d + "/a.txt " + d + "/hard");
  sh("mkfifo " + d + "/fifo");
  sh("touch -d '2020-01-02 03:04:05.123456789' " + d + "/a.txt");

  for (const char* format : {"gnu", "posix", "ustar"}) {
    std::string tarfile = tmpdir + "/" + format + ".tar";
    std::string excl = std::string(format) == "ustar" ? " --exclude=" + longname +
                                                             " --exclude=longlink"
                                                       : "";
    sh("tar --format=" + std::string(format) + excl + " -cf " + tarfile + " -C " + d + " .");
    std::string tar = read_file(tarfile);
    std::string rebuilt;
    auto es = read_all(tar, &rebuilt);
    CHECK(rebuilt == tar);  // raw accounting: every byte comes back, in order
    std::string rebuilt2;
    read_all(tar, &rebuilt2, 1 << 20);  // big reads take the direct path
    CHECK(rebuilt2 == tar);
    {  // zero-copy reads give the same data
      MemorySource src(tar.data(), tar.size());
      TarReader r(src);
      TarHeader h;
      size_t i = 0;
      while (r.next(h)) {
        std::string got;
        const uint8_t* p;
        for (size_t n; (n = r.read_view(&p, 5000)) > 0;)
          got.append(reinterpret_cast<const char*>(p), n);
        CHECK(i < es.size() && got == es[i].data);
        ++i;
      }
      CHECK(i == es.size());
    }
    const Entry* a = find(es, "./a.txt");
    const Entry* hard = find(es, "./hard");
    CHECK(a && hard);
    if (!a || !hard) continue;
    // a.txt and hard share an inode: whichever comes first holds the data, the other links.
    const Entry* reg = a->h.typeflag == '0' ? a : hard;
    const Entry* lnk = reg == a ? hard : a;
    CHECK(reg->data == "hello\n" && reg->h.typeflag == '0' && reg->h.size == 6);
    CHECK(lnk->h.typeflag == '1' && lnk->data.empty() && lnk->h.linkname == reg->h.name);
    CHECK(a->h.mtime.sec == 1577934245);
    if (std::string(format) == "posix") CHECK(a->h.mtime.nsec == 123456789);
    const Entry* big = find(es, "./sub/big.bin");
    CHECK(big && big->data.size() == 70000 && big->data == read_file(d + "/sub/big.bin"));
    CHECK(find(es, "./sub/") && find(es, "./sub/")->h.typeflag == '5');
    CHECK(find(es, "./empty") && find(es, "./empty")->h.size == 0);
    CHECK(find(es, "./link") && find(es, "./link")->h.typeflag == '2' &&
          find(es, "./link")->h.linkname == "a.txt");
    CHECK(find(es, "./fifo") && find(es, "./fifo")->h.typeflag == '6');
    CHECK(find(es, "./file-\xe4") && find(es, "./file-\xe4")->data == "latin1");
    CHECK(find(es, "./" + longdir + "/f") && find(es, "./" + longdir + "/f")->data == "deep");
    if (std::string(format) != "ustar") {
      CHECK(find(es, "./" + longname) && find(es, "./" + longname)->data == "x");
      CHECK(find(es, "./longlink") && find(es, "./longlink")->h.linkname == longtarget);
    }
    for (const auto& e : es) CHECK(e.h.mtime.set && e.h.uname == "root");
  }

  // ---- crafted headers ----
  {
    // PAX: path, sub-second and negative times, xattrs, big uid, size override; a global header.
    std::string pax = pax_record("path", "pax/long-\xff-name") + pax_record("mtime", "1.5") +
                      pax_record("atime", "-1.25") + pax_record("uid", "4000000000") +
                      pax_record("SCHILY.xattr.user.foo", "bar") +
                      pax_record("SCHILY.xattr.security.capability", std::string("\x01\0\x02", 3)) +
                      pax_record("uname", "");
    std::string g = pax_record("comment", "hi");
    std::string tar = block("pax_global_header", 'g', static_cast<int64_t>(g.size())) + pad(g) +
                      block("PaxHeaders/x", 'x', static_cast<int64_t>(pax.size())) + pad(pax) +
                      block("short", '0', 3) + pad("abc") + kEnd;
    std::string rebuilt;
    auto es = read_all(tar, &rebuilt);
    CHECK(rebuilt == tar);
    CHECK(es.size() == 2);
    CHECK(es[0].h.typeflag == 'g' && es[0].h.name == "pax_global_header" && es[0].h.size == 0);
    CHECK(es[1].h.name == "pax/long-\xff-name");
    CHECK(es[1].h.mtime.sec == 1 && es[1].h.mtime.nsec == 500000000);
    CHECK(es[1].h.atime.set && es[1].h.atime.sec == -2 && es[1].h.atime.nsec == 750000000);
    CHECK(es[1].h.uid == 4000000000LL && es[1].h.uname == "user");  // empty PAX value ignored
    CHECK(es[1].h.xattrs.size() == 2 && es[1].h.xattrs[0].first == "user.foo" &&
          es[1].h.xattrs[0].second == "bar" &&
          es[1].h.xattrs[1].second == std::string("\x01\0\x02", 3));
    CHECK(es[1].data == "abc");
  }
  {
    // A PAX time at the bottom of int64 with a negative fraction: Go's time.Unix borrows a
    // second and wraps around to the top (no signed overflow here).
    std::string pax = pax_record("mtime", "-9223372036854775808.5") +
                      pax_record("atime", "-9223372036854775808");
    auto es = read_all(block("PaxHeaders/t", 'x', static_cast<int64_t>(pax.size())) + pad(pax) +
                       block("t", '0', 0) + kEnd);
    CHECK(es.size() == 1 && es[0].h.mtime.sec == INT64_MAX && es[0].h.mtime.nsec == 500000000);
    CHECK(es[0].h.atime.sec == INT64_MIN && es[0].h.atime.nsec == 0);
  }
  {
    // base-256 size and uid; legacy '\0' type with and without a trailing slash; V7 header.
    std::string b1 = block("bin", '0', 0);
    std::memset(&b1[124], 0, 12);
    b1[124] = static_cast<char>(0x80);
    b1[135] = 5;  // size 5 in base-256
    std::memset(&b1[108], 0, 8);
    b1[108] = static_cast<char>(0x80);
    b1[112] = 1;  // uid 2^24 in base-256
    rechecksum(b1);
    std::string b2 = block("olddir/", '\0', 0), b3 = block("oldfile", '\0', 2, "", false);
    std::string tar = b1 + pad("12345") + b2 + b3 + pad("ok") + kEnd;
    auto es = read_all(tar);
    CHECK(es.size() == 3);
    CHECK(es.size() == 3 && es[0].h.size == 5 && es[0].data == "12345" && es[0].h.uid == (1 << 24));
    CHECK(es.size() == 3 && es[1].h.typeflag == '5');
    CHECK(es.size() == 3 && es[2].h.typeflag == '0' && es[2].data == "ok" && es[2].h.uname.empty());
  }
  {
    // Header-only types carry no data even with a size; skipped data is not raw.
    std::string tar = block("sym", '2', 700, "target") + block("f", '0', 600) +
                      pad(std::string(600, 'z')) + kEnd + std::string(3000, '\0');
    MemorySource src(tar.data(), tar.size());
    TarReader r(src);
    TarHeader h;
    CHECK(r.next(h) && h.typeflag == '2' && h.size == 700 && r.remaining() == 0);
    CHECK(r.next(h) && h.name == "f" && r.remaining() == 600);
    std::string raw = r.take_raw();
    CHECK(raw.size() == 1024);
    CHECK(!r.next(h));  // unread data skipped
    CHECK(r.take_raw().size() == 424 + 1024);
    uint8_t buf[8192];
    size_t rest = 0;
    for (size_t n; (n = r.read_rest(buf, sizeof buf)) > 0;) rest += n;
    CHECK(rest == 3000);
    CHECK(r.offset() == tar.size());
  }
  {
    // Empty input and a lone zero block are clean ends; junk after the end is raw.
    CHECK(read_all("").empty() && error_of("").empty());
    CHECK(read_all(std::string(512, '\0')).empty());
    std::string rebuilt;
    std::string tar = block("a", '0', 1) + pad("x") + kEnd + "JUNK";
    CHECK(read_all(tar, &rebuilt).size() == 1 && rebuilt == tar);
    // A missing final padding is an end too (Go's tryReadFull returns io.EOF).
    CHECK(read_all(block("a", '0', 1) + "x").size() == 1);
  }
  test_sparse();  // sparse entries: expanded as Go does
  // ---- errors, as Go words them ----
  {
    std::string good = block("a", '0', 1000) + pad(std::string(1000, 'q')) + kEnd;
    CHECK(error_of(good.substr(0, 300)) == "unexpected EOF");           // inside a header
    CHECK(error_of(good.substr(0, 512 + 10)) == "unexpected EOF");      // inside the data
    std::string bad = good;
    bad[0] = 'b';  // checksum no longer matches
    CHECK(error_of(bad) == "archive/tar: invalid tar header");
    CHECK(error_of(std::string(2000, 'j')) == "archive/tar: invalid tar header");
    CHECK(error_of(std::string(512, '\0') + block("a", '0', 0)) ==
          "archive/tar: invalid tar header");  // zero block, then a header
    std::string badsize = block("a", '0', 0);
    std::memcpy(&badsize[124], "12345678x01", 11);
    rechecksum(badsize);
    CHECK(error_of(badsize + kEnd) == "archive/tar: invalid tar header");
    std::string badpax = "5 a\n";
    CHECK(error_of(block("x", 'x', 4) + pad(badpax) + block("a", '0', 0) + kEnd) ==
          "archive/tar: invalid tar header");
    std::string neg = block("a", '0', 0);  // negative size for a regular file
    std::memset(&neg[124], 0xff, 12);
    rechecksum(neg);
    CHECK(error_of(neg + kEnd) == "archive/tar: invalid tar header");
    CHECK(error_of(block("L", 'L', 2 << 20) + std::string(2 << 20, 'a')) ==
          "archive/tar: header field too long");
    CHECK(error_of(block("x", 'x', 100) + "10 a=b") == "unexpected EOF");
  }

  // ---- mutation fuzzing: any damage is an ArchiveError or a clean read, never a crash ----
  {
    std::string tar = read_file(tmpdir + "/posix.tar");
    std::mt19937 rng(12345);
    int errors = 0;
    for (int i = 0; i < 3000; ++i) {
      std::string m = tar;
      int flips = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < flips; ++k) {
        size_t at = rng() % 4096;  // the headers live at the front
        m[at] = static_cast<char>(rng());
      }
      if (rng() % 4 == 0) m.resize(rng() % m.size());
      try {
        std::string rebuilt;
        read_all(m, &rebuilt);
        CHECK(rebuilt == m);  // whatever parses is still accounted byte for byte
      } catch (const ArchiveError&) {
        ++errors;
      }
    }
    CHECK(errors > 100);
  }

  sh("rm -rf " + tmpdir);
  if (failures) std::fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
