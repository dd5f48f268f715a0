// libFuzzer: the tar reader over arbitrary bytes (after a mode byte: bit 0 gives every block
// a valid checksum first, see fuzz_util.h). Every header is read and all of its data
// (alternating read() and the zero-copy read_view()), then the rest of the stream. Only
// ArchiveError may come out; and for an archive read to its end, raw + data must give the
// input back byte for byte unless an entry was sparse (its data is expanded).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "compress/byte_io.h"
#include "tar/errors.h"
#include "tar/reader.h"

#include "fuzz_util.h"

using namespace layerstore;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t raw_size) {
  if (raw_size < 1) return 0;
  std::string input(reinterpret_cast<const char*>(raw) + 1, raw_size - 1);
  if (raw[0] & 1) fix_tar_checksums(input);
  const uint8_t* data = reinterpret_cast<const uint8_t*>(input.data());
  const size_t size = input.size();
  MemorySource src(data, size);
  TarReader r(src);
  std::string rebuilt;
  bool sparse = false;
  try {
    TarHeader h;
    uint8_t buf[4096];
    bool view = false;
    while (r.next(h)) {
      rebuilt += r.take_raw();
      if (r.sparse()) {
        // Expanded holes: any size from a few bytes (as Go's reader). Read the first 4 MiB.
        sparse = true;
        for (int64_t got = 0; got < (4 << 20) && r.read(buf, sizeof buf) > 0; got += sizeof buf) {
        }
        continue;
      }
      int64_t got = 0;
      if (view) {
        const uint8_t* p;
        for (size_t n; (n = r.read_view(&p, 3000)) > 0; got += static_cast<int64_t>(n))
          rebuilt.append(reinterpret_cast<const char*>(p), n);
      } else {
        for (size_t n; (n = r.read(buf, sizeof buf)) > 0; got += static_cast<int64_t>(n))
          rebuilt.append(reinterpret_cast<const char*>(buf), n);
      }
      // A header-only type has no data; anything else exactly its size.
      if (got != 0 && got != h.size) std::abort();
      view = !view;
    }
    rebuilt += r.take_raw();
    uint8_t rest[1000];
    for (size_t n; (n = r.read_rest(rest, sizeof rest)) > 0;)
      rebuilt.append(reinterpret_cast<const char*>(rest), n);
  } catch (const ArchiveError&) {
    return 0;
  }
  if (r.offset() != size) std::abort();
  // Sparse entries are expanded (not raw-accountable), like Go's reader (SPEC.md).
  if (!sparse && rebuilt != input) std::abort();
  return 0;
}
