// libFuzzer: apply_layer() of arbitrary bytes (any compression, detected) into a fresh
// layer directory that sits in a sentinel parent holding only the layer and one known
// file. After every input, success or not, a real walk checks that nothing outside the
// layer changed: the parent holds exactly {layer, known}, `known` has its content, mode,
// times and a single link, the layer is still the same directory, and no inode in the
// layer has a hard link outside it. The first byte picks vfs or overlay whiteouts (bit 0),
// write-behind (bit 1) and, for an uncompressed input, valid checksums in every block
// (bit 2, see fuzz_util.h). Only ArchiveError, PathError and FileError/system_error may come out.
//
// The parent is /dev/shm/layerstore-fuzz-apply (tmpfs), a fixed path so that seeds can
// hold absolute symlinks aimed at it; a second process at once gets "<path>-<pid>".
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "apply/apply.h"
#include "compress/byte_io.h"
#include "compress/compression.h"
#include "compress/decompress.h"
#include "extract/path_error.h"
#include "extract/safe_path.h"
#include "tar/errors.h"
#include "tar/reader.h"

#include "fuzz_util.h"

using namespace layerstore;

namespace {

const char kKnownContent[] = "the sentinel's known content\n";

[[noreturn]] void escaped(const std::string& what) {
  std::fprintf(stderr, "ESCAPE: %s\n", what.c_str());
  std::abort();
}

struct Sentinel {
  std::string parent;
  std::string layer;
  std::string known;
  struct stat known_st;
  struct stat parent_st;
};

const std::string* g_parent_to_remove = nullptr;

const Sentinel& sentinel() {
  static const Sentinel s = [] {
    Sentinel t;
    t.parent = "/dev/shm/layerstore-fuzz-apply";
    mkdir(t.parent.c_str(), 0755);
    int lk = open(t.parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lk < 0 || flock(lk, LOCK_EX | LOCK_NB) != 0) {  // taken: a private one
      if (lk >= 0) close(lk);
      t.parent += "-" + std::to_string(getpid());
      mkdir(t.parent.c_str(), 0755);
    }  // else: lk stays open (and locked) for the life of the process
    int pfd = open(t.parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // Leftovers of a killed run.
    std::vector<std::string> names;
    list_dir(pfd, &names);
    for (const std::string& n : names) remove_all_at(pfd, n);
    close(pfd);
    // The sentinel goes with the process (a crash leaves it to look at).
    g_parent_to_remove = new std::string(t.parent);  // outlives every static
    std::atexit([] { remove_all_at(AT_FDCWD, *g_parent_to_remove); });
    t.layer = t.parent + "/layer";
    t.known = t.parent + "/known";
    FILE* f = std::fopen(t.known.c_str(), "wb");
    if (!f) std::abort();
    std::fputs(kKnownContent, f);
    std::fclose(f);
    chmod(t.known.c_str(), 0640);
    struct timespec ts[2] = {{1000, 0}, {2000, 0}};
    utimensat(AT_FDCWD, t.known.c_str(), ts, 0);
    stat(t.known.c_str(), &t.known_st);
    stat(t.parent.c_str(), &t.parent_st);
    return t;
  }();
  return s;
}

std::string read_all(const std::string& path) {
  std::string out;
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
  if (fd < 0) return "<cannot open>";
  char buf[256];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// Counts, per inode of the layer, the links seen in the walk.
void walk(int dirfd, std::map<std::pair<dev_t, ino_t>, std::pair<nlink_t, nlink_t>>& links,
          int depth) {
  if (depth > 200) escaped("layer nested deeper than 200");
  std::vector<std::string> names;
  if (list_dir(dirfd, &names) != 0) escaped("cannot list a layer directory");
  for (const std::string& n : names) {
    struct stat st;
    if (fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) escaped("cannot stat " + n);
    if (S_ISDIR(st.st_mode)) {
      int sub = openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) escaped("cannot open directory " + n);
      walk(sub, links, depth + 1);
      close(sub);
    } else {
      auto& e = links[{st.st_dev, st.st_ino}];
      e.first = st.st_nlink;
      ++e.second;
    }
  }
}

void check_outside(const Sentinel& s, const struct stat& layer_st) {
  int pfd = open(s.parent.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0) escaped("the sentinel parent is gone");
  std::vector<std::string> names;
  list_dir(pfd, &names);
  for (const std::string& n : names)
    if (n != "layer" && n != "known") escaped("new entry in the sentinel parent: " + n);
  if (names.size() != 2) escaped("an entry of the sentinel parent is gone");
  struct stat st;
  if (fstatat(pfd, "known", &st, AT_SYMLINK_NOFOLLOW) != 0) escaped("known is gone");
  const struct stat& k = s.known_st;
  if (st.st_ino != k.st_ino || st.st_mode != k.st_mode || st.st_uid != k.st_uid ||
      st.st_gid != k.st_gid || st.st_nlink != 1 || st.st_size != k.st_size ||
      st.st_mtim.tv_sec != k.st_mtim.tv_sec || st.st_atim.tv_sec != k.st_atim.tv_sec)
    escaped("known's metadata changed");
  if (read_all(s.known) != kKnownContent) escaped("known's content changed");
  ssize_t xl = listxattr(s.known.c_str(), nullptr, 0);
  if (xl > 0) escaped("known got xattrs");
  struct stat ps;
  if (fstat(pfd, &ps) != 0 || ps.st_mode != s.parent_st.st_mode || ps.st_uid != s.parent_st.st_uid)
    escaped("the sentinel parent's metadata changed");
  struct stat ls;
  if (fstatat(pfd, "layer", &ls, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(ls.st_mode) ||
      ls.st_ino != layer_st.st_ino)
    escaped("the layer directory was replaced");
  close(pfd);
}

// Inputs that would write more than 32 MiB (a decompression bomb, a sparse file of any
// size from a few bytes) are skipped: a legitimate big layer, not what we look for here.
class CountingSource : public ByteSource {
 public:
  CountingSource(ByteSource& in, uint64_t& count) : in_(in), count_(count) {}
  size_t read(uint8_t* buf, size_t n) override {
    size_t r = in_.read(buf, n);
    count_ += r;
    return r;
  }

 private:
  ByteSource& in_;
  uint64_t& count_;
};

bool too_big(const uint8_t* data, size_t size) {
  constexpr uint64_t kMax = 32 << 20;
  uint64_t count = 0;
  try {
    MemorySource mem(data, size);
    DecompressingSource plain(mem);
    CountingSource counted(plain, count);
    TarReader r(counted);
    TarHeader h;
    while (count <= kMax && r.next(h))
      if (r.sparse() && h.size > (1 << 20)) return true;
    uint8_t buf[65536];
    while (count <= kMax && r.read_rest(buf, sizeof buf) > 0) {
    }
  } catch (const ArchiveError&) {
  }
  return count > kMax;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t raw_size) {
  if (raw_size < 1) return 0;
  const uint8_t mode = raw[0];
  std::string input(reinterpret_cast<const char*>(raw) + 1, raw_size - 1);
  if ((mode & 4) && detect_compression(reinterpret_cast<const uint8_t*>(input.data()),
                                       input.size()) == Compression::kNone)
    fix_tar_checksums(input);
  const uint8_t* data = reinterpret_cast<const uint8_t*>(input.data());
  const size_t size = input.size();
  if (too_big(data, size)) return 0;
  const Sentinel& s = sentinel();
  if (mkdir(s.layer.c_str(), 0755) != 0) std::abort();
  int root = open(s.layer.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat layer_st;
  fstat(root, &layer_st);
  ApplyOptions o;
  o.extract.whiteout_format = (mode & 1) ? WhiteoutFormat::kOverlay : WhiteoutFormat::kVfs;
  o.extract.write_behind = (mode & 2) != 0;
  StringSink ts;
  try {
    apply_layer(data, size, root, o, ts);
  } catch (const ArchiveError&) {
  } catch (const PathError&) {
  } catch (const std::system_error&) {  // FileError and plain OS errors
  }
  check_outside(s, layer_st);
  std::map<std::pair<dev_t, ino_t>, std::pair<nlink_t, nlink_t>> links;
  walk(root, links, 0);
  for (const auto& kv : links)
    if (kv.second.first != kv.second.second) escaped("an inode of the layer is linked outside it");
  close(root);
  int pfd = open(s.parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (remove_all_at(pfd, "layer") != 0) std::abort();
  close(pfd);
  return 0;
}
