// libFuzzer: disassemble -> assemble round trip. Any input the disassembler accepts to its
// end (as a tar, entries read or left unread as the first byte says; every block is given a
// valid checksum first, see fuzz_util.h) must come back byte
// for byte from assemble() of its tar-split stream with the entries' own data as the
// files (served from memory, as the layer's files would be). Sparse entries are exempt:
// their CRC covers the expanded data, as in Go's tar-split (SPEC.md).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <string>

#include "compress/byte_io.h"
#include "tar/errors.h"
#include "tar/reader.h"
#include "tarsplit/assembler.h"
#include "tarsplit/disassembler.h"
#include "tarsplit/packer.h"

#include "fuzz_util.h"

using namespace layerstore;

namespace {

// Files from memory: each open() hands out a memfd holding the recorded data.
class MemoryFileGetter : public FileGetter {
 public:
  explicit MemoryFileGetter(const std::map<std::string, std::string>& files) : files_(files) {}
  int open(const std::string& raw_name) override {
    auto it = files_.find(raw_name);
    if (it == files_.end()) throw FileError(ENOENT, raw_name);
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    if (fd < 0) std::abort();
    const std::string& d = it->second;
    if (!d.empty() && ::write(fd, d.data(), d.size()) != static_cast<ssize_t>(d.size()))
      std::abort();
    lseek(fd, 0, SEEK_SET);
    return fd;
  }

 private:
  const std::map<std::string, std::string>& files_;
};

bool has_sparse(const uint8_t* data, size_t size) {
  MemorySource src(data, size);
  TarReader r(src);
  TarHeader h;
  try {
    while (r.next(h))
      if (r.sparse()) return true;
  } catch (const ArchiveError&) {
    return true;  // not a round trip candidate anyway
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t raw_size) {
  if (raw_size < 1) return 0;
  const uint8_t mode = raw[0];
  std::string input(reinterpret_cast<const char*>(raw) + 1, raw_size - 1);
  fix_tar_checksums(input);
  const uint8_t* data = reinterpret_cast<const uint8_t*>(input.data());
  const size_t size = input.size();
  if (has_sparse(data, size)) return 0;
  std::map<std::string, std::string> files;
  StringSink ts;
  try {
    MemorySource src(data, size);
    TarSplitPacker packer(ts);
    Disassembler d(src, packer);
    TarHeader h;
    unsigned k = 0;
    while (d.next(h)) {
      std::string& content = files[h.name];
      content.clear();
      const bool read_it = (mode >> (k++ % 8)) & 1;
      if (read_it) {
        uint8_t buf[1000];
        for (size_t n; (n = d.read(buf, sizeof buf)) > 0;)
          content.append(reinterpret_cast<const char*>(buf), n);
      } else {
        // Left for the disassembler to read (and CRC) itself; the content for the getter
        // comes from a second reader below.
        content = "\x01unread";
      }
    }
    d.finish();
    packer.finish();
  } catch (const ArchiveError&) {
    return 0;
  }
  // Entries left unread: their data from a plain reader.
  {
    MemorySource src(data, size);
    TarReader r(src);
    TarHeader h;
    while (r.next(h)) {
      auto it = files.find(h.name);
      if (it == files.end()) std::abort();  // the disassembler saw this entry
      if (it->second != "\x01unread") continue;
      it->second.clear();
      uint8_t buf[1000];
      for (size_t n; (n = r.read(buf, sizeof buf)) > 0;)
        it->second.append(reinterpret_cast<const char*>(buf), n);
    }
  }
  MemorySource tsrc(ts.data.data(), ts.data.size());
  MemoryFileGetter getter(files);
  StringSink out;
  assemble(tsrc, getter, out, 1);  // any exception here is a failed round trip
  if (out.data != input) {
    std::fprintf(stderr, "round trip differs: %zu bytes in, %zu out\n", size, out.data.size());
    std::abort();
  }
  return 0;
}
