// tar-split: the packer's exact JSON (Go encoding/json), the duplicate-path rule, Go's
// filepath.Clean, and disassemble -> assemble round trips of GNU tar archives, including
// changed and missing files, both tar-split flavours, multi-member gzip and overlay roots.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <algorithm>
#include <string>
#include <vector>

#include "compress/compress.h"
#include "compress/decompress.h"
#include "digest/crc64.h"
#include "tar/clean_path.h"
#include "tarsplit/assembler.h"
#include "tarsplit/disassembler.h"
#include "tarsplit/packer.h"

#include "check.h"
#include "test_io.h"

using namespace layerstore;

static std::string tmpdir;

static std::string gunzip(const std::string& gz) {
  auto d = Decompressor::create(Compression::kGzip);
  StringSink out;
  d->feed(reinterpret_cast<const uint8_t*>(gz.data()), gz.size(), out);
  d->finish(out);
  return out.data;
}
static std::string gzip_tool(const std::string& data) {
  write_file(tmpdir + "/gzin", data);
  sh("gzip -c < " + tmpdir + "/gzin > " + tmpdir + "/gzout");
  return read_file(tmpdir + "/gzout");
}

// tar bytes -> tar-split gzip; `read_data` false leaves the data for the disassembler.
static std::string disassemble(const std::string& tar, bool read_data = true) {
  MemorySource src(tar.data(), tar.size());
  StringSink gz;
  TarSplitPacker packer(gz);
  Disassembler d(src, packer);
  TarHeader h;
  uint8_t buf[3000];
  const uint8_t* view;
  bool zero_copy = false;
  while (d.next(h)) {
    if (read_data && zero_copy)
      while (d.read_view(&view, 4096) > 0) {
      }
    else if (read_data)
      while (d.read(buf, sizeof buf) > 0) {
      }
    zero_copy = !zero_copy;  // alternate the two ways of reading
  }
  d.finish();
  packer.finish();
  return gz.data;
}

static int g_threads = 1;  // assemble's file readers: 0 = one per CPU, 1 = serial
// Assemble into the parallel gzip sink, which lends its blocks: files are read straight into
// them (the serial path) and segments longer than the room left go through write().
static bool g_gzip = false;

static std::string assemble_to_string(const std::string& ts_gz,
                                      const std::vector<std::string>& roots) {
  MemorySource src(ts_gz.data(), ts_gz.size());
  RootsFileGetter files(roots);
  StringSink out;
  if (!g_gzip) {
    assemble(src, files, out, g_threads);
    return out.data;
  }
  std::unique_ptr<ByteSink> gz = make_compressing_sink(Compression::kGzip, out, -1, 2);
  assemble(src, files, *gz, g_threads);
  gz->close();
  return gunzip(out.data);
}

template <class E>
static std::string error_of(const std::string& ts_gz, const std::vector<std::string>& roots) {
  try {
    assemble_to_string(ts_gz, roots);
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

int main() {
  char tmpl[] = "/tmp/test_tarsplit.XXXXXX";
  tmpdir = mkdtemp(tmpl);

  // ---- the packer's exact bytes ----
  {
    StringSink gz;
    TarSplitPacker p(gz);
    p.add_segment(reinterpret_cast<const uint8_t*>("abc"), 3);
    p.add_file("a<b>&c\"\\\n\x01\u2028", 3, true, crc64_iso_update(0, "foo", 3));
    p.add_file("file-\xe4", 0, false, 0);
    p.add_segment(nullptr, 0);
    p.add_file("", -5, true, 0);
    bool dup = false;
    try {
      p.add_file("./file-\xe4/", 1, true, 0);
    } catch (const ArchiveError& e) {
      dup = std::string(e.what()) == "duplicates of file paths not supported";
    }
    CHECK(dup);
    p.finish();
    CHECK(gz.data.substr(0, 10) == std::string("\x1f\x8b\x08\x00\x00\x09\x6e\x88\x04\xff", 10));
    CHECK(gunzip(gz.data) ==
          "{\"type\":2,\"payload\":\"YWJj\",\"position\":0}\n"
          "{\"type\":1,\"name\":\"a\\u003cb\\u003e\\u0026c\\\"\\\\\\n\\u0001\\u2028\",\"size\":3,"
          "\"payload\":\"PDwwMAAAAAA=\",\"position\":1}\n"
          "{\"type\":1,\"name_raw\":\"ZmlsZS3k\",\"payload\":null,\"position\":2}\n"
          "{\"type\":2,\"payload\":\"\",\"position\":3}\n"
          "{\"type\":1,\"size\":-5,\"payload\":\"AAAAAAAAAAA=\",\"position\":4}\n");
  }
  // ---- filepath.Clean ----
  CHECK(clean_path("") == ".");
  CHECK(clean_path("./a/") == "a");
  CHECK(clean_path("a//b/./c/..") == "a/b");
  CHECK(clean_path("/../x") == "/x");
  CHECK(clean_path("../x") == "../x");
  CHECK(clean_path("a/../../b") == "../b");
  CHECK(clean_path("/") == "/");
  CHECK(clean_path("..") == "..");
  CHECK(clean_path("a/b/../c") == "a/c");  // not "a//c"
  CHECK(clean_path("a/b/..") == "a");
  CHECK(clean_path("../x/..") == "..");

  // ---- round trips of GNU tar archives ----
  const std::string d = tmpdir + "/root";
  sh("mkdir -p " + d + "/sub/deeper " + d + "/" + std::string(120, 'L'));
  sh("printf 'hello\\n' > " + d + "/a.txt");
  sh("head -c 3000000 /dev/urandom > " + d + "/sub/big.bin");
  sh(": > " + d + "/empty");
  sh("printf 'x' > " + d + "/" + std::string(120, 'L') + "/" + std::string(110, 'n'));
  sh("printf 'latin1' > " + d + "/$(printf 'file-\\344')");
  sh("printf 'html' > '" + d + "/a<b>&c'");
  sh("ln -s a.txt " + d + "/link");
  sh("ln " + d + "/a.txt " + d + "/sub/hard");
  sh("mkfifo " + d + "/fifo");
  for (const char* format : {"gnu", "posix", "posix-serial", "posix-4-threads", "posix-gzip"}) {
    g_threads = std::string(format) == "posix-serial"      ? 1
                : std::string(format) == "posix-4-threads" ? 4
                : std::string(format) == "posix-gzip"      ? 1
                                                           : 0;
    g_gzip = std::string(format) == "posix-gzip";
    if (std::string(format).rfind("posix", 0) == 0) format = "posix";
    std::string tarfile = tmpdir + "/t.tar";
    sh("tar --format=" + std::string(format) + " -cf " + tarfile + " -C " + d + " .");
    std::string tar = read_file(tarfile);
    CHECK(tar.size() % 10240 == 0);  // GNU tar's record padding, kept as trailing segments
    for (bool read_data : {true, false}) {
      std::string ts = disassemble(tar, read_data);
      CHECK(assemble_to_string(ts, {d}) == tar);
      // Junk after the archive is kept, in segments of at most 1 MiB.
      std::string junk = tar + std::string(3 << 20, 'J');
      std::string ts2 = disassemble(junk, read_data);
      CHECK(assemble_to_string(ts2, {d}) == junk);
      std::string json = gunzip(ts2);
      size_t longest = 0, segments = 0;
      for (size_t at = 0; (at = json.find("\"payload\":\"", at)) != std::string::npos; ++segments) {
        at += 11;
        longest = std::max(longest, json.find('"', at) - at);
      }
      CHECK(longest == 4 * ((1 << 20) + 2) / 3);  // base64 of exactly 1 MiB, no more
      CHECK(segments > 3);
    }
    std::string ts = disassemble(tar);
    std::string json = gunzip(ts);
    // Old tar-split flavour (trailing empty segment) and a multi-member gzip read the same.
    size_t n_lines = 0;
    for (char c : json) n_lines += c == '\n';
    std::string old = json + "{\"type\":2,\"payload\":\"\",\"position\":" +
                      std::to_string(n_lines) + "}\n";
    CHECK(assemble_to_string(gzip_tool(old), {d}) == tar);
    size_t half = json.find('\n', json.size() / 2) + 1;
    CHECK(assemble_to_string(gzip_tool(json.substr(0, half)) + gzip_tool(json.substr(half)),
                             {d}) == tar);
    // Keys in another order, whitespace between objects: Go's decoder takes them.
    std::string reordered =
        "  {\"position\":0,\"payload\":\"YWJj\",\"type\":2, \"x\":[1,{\"y\":\"}\"}]}\n\n";
    CHECK(assemble_to_string(gzip_tool(reordered), {d}) == "abc");
  }
  std::string tar = read_file(tmpdir + "/t.tar");
  std::string ts = disassemble(tar);
  const std::string upper = tmpdir + "/upper";
  const std::string big = read_file(d + "/sub/big.bin");
  // (a.txt and sub/hard are one inode: whichever the tar lists first carries the data.)
  auto changed_msg = [&](const std::string& e) {
    return e == "file integrity checksum failed for \"./a.txt\"" ||
           e == "file integrity checksum failed for \"./sub/hard\"";
  };
  g_gzip = false;
  for (int threads : {1, 0, -1}) {  // the serial, parallel and gzip paths behave the same
    g_threads = threads < 0 ? 1 : threads;
    g_gzip = threads < 0;
    // Overlay: the upper root wins, lower roots fill in.
    sh("rm -rf " + upper + " && mkdir -p " + upper + "/sub");
    sh("printf 'hello\\n' > " + upper + "/a.txt");
    CHECK(assemble_to_string(ts, {upper, d}) == tar);
    // A changed file is a checksum error naming it, never a different tarball.
    sh("printf 'HELLO\\n' > " + upper + "/a.txt && cp " + upper + "/a.txt " + upper + "/sub/hard");
    CHECK(changed_msg(error_of<ChecksumError>(ts, {upper, d})));
    sh("printf 'hello\\n!' > " + upper + "/a.txt && cp " + upper + "/a.txt " + upper +
       "/sub/hard");
    CHECK(changed_msg(error_of<ChecksumError>(ts, {upper, d})));  // grown
    // A big file (3 MB: read in 1 MiB pieces by the parallel path) that changed in its
    // first or last piece, shrank or grew by one byte.
    const std::string big_changed = "file integrity checksum failed for \"./sub/big.bin\"";
    auto flipped = [&](size_t at) {  // one bit of byte `at` changed
      std::string changed = big;
      changed[at] = static_cast<char>(changed[at] ^ 1);
      return changed;
    };
    write_file(d + "/sub/big.bin", flipped(100));
    CHECK(error_of<ChecksumError>(ts, {d}) == big_changed);
    write_file(d + "/sub/big.bin", flipped(big.size() - 1));
    CHECK(error_of<ChecksumError>(ts, {d}) == big_changed);
    write_file(d + "/sub/big.bin", big.substr(0, big.size() - 1));
    CHECK(error_of<ChecksumError>(ts, {d}) == big_changed);
    write_file(d + "/sub/big.bin", big + "!");
    CHECK(error_of<ChecksumError>(ts, {d}) == big_changed);
    // A missing file: the OS error names the path.
    sh("rm -f " + d + "/sub/big.bin");
    std::string missing;
    try {
      assemble_to_string(ts, {d});
    } catch (const FileError& e) {
      missing = e.path;
      CHECK(e.code().value() == ENOENT);
    }
    CHECK(missing == d + "/sub/big.bin");
    write_file(d + "/sub/big.bin", big);
    CHECK(assemble_to_string(ts, {d}) == tar);
  }
  g_gzip = false;
  // Through the gzip sink's lent blocks, a segment (23 bytes of padding + a 512-byte header)
  // that does not fit in the room left in a 1 MiB block goes through write(), and the next
  // file is read into the block after it.
  {
    const std::string many = tmpdir + "/many";
    sh("mkdir -p " + many);
    std::mt19937 rng(5);
    for (int i = 0; i < 700; ++i) {
      std::string content(1001, '\0');
      for (char& c : content) c = static_cast<char>('a' + rng() % 26);
      char name[16];
      std::snprintf(name, sizeof name, "/f%04d", i);
      write_file(many + name, content);
    }
    sh("tar --format=gnu --sort=name -cf " + tmpdir + "/many.tar -C " + many + " .");
    std::string many_tar = read_file(tmpdir + "/many.tar");
    // Segment j starts where file j's data ends: 2025 + 1536 j; number 681 crosses 1 MiB.
    CHECK(many_tar.substr(2025 + 1536 * 681 + 23 + 512, 1001) == read_file(many + "/f0682"));
    std::string many_ts = disassemble(many_tar);
    g_threads = 1;
    for (bool gz : {false, true}) {
      g_gzip = gz;
      CHECK(assemble_to_string(many_ts, {many}) == many_tar);
    }
    g_gzip = false;
  }
  // Names resolve inside the root: "..", absolute paths and symlinks cannot leave it.
  {
    StringSink gz;
    TarSplitPacker p(gz);
    p.add_file("../../../../../../etc/hostname", 1, true, 0);
    p.finish();
    CHECK(error_of<FileError>(gz.data, {upper}).find("No such file") != std::string::npos);
    sh("ln -s /etc " + upper + "/etc");  // resolves to <upper>/etc again: a loop, not the host
    CHECK(!error_of<FileError>(gz.data, {upper}).empty());
  }
  // Empty input: no entries at all (new flavour); an empty tar-split gives an empty tar.
  CHECK(gunzip(disassemble("")).empty());
  CHECK(assemble_to_string(disassemble(""), {d}).empty());
  // Duplicates and malformed streams are errors.
  {
    std::string dup =
        "{\"type\":1,\"name\":\"a\",\"position\":0}\n"
        "{\"type\":1,\"name\":\"./a/\",\"position\":1}\n";
    CHECK(error_of<ArchiveError>(gzip_tool(dup), {d}) == "duplicates of file paths not supported");
    CHECK(!error_of<ArchiveError>(gzip_tool("{\"type\":2,\"payload\":\"!!\"}\n"), {d}).empty());
    CHECK(!error_of<ArchiveError>(gzip_tool("not json\n"), {d}).empty());
    CHECK(error_of<ArchiveError>("plain text", {d}) == "gzip: invalid header");
  }
  // A duplicate in the tar itself fails on disassembly, when the second header is read.
  {
    std::string t2 = tmpdir + "/dup.tar";
    sh("cd " + d + " && tar -cf " + t2 + " a.txt ./a.txt 2>/dev/null; true");
    std::string err;
    try {
      disassemble(read_file(t2));
    } catch (const ArchiveError& e) {
      err = e.what();
    }
    CHECK(err == "duplicates of file paths not supported");
  }

  // ---- mutation fuzzing of the NDJSON: an error or a tarball, never a crash ----
  {
    std::string json = gunzip(ts);
    static const char kAlphabet[] = "{}[]\":,\\nul0123456789abcAZ=+/ \n";
    std::mt19937 rng(777);
    int errors = 0;
    for (int i = 0; i < 2000; ++i) {
      std::string m = json;
      for (int k = 0, flips = 1 + static_cast<int>(rng() % 4); k < flips; ++k)
        m[rng() % m.size()] = kAlphabet[rng() % (sizeof kAlphabet - 1)];
      StringSink gz;
      auto sink = make_compressing_sink(Compression::kGzip, gz, 1, 1);
      sink->write(reinterpret_cast<const uint8_t*>(m.data()), m.size());
      sink->close();
      try {
        assemble_to_string(gz.data, {d});
      } catch (const ArchiveError&) {
        ++errors;
      } catch (const ChecksumError&) {
        ++errors;
      } catch (const FileError&) {
        ++errors;
      }
    }
    CHECK(errors > 100);
  }

  sh("rm -rf " + tmpdir);
  if (failures) std::fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
