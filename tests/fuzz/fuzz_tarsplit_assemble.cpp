// libFuzzer: assemble() over an arbitrary tar-split stream, with files from a small fixed
// directory (RootsFileGetter). The first byte picks how: bit 0 gzips the rest here (so the
// fuzzer mutates the NDJSON itself) or hands it over as the gzip stream; bit 1 uses two
// file-reading threads. Only ArchiveError, ChecksumError and FileError may come out.
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "compress/byte_io.h"
#include "tar/errors.h"
#include "tarsplit/assembler.h"

#include "fuzz_util.h"

using namespace layerstore;

namespace {

constexpr uint64_t kCap = 64 << 20;

void put(const std::string& path, const std::string& content) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  std::fwrite(content.data(), 1, content.size(), f);
  std::fclose(f);
}

// The files the seeds' tar-split streams name (see make_seeds.py).
const std::string& files_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/fuzz_tarsplit.XXXXXX";
    std::string d = mkdtemp(tmpl);
    mkdir((d + "/dir").c_str(), 0755);
    put(d + "/a", "hello\n");
    put(d + "/b", std::string(5000, 'b'));
    put(d + "/dir/c", "ccc");
    put(d + "/empty", "");
    symlink("a", (d + "/link").c_str());
    symlink("../../..", (d + "/up").c_str());
    return d;
  }();
  return dir;
}

std::string gzip(const uint8_t* p, size_t n) {
  z_stream z{};
  deflateInit2(&z, 1, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, n) + 64, '\0');
  z.next_in = const_cast<uint8_t*>(p);
  z.avail_in = static_cast<uInt>(n);
  z.next_out = reinterpret_cast<Bytef*>(&out[0]);
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  std::string gz = (mode & 1) ? gzip(data, size)
                               : std::string(reinterpret_cast<const char*>(data), size);
  MemorySource src(gz.data(), gz.size());
  RootsFileGetter files({files_dir()});
  CappedSink out(kCap);
  try {
    assemble(src, files, out, (mode & 2) ? 2 : 1);
  } catch (const ArchiveError&) {
  } catch (const ChecksumError&) {
  } catch (const FileError&) {
  } catch (const CapReached&) {
  }
  return 0;
}
