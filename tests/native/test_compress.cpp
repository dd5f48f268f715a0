// Compression: detection, every decompressor (against the system tools' output), the
// parallel gzip and zstd sinks (round trips, determinism over thread counts), and errors
// on corrupt / truncated input.
#include <unistd.h>

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/compress.h"
#include "compress/decompress.h"
#include "tar/errors.h"

#include "check.h"
#include "test_io.h"

using namespace layerstore;

static std::string tmpdir;

// Compress with a system tool ("gzip -c", "zstd -q -c", ...).
static std::string tool(const std::string& cmd, const std::string& in) {
  write_file(tmpdir + "/in", in);
  std::string c = cmd + " < " + tmpdir + "/in > " + tmpdir + "/out";
  if (std::system(c.c_str()) != 0) {
    std::fprintf(stderr, "command failed: %s\n", c.c_str());
    ++failures;
  }
  return read_file(tmpdir + "/out");
}

// Resident memory of this process now (/proc/self/statm), in bytes.
static size_t resident_bytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Decompress in pieces of `chunk` bytes through the push API.
static std::string decompress(Compression c, const std::string& in, size_t chunk = 4093) {
  auto d = Decompressor::create(c);
  StringSink out;
  for (size_t off = 0; off < in.size(); off += chunk)
    d->feed(reinterpret_cast<const uint8_t*>(in.data()) + off, std::min(chunk, in.size() - off),
            out);
  d->finish(out);
  return out.data;
}

static std::string compress(Compression c, const std::string& in, int level, int threads,
                            size_t chunk = 70001) {
  StringSink out;
  auto s = make_compressing_sink(c, out, level, threads);
  for (size_t off = 0; off < in.size(); off += chunk)
    s->write(reinterpret_cast<const uint8_t*>(in.data()) + off, std::min(chunk, in.size() - off));
  s->close();
  return out.data;
}

// The same through the sink's lent buffer, filled `piece` bytes at a time.
static std::string lend_compress(const std::string& in, int threads, size_t piece) {
  StringSink out;
  auto s = make_compressing_sink(Compression::kGzip, out, -1, threads);
  for (size_t off = 0; off < in.size();) {
    size_t room = 0;
    uint8_t* p = s->lend(&room);
    CHECK(p != nullptr && room > 0);
    size_t k = std::min({room, piece, in.size() - off});
    std::memcpy(p, in.data() + off, k);
    s->commit(k);
    off += k;
  }
  s->close();
  return out.data;
}

// gunzip with zlib (an independent inflater); "<error>" when zlib rejects the stream.
static std::string zlib_gunzip(const std::string& gz) {
  z_stream z{};
  if (inflateInit2(&z, 16 + 15) != Z_OK) return "<error>";
  std::string out;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  int r = Z_OK;
  while (r == Z_OK) {
    char buf[65536];
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    r = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  }
  bool whole = r == Z_STREAM_END && z.avail_in == 0;
  inflateEnd(&z);
  return whole ? out : "<error>";
}

static std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

static std::string error_of(Compression c, const std::string& in) {
  try {
    decompress(c, in);
  } catch (const ArchiveError& e) {
    return e.what();
  }
  return "";
}

static std::string sample(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s;
  s.reserve(n);
  const char* words[] = {"layer ", "store ", "tar ", "split ", "\n", "overlay ", "0123 "};
  while (s.size() < n) {
    if (rng() % 8 == 0) {
      for (int i = 0; i < 64 && s.size() < n; ++i) s.push_back(static_cast<char>(rng()));
    } else {
      s += words[rng() % 7];
    }
  }
  s.resize(n);
  return s;
}

int main() {
  char tmpl[] = "/tmp/test_compress.XXXXXX";
  tmpdir = mkdtemp(tmpl);

  // Detection (SPEC §6.2).
  auto det = [](const std::string& s) {
    return detect_compression(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  CHECK(det("BZh91AY") == Compression::kBzip2);
  CHECK(det(std::string("\x1f\x8b\x08\x00", 4)) == Compression::kGzip);
  CHECK(det(std::string("\x1f\x8b", 2)) == Compression::kNone);  // too short for the magic
  CHECK(det(std::string("\xfd\x37\x7a\x58\x5a\x00", 6)) == Compression::kXz);
  CHECK(det(std::string("\x28\xb5\x2f\xfd", 4)) == Compression::kZstd);
  CHECK(det(std::string("\x50\x2a\x4d\x18", 4)) == Compression::kNone);  // skippable frame
  CHECK(det("") == Compression::kNone);
  CHECK(std::string(compression_extension(Compression::kZstd)) == "tar.zst");

  const std::string data = sample(1024 * 1024 + 12345, 1);  // 8+ gzip blocks
  const std::string empty;

  // Decompressors read what the system tools write, also in tiny pieces.
  for (const std::string* d : {&data, &empty}) {
    CHECK(decompress(Compression::kGzip, tool("gzip -c", *d)) == *d);
    CHECK(decompress(Compression::kGzip, tool("gzip -c", *d), 1) == *d);
    CHECK(decompress(Compression::kZstd, tool("zstd -q -c", *d)) == *d);
    CHECK(decompress(Compression::kBzip2, tool("bzip2 -c", *d)) == *d);
    CHECK(decompress(Compression::kXz, tool("xz -c", *d)) == *d);
    CHECK(decompress(Compression::kNone, *d) == *d);
  }
  // Multi-member gzip, multi-frame zstd, concatenated bzip2.
  std::string a = data.substr(0, 100000), b = data.substr(100000, 50000);
  CHECK(decompress(Compression::kGzip, tool("gzip -c", a) + tool("gzip -c", b)) == a + b);
  CHECK(decompress(Compression::kZstd, tool("zstd -q -c", a) + tool("zstd -q -c", b)) == a + b);
  CHECK(decompress(Compression::kBzip2, tool("bzip2 -c", a) + tool("bzip2 -c", b)) == a + b);
  // zstd windows: up to 512 MiB is read, as Go does; a frame asking for 1 GiB is refused
  // with Go's words (streamed, so the frame header carries the window asked for).
  CHECK(decompress(Compression::kZstd, tool("zstd -q --long=29 -c -", a)) == a);
  CHECK(error_of(Compression::kZstd, tool("zstd -q --long=30 -c -", a)) ==
        "window size exceeded");

  // Errors, with Go's texts.
  std::string gz = tool("gzip -c", data);
  CHECK(error_of(Compression::kGzip, gz.substr(0, gz.size() / 2)) == "unexpected EOF");
  CHECK(error_of(Compression::kGzip, gz.substr(0, gz.size() - 4)) == "unexpected EOF");
  CHECK(error_of(Compression::kGzip, gz + "trailing junk") == "gzip: invalid header");
  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 6] ^= 0x55;
  CHECK(error_of(Compression::kGzip, bad_crc) == "gzip: invalid checksum");
  std::string corrupt = gz;
  for (size_t i = 100; i < 400; ++i) corrupt[i] = static_cast<char>(0xff);
  CHECK(error_of(Compression::kGzip, corrupt).rfind("flate: corrupt input", 0) == 0 ||
        error_of(Compression::kGzip, corrupt) == "gzip: invalid checksum");
  std::string zst = tool("zstd -q -c", data);
  CHECK(error_of(Compression::kZstd, zst.substr(0, zst.size() - 10)) == "unexpected EOF");
  std::string zcorrupt = zst;
  for (size_t i = 20; i < 300; ++i) zcorrupt[i] = 0;
  CHECK(error_of(Compression::kZstd, zcorrupt).rfind("zstd: ", 0) == 0);
  std::string bz = tool("bzip2 -c", data);
  CHECK(error_of(Compression::kBzip2, bz.substr(0, bz.size() / 2)) == "unexpected EOF");
  std::string xz = tool("xz -c", data);
  CHECK(error_of(Compression::kXz, xz.substr(0, xz.size() / 2)) == "unexpected EOF");
  CHECK(!error_of(Compression::kXz, xz.substr(0, 12) + std::string(200, 'x')).empty());

  // Parallel gzip: valid for gzip(1) and for us, same bytes for any thread count and any
  // write sizes, at every ISA-L level; sizes around the 1 MiB block.
  for (size_t n : {size_t{0}, size_t{1}, size_t{131072}, size_t{1} << 20, (size_t{1} << 20) + 1,
                   data.size()}) {
    std::string in = data.substr(0, n);
    std::string one = compress(Compression::kGzip, in, 1, 1);
    CHECK(compress(Compression::kGzip, in, 1, 2, 4096) == one);
    CHECK(compress(Compression::kGzip, in, 1, 4, 1 << 20) == one);
    CHECK(decompress(Compression::kGzip, one) == in);
    write_file(tmpdir + "/p.gz", one);
    CHECK(read_file(tmpdir + "/p.gz").substr(0, 3) == "\x1f\x8b\x08");
    CHECK(std::system(("gzip -t " + tmpdir + "/p.gz").c_str()) == 0);
    CHECK(tool("gzip -dc", one) == in);
  }
  size_t size1 = 0;
  for (int level : {-1, 0, 1, 6, 9}) {
    std::string z = compress(Compression::kGzip, data, level, 2);
    CHECK(tool("gzip -dc", z) == data);
    CHECK(z.size() < data.size());
    if (level == 1) size1 = z.size();
    if (level == 6) CHECK(z.size() <= size1);  // higher levels never compress worse here
  }
  // Already-compressed chunks go out as stored blocks: random data grows by the stored
  // headers only; random and text mixed at and off the 64 KiB chunk grid, ending on either
  // kind (a final stored block, or the empty final block after a full last block), round
  // trip through zlib and gzip(1), and give the same bytes for 1 and 2 threads and for
  // write() and lend()/commit().
  const std::string noise = random_bytes(3 * (1 << 20) + 777, 7);
  const std::string text = data.substr(0, 300000);
  const std::string whole_noise = noise.substr(0, 2 << 20);
  for (const std::string& in :
       {noise, whole_noise, text + noise, noise + text,
        text.substr(0, 65536) + noise.substr(0, 65536 * 3) + text + noise.substr(5, 100000),
        noise.substr(0, 1000) + text.substr(0, 70000) + noise.substr(0, 200000) + text,
        text.substr(0, (1 << 20) - 65536) + noise.substr(0, 65536)}) {
    std::string one = compress(Compression::kGzip, in, -1, 1);
    CHECK(compress(Compression::kGzip, in, -1, 2, 4096) == one);
    CHECK(lend_compress(in, 2, 65536 + 17) == one);
    CHECK(zlib_gunzip(one) == in);
    CHECK(tool("gzip -dc", one) == in);
  }
  {
    // Stored without running deflate: each 1 MiB block of noise is exactly stored blocks of
    // 65535 bytes and a 16-byte one (deflate would add its sync-flush markers at least);
    // after the 2 MiB, the end-of-stream block of the empty last block.
    std::string z = compress(Compression::kGzip, whole_noise, -1, 2);
    std::string want;
    for (size_t block = 0; block < whole_noise.size(); block += 1 << 20) {
      for (size_t off = 0; off < (1 << 20); off += 65535) {
        size_t k = std::min<size_t>(65535, (1 << 20) - off);
        want += std::string(1, '\0') + char(k & 0xff) + char(k >> 8) + char(~k & 0xff) +
                char((~k >> 8) & 0xff) + whole_noise.substr(block + off, k);
      }
    }
    CHECK(z.substr(10, want.size()) == want);
    CHECK(z.size() <= 10 + want.size() + 16);
  }
  CHECK(compress(Compression::kGzip, text + noise, -1, 2).size() <
        compress(Compression::kGzip, text, -1, 2).size() + noise.size() + 1000);
  CHECK(zlib_gunzip(lend_compress("", 1, 5)).empty());

  // zstd: multi-threaded, readable by zstd(1), same bytes for 1 and 3 workers.
  std::string z1 = compress(Compression::kZstd, data, -1, 1);
  CHECK(compress(Compression::kZstd, data, -1, 3, 1000) == z1);
  CHECK(tool("zstd -q -d -c", z1) == data);
  CHECK(decompress(Compression::kZstd, z1) == data);
  CHECK(decompress(Compression::kZstd, compress(Compression::kZstd, "", 19, 1)).empty());
  // none: pass-through.
  CHECK(compress(Compression::kNone, data, -1, 0) == data);
  // bzip2 / xz output: Go's message.
  StringSink sink;
  try {
    make_compressing_sink(Compression::kBzip2, sink, -1, 0);
    CHECK(false);
  } catch (const ArchiveError& e) {
    CHECK(std::string(e.what()) == "unsupported compression format tar.bz2");
  }
  try {
    make_compressing_sink(Compression::kXz, sink, -1, 0);
    CHECK(false);
  } catch (const ArchiveError& e) {
    CHECK(std::string(e.what()) == "unsupported compression format tar.xz");
  }

  // Pull adapter with detection.
  for (const std::string& enc : {tool("gzip -c", a), tool("zstd -q -c", a), a}) {
    MemorySource src(enc.data(), enc.size());
    DecompressingSource ds(src);
    std::string got;
    uint8_t buf[5000];
    for (size_t r; (r = ds.read(buf, sizeof buf)) > 0;) got.append(reinterpret_cast<char*>(buf), r);
    CHECK(got == a);
  }

  // zstd whose frame ends exactly where an output buffer (256 KiB) ends: the last call
  // that finds nothing more to do must not make the complete frame look cut short.
  for (size_t n : {size_t{256} << 10, size_t{1} << 20}) {
    const std::string plain(n, 'z');
    const std::string z = tool("zstd -q -c", plain);
    std::string one, two;
    try {
      one = decompress(Compression::kZstd, z);
      two = decompress(Compression::kZstd, z + tool("zstd -q -c", "ab"));
    } catch (const ArchiveError& e) {
      std::fprintf(stderr, "zstd of %zu bytes: %s\n", n, e.what());
    }
    CHECK(one == plain);
    CHECK(two == plain + "ab");
  }

  // A decompression bomb through the pull adapter (decompress_fd): 64 MiB of zeros from
  // a few KiB. Its output is handed out as it comes, never piled up whole: what it holds
  // at once stays within a few MiB (a bzip2 -1 block: 5 MiB).
  for (const char* cmd : {"gzip -1 -c", "zstd -q -19 -c", "bzip2 -1 -c", "xz -0 -c"}) {
    sh(std::string("head -c 64M /dev/zero | ") + cmd + " > " + tmpdir + "/bomb");
    const std::string bomb = read_file(tmpdir + "/bomb");
    MemorySource src(bomb.data(), bomb.size());
    DecompressingSource ds(src);
    const size_t before = resident_bytes();
    size_t peak = before;
    uint64_t total = 0;
    bool zeros = true;
    std::vector<uint8_t> buf(1 << 20);
    for (size_t r; (r = ds.read(buf.data(), buf.size())) > 0;) {
      total += r;
      zeros = zeros && std::all_of(buf.begin(), buf.begin() + r, [](uint8_t b) { return !b; });
      peak = std::max(peak, resident_bytes());
    }
    CHECK(total == 64u << 20);
    CHECK(zeros);
    CHECK(peak - before < (32u << 20));
  }

  std::system(("rm -rf " + tmpdir).c_str());
  if (failures) std::fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
