// The apply pipeline end to end on in-memory tarballs: digests, sizes, id sets, the
// extracted tree, and errors from every stage (bad compression, truncation, bad entries).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "apply/apply.h"
#include "compress/compress.h"
#include "digest/sha256.h"
#include "tar/errors.h"
#include "tar/writer.h"

using namespace layerstore;

#include "check.h"

namespace {

std::string g_top;

std::string make_tar(int files, size_t file_size) {
  StringSink out;
  TarWriter w(out);
  TarHeader d;
  d.typeflag = '5';
  d.name = "dir/";
  d.mode = 0755;
  d.uid = 3;
  d.gid = 4;
  w.write_header(d);
  std::string payload(file_size, 'x');
  for (int i = 0; i < files; ++i) {
    TarHeader h;
    h.typeflag = '0';
    h.name = "dir/f" + std::to_string(i);
    h.mode = 0644;
    h.uid = i % 3;
    h.gid = 10 + i % 2;
    h.size = static_cast<int64_t>(file_size);
    payload[0] = static_cast<char>('a' + i % 26);
    w.write_header(h);
    w.write_data(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  }
  TarHeader wh;
  wh.typeflag = '0';
  wh.name = "dir/.wh.nothing";
  wh.uid = 777;
  w.write_header(wh);
  w.close();
  return out.data;
}

std::string compress_with(Compression c, const std::string& data) {
  StringSink out;
  std::unique_ptr<ByteSink> z = make_compressing_sink(c, out, -1, 0);
  z->write(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  z->close();
  return out.data;
}

std::string fresh_layer(const std::string& name) {
  std::string p = g_top + "/" + name;
  CHECK(mkdir(p.c_str(), 0755) == 0);
  return p;
}

ApplyResult apply_mem(const std::string& data, const std::string& dir, ApplyOptions o = {}) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  StringSink ts;
  try {
    ApplyResult r = apply_layer(reinterpret_cast<const uint8_t*>(data.data()), data.size(), fd,
                                o, ts);
    close(fd);
    return r;
  } catch (...) {
    close(fd);
    throw;
  }
}

std::string digest(const std::string& s) { return "sha256:" + sha256_hex(s.data(), s.size()); }

void test_digests_and_sets() {
  const std::string tar = make_tar(200, 20000);
  for (Compression c : {Compression::kNone, Compression::kGzip, Compression::kZstd}) {
    for (bool hash_thread : {true, false}) {
      const std::string input = c == Compression::kNone ? tar : compress_with(c, tar);
      std::string dir = fresh_layer("l" + std::to_string(static_cast<int>(c)) +
                                    (hash_thread ? "t" : "m"));
      ApplyOptions o;
      o.hash_thread = hash_thread;
      o.block_size = 64 * 1024;  // many blocks through the queues
      ApplyResult r = apply_mem(input, dir, o);
      CHECK(r.compression == c);
      CHECK(r.compressed_digest == digest(input));
      CHECK(r.compressed_size == input.size());
      CHECK(r.uncompressed_digest == digest(tar));
      CHECK(r.uncompressed_size == tar.size());
      CHECK((r.uid_set == std::vector<uint32_t>{0, 1, 2, 3}));
      CHECK((r.gid_set == std::vector<uint32_t>{4, 10, 11}));
      CHECK(r.size == 200 * 20000);
      struct stat st;
      CHECK(stat((dir + "/dir/f199").c_str(), &st) == 0 && st.st_size == 20000);
    }
  }
}

// A zstd layer whose tar ends exactly where a queue block ends (1 MiB): the decompressor's
// extra call that finds the frame complete must not turn it into "unexpected EOF".
void test_zstd_frame_ends_with_a_block() {
  const std::string tar = make_tar(1, 1046016);
  CHECK(tar.size() == 1u << 20);
  for (bool stream : {false, true}) {
    std::string dir = fresh_layer(stream ? "zstd_block_stream" : "zstd_block_mem");
    const std::string input = compress_with(Compression::kZstd, tar);
    std::string err;
    ApplyResult r;
    try {
      if (stream) {
        int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
        MemorySource src(input.data(), input.size());
        StringSink ts;
        try {
          r = apply_layer(src, fd, ApplyOptions(), ts);
        } catch (...) {
          close(fd);
          throw;
        }
        close(fd);
      } else {
        r = apply_mem(input, dir);
      }
    } catch (const ArchiveError& e) {
      err = e.what();
    }
    CHECK(err.empty());
    CHECK(r.uncompressed_size == tar.size() && r.uncompressed_digest == digest(tar));
  }
}

// The streaming path (a pipe-like ByteSource, read by its own thread) gives the same.
void test_stream_source() {
  const std::string tar = make_tar(100, 5000);
  for (Compression c : {Compression::kNone, Compression::kGzip}) {
    const std::string input = c == Compression::kNone ? tar : compress_with(c, tar);
    std::string dir = fresh_layer("stream" + std::to_string(static_cast<int>(c)));
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    MemorySource src(input.data(), input.size());
    StringSink ts;
    ApplyOptions o;
    o.block_size = 64 * 1024;
    ApplyResult r = apply_layer(src, fd, o, ts);
    close(fd);
    CHECK(r.compression == c);
    CHECK(r.compressed_digest == digest(input));
    CHECK(r.uncompressed_digest == digest(tar));
    CHECK(r.uncompressed_size == tar.size());
    CHECK((r.uid_set == std::vector<uint32_t>{0, 1, 2, 3}));
    CHECK(!ts.data.empty());
    // a truncated stream fails with the parser's error
    std::string cut = fresh_layer("streamcut" + std::to_string(static_cast<int>(c)));
    fd = open(cut.c_str(), O_RDONLY | O_DIRECTORY);
    MemorySource half(input.data(), input.size() / 2);
    bool threw = false;
    try {
      apply_layer(half, fd, o, ts);
    } catch (const ArchiveError&) {
      threw = true;
    }
    close(fd);
    CHECK(threw);
  }
}

void test_stage_errors() {
  const std::string tar = make_tar(50, 30000);
  std::string gz = compress_with(Compression::kGzip, tar);
  std::string corrupt = gz;
  for (size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 32; ++i) corrupt[i] ^= 0x55;
  const std::string zst = compress_with(Compression::kZstd, tar);
  const std::vector<std::string> bad = {
      gz.substr(0, gz.size() - 20),
      corrupt,
      tar.substr(0, tar.size() / 2),
      zst.substr(0, zst.size() - 10),
  };
  int n = 0;
  for (const std::string& input : bad) {
    std::string dir = fresh_layer("bad" + std::to_string(n++));
    bool threw = false;
    try {
      apply_mem(input, dir);
    } catch (const ArchiveError& e) {
      threw = std::strlen(e.what()) > 0;
    }
    if (!threw) std::fprintf(stderr, "bad input %d was accepted\n", n - 1);
    CHECK(threw);
  }
}

void test_trusted_digest() {
  const std::string tar = make_tar(3, 10);
  ApplyOptions o;
  o.trusted_compressed_digest = "sha256:" + std::string(64, 'f');
  ApplyResult r = apply_mem(tar, fresh_layer("trusted"), o);
  CHECK(r.compressed_digest == o.trusted_compressed_digest);
  CHECK(r.uncompressed_digest == o.trusted_compressed_digest);
  o.trusted_compressed_digest = "md5:abc";  // not a sha256: hashed instead
  r = apply_mem(tar, fresh_layer("untrusted"), o);
  CHECK(r.compressed_digest == digest(tar));
}

ApplyResult apply_fd(int in_fd, const std::string& dir, ApplyOptions o = {}) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  StringSink ts;
  try {
    ApplyResult r = apply_layer_fd(in_fd, fd, o, ts);
    close(fd);
    return r;
  } catch (...) {
    close(fd);
    throw;
  }
}

// A regular file (read from its current offset, left at its end) and a pipe fed in
// uneven bursts with pauses (partial idle blocks) give what memory gives.
void test_fd_sources() {
  const std::string tar = make_tar(150, 9000);
  for (Compression c : {Compression::kNone, Compression::kGzip}) {
    const std::string input = c == Compression::kNone ? tar : compress_with(c, tar);
    for (bool trusted : {false, true}) {
      ApplyOptions o;
      o.block_size = 64 * 1024;
      if (trusted) o.trusted_compressed_digest = digest(input);
      const std::string tag = std::to_string(static_cast<int>(c)) + (trusted ? "t" : "h");
      const std::string path = g_top + "/input" + tag;
      int f = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
      const std::string junk = "skipped";
      CHECK(write(f, junk.data(), junk.size()) == static_cast<ssize_t>(junk.size()));
      CHECK(write(f, input.data(), input.size()) == static_cast<ssize_t>(input.size()));
      CHECK(lseek(f, static_cast<off_t>(junk.size()), SEEK_SET) > 0);
      ApplyResult r = apply_fd(f, fresh_layer("file" + tag), o);
      CHECK(lseek(f, 0, SEEK_CUR) == static_cast<off_t>(junk.size() + input.size()));
      close(f);
      CHECK(r.compression == c);
      CHECK(r.compressed_digest == digest(input));
      CHECK(r.compressed_size == input.size());
      CHECK(r.uncompressed_digest == digest(tar));
      CHECK(r.uncompressed_size == tar.size());
      CHECK((r.uid_set == std::vector<uint32_t>{0, 1, 2, 3}));

      int p[2];
      CHECK(pipe(p) == 0);
      std::thread writer([&input, w = p[1]] {
        size_t off = 0;
        for (size_t step = 1; off < input.size(); step = step * 7 % 300000 + 1) {
          const size_t k = std::min(step, input.size() - off);
          ssize_t n = write(w, input.data() + off, k);
          if (n <= 0) break;
          off += static_cast<size_t>(n);
          if (step % 5 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(15));
        }
        close(w);
      });
      ApplyResult rp = apply_fd(p[0], fresh_layer("pipe" + tag), o);
      writer.join();
      close(p[0]);
      CHECK(rp.compressed_digest == r.compressed_digest);
      CHECK(rp.uncompressed_digest == r.uncompressed_digest);
      CHECK(rp.uncompressed_size == r.uncompressed_size);
      CHECK(rp.uid_set == r.uid_set);
    }
  }
}

// A pipe whose writer sent a bad header and stays open and silent: the call fails at
// once, for a plain tar and for a gzip stream flushed so far (not finished).
void test_silent_pipe_fails_promptly() {
  std::string header(512, '\x07');
  header.replace(0, 16, "not a tar header");
  std::string gz(1024, '\0');
  z_stream z{};
  CHECK(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(header.data());
  z.avail_in = static_cast<uInt>(header.size());
  z.next_out = reinterpret_cast<Bytef*>(gz.data());
  z.avail_out = static_cast<uInt>(gz.size());
  CHECK(deflate(&z, Z_SYNC_FLUSH) == Z_OK);
  gz.resize(gz.size() - z.avail_out);
  deflateEnd(&z);
  int n = 0;
  for (const std::string& input : {header, gz}) {
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], input.data(), input.size()) == static_cast<ssize_t>(input.size()));
    const auto start = std::chrono::steady_clock::now();
    std::string what;
    try {
      apply_fd(p[0], fresh_layer("silent" + std::to_string(n++)));
    } catch (const ArchiveError& e) {
      what = e.what();
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    close(p[0]);
    close(p[1]);
    CHECK(what == "archive/tar: invalid tar header");
    CHECK(secs < 1.0);
  }
}

}  // namespace

int main() {
  char tmpl[] = "/tmp/test_apply.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 2;
  g_top = tmpl;
  test_digests_and_sets();
  test_zstd_frame_ends_with_a_block();
  test_stream_source();
  test_stage_errors();
  test_trusted_digest();
  test_fd_sources();
  test_silent_pipe_fails_promptly();
  std::string rm = "rm -rf " + g_top;
  if (std::system(rm.c_str()) != 0) return 2;
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("test_apply: all checks passed\n");
  return 0;
}
