// The extractor on synthetic entries: every type, owners, modes, times, whiteouts in both
// formats, and that nothing reaches outside the layer directory.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "extract/extractor.h"
#include "extract/safe_path.h"
#include "tar/errors.h"

using namespace layerstore;

#include "check.h"

namespace {

std::string g_top;
bool g_write_behind = true;  // main() runs everything with and without the file worker

ExtractOptions base_opts() {
  ExtractOptions o;
  o.write_behind = g_write_behind;
  return o;
}

TarHeader H(char type, const std::string& name, int64_t mode = 0755) {
  TarHeader h;
  h.typeflag = type;
  h.name = name;
  h.mode = mode;
  h.mtime = TarTime{1000000000, 500, true};
  return h;
}

Extractor::DataReader data_of(const std::string& s) {
  auto off = std::make_shared<size_t>(0);
  return [s, off](uint8_t* buf, size_t n) {
    size_t k = std::min(n, s.size() - *off);
    std::memcpy(buf, s.data() + *off, k);
    *off += k;
    return k;
  };
}

const Extractor::DataReader kNoData = [](uint8_t*, size_t) { return size_t{0}; };

std::string make_layer(const std::string& name) {
  std::string p = g_top + "/" + name + (g_write_behind ? "-wb" : "-inline");
  CHECK(mkdir(p.c_str(), 0755) == 0);
  return p;
}

struct Layer {
  std::string path;
  int fd;
  explicit Layer(const std::string& name) : path(make_layer(name)) {
    fd = open(path.c_str(), O_RDONLY | O_DIRECTORY);
  }
  ~Layer() { close(fd); }
  std::string operator/(const std::string& rel) const { return path + "/" + rel; }
};

bool lstat_ok(const std::string& p, struct stat* st) { return lstat(p.c_str(), st) == 0; }

std::string read_file(const std::string& p) {
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return "<missing>";
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

template <class F>
bool throws_archive_error(F&& f, const char* needle) {
  try {
    f();
  } catch (const ArchiveError& e) {
    if (std::strstr(e.what(), needle) == nullptr) {
      std::fprintf(stderr, "message \"%s\" lacks \"%s\"\n", e.what(), needle);
      return false;
    }
    return true;
  }
  return false;
}

void test_rooted_components() {
  auto c = rooted_components("/a/./b/../c/");
  CHECK(c.size() == 2 && c[0] == "a" && c[1] == "c");
  CHECK(rooted_components("../../x").size() == 1);
  CHECK(rooted_components("./").empty());
  CHECK(join_components(rooted_components("a/b/c"), 2) == "a/b");
  CHECK(join_components({}, 0) == ".");
}

void test_every_type_and_metadata() {
  Layer L("types");
  ExtractOptions o = base_opts();
  o.uid_map = {{0, 100000, 1000}};
  o.gid_map = {{0, 200000, 1000}};
  Extractor ex(L.fd, o);
  TarHeader d = H('5', "etc/", 0750);
  d.uid = 1;
  ex.apply(d, kNoData);
  TarHeader f = H('0', "etc/passwd", 04755);
  f.uid = 5;
  f.gid = 6;
  f.size = 5;
  f.xattrs = {{"user.k", "v"}, {"security.selinux", "ignored"}};
  ex.apply(f, data_of("hello"));
  ex.apply([] { TarHeader h = H('2', "etc/abs"); h.linkname = "/etc/passwd"; return h; }(),
           kNoData);
  ex.apply([] { TarHeader h = H('1', "hard"); h.linkname = "etc/passwd"; h.uid = 5; h.gid = 6;
                h.mode = 04755; return h; }(), kNoData);
  ex.apply([] { TarHeader h = H('3', "dev/null", 0666); h.devmajor = 1; h.devminor = 3;
                return h; }(), kNoData);
  ex.apply(H('6', "run/fifo", 0600), kNoData);
  ex.apply(H('g', "pax_global_header"), kNoData);
  ex.finish();

  struct stat st;
  CHECK(lstat_ok(L / "etc", &st) && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0750);
  CHECK(st.st_uid == 100001 && st.st_mtim.tv_sec == 1000000000 && st.st_mtim.tv_nsec == 500);
  CHECK(st.st_atim.tv_sec == 0);  // no atime in the header: the final pass sets the epoch
  CHECK(lstat_ok(L / "etc/passwd", &st) && (st.st_mode & 07777) == 04755);
  CHECK(st.st_uid == 100005 && st.st_gid == 200006 && st.st_nlink == 2);
  CHECK(st.st_atim.tv_sec == 1000000000);  // max(atime, mtime)
  CHECK(read_file(L / "etc/passwd") == "hello");
  char v[8] = {};
  CHECK(getxattr((L / "etc/passwd").c_str(), "user.k", v, sizeof v) == 1 && v[0] == 'v');
  CHECK(getxattr((L / "etc/passwd").c_str(), "security.selinux", v, sizeof v) < 0);
  char target[64] = {};
  CHECK(readlink((L / "etc/abs").c_str(), target, sizeof target) == 11);
  CHECK(std::string(target) == "/etc/passwd");
  CHECK(lstat_ok(L / "dev/null", &st) && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
  CHECK(lstat_ok(L / "dev", &st) && (st.st_mode & 07777) == 0755 && st.st_uid == geteuid());
  CHECK(lstat_ok(L / "run/fifo", &st) && S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0600);
  CHECK(!lstat_ok(L / "pax_global_header", &st));
}

void test_replace_and_merge() {
  Layer L("replace");
  Extractor ex(L.fd, base_opts());
  TarHeader f = H('0', "x/file");
  f.size = 3;
  ex.apply(f, data_of("old"));
  ex.apply(H('5', "x", 0700), kNoData);  // dir onto dir: merge, keep the file
  TarHeader g = H('0', "x/file");
  g.size = 3;
  ex.apply(g, data_of("new"));  // replaces
  TarHeader l = H('0', "x");
  l.size = 4;
  ex.apply(l, data_of("file"));  // a file replaces the whole directory
  ex.finish();
  struct stat st;
  CHECK(lstat_ok(L / "x", &st) && S_ISREG(st.st_mode));
  // the final directory pass follows the name to the file, as Go's Chtimes does
  CHECK(st.st_mtim.tv_sec == 1000000000 && st.st_atim.tv_sec == 0);
  CHECK(!lstat_ok(L / "x/file", &st));
}

void test_paths_stay_inside() {
  Layer L("inside");
  std::string victim = make_layer("victim");
  CHECK(close(open((victim + "/file").c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
  Extractor ex(L.fd, base_opts());
  TarHeader a = H('0', "../../evil");
  a.size = 1;
  ex.apply(a, data_of("e"));
  TarHeader s = H('2', "up");
  s.linkname = "../../../../../..";
  ex.apply(s, kNoData);
  TarHeader b = H('0', "up/through");
  b.size = 1;
  ex.apply(b, data_of("t"));
  TarHeader abs = H('2', "abs");
  abs.linkname = victim;
  ex.apply(abs, kNoData);
  CHECK(throws_archive_error([&] { ex.apply([&] { TarHeader h = H('0', "abs/file");
                                                  h.size = 1; return h; }(), data_of("p")); },
                             "mkdir"));
  CHECK(throws_archive_error([&] { ex.apply([&] { TarHeader h = H('1', "hl");
                                                  h.linkname = "../victim/file"; return h; }(),
                                           kNoData); },
                             "invalid hardlink"));
  CHECK(throws_archive_error([&] { ex.apply([&] { TarHeader h = H('1', "hl2");
                                                  h.linkname = victim + "/file"; return h; }(),
                                           kNoData); },
                             "invalid hardlink"));
  CHECK(throws_archive_error([&] { ex.apply(H('7', "contig"), kNoData); },
                             "unhandled tar header type 55"));
  CHECK(throws_archive_error([&] { ex.apply([] { TarHeader h = H('0', "u"); h.uid = 7;
                                                  return h; }(), kNoData); },
                             "") == false);  // identity map: fine
  ex.finish();
  struct stat st;
  CHECK(read_file(L / "evil") == "e");
  CHECK(read_file(L / "through") == "t");
  CHECK(lstat_ok(victim + "/file", &st) && st.st_size == 0 && st.st_nlink == 1);
  CHECK(!lstat_ok(g_top + "/evil", &st) && !lstat_ok(g_top + "/through", &st));

  ExtractOptions mapped = base_opts();
  mapped.uid_map = {{0, 1000, 10}};
  Extractor ex2(L.fd, mapped);
  CHECK(throws_archive_error([&] { ex2.apply([] { TarHeader h = H('0', "m"); h.uid = 10;
                                                   return h; }(), kNoData); },
                             "container ID 10 cannot be mapped to a host ID"));
}

void test_vfs_whiteouts() {
  Layer L("vfs-wh");
  {
    Extractor lower(L.fd, base_opts());
    for (const char* n : {"d/a", "d/b", "o/old", "o/keep"}) lower.apply(H('0', n), kNoData);
    lower.finish();
  }
  Extractor ex(L.fd, base_opts());
  ex.apply(H('0', "d/.wh.a"), kNoData);
  ex.apply(H('0', "o/keep"), kNoData);
  ex.apply(H('0', "o/.wh..wh..opq"), kNoData);
  ex.apply(H('0', "o/new"), kNoData);
  ex.finish();
  struct stat st;
  CHECK(!lstat_ok(L / "d/a", &st) && lstat_ok(L / "d/b", &st));
  CHECK(!lstat_ok(L / "d/.wh.a", &st));
  CHECK(!lstat_ok(L / "o/old", &st) && lstat_ok(L / "o/keep", &st) && lstat_ok(L / "o/new", &st));
  CHECK(!lstat_ok(L / "o/.wh..wh..opq", &st));
}

void test_overlay_whiteouts() {
  Layer L("ovl-wh");
  ExtractOptions o = base_opts();
  o.whiteout_format = WhiteoutFormat::kOverlay;
  o.uid_map = {{0, 300000, 100}};
  o.gid_map = {{0, 300000, 100}};
  Extractor ex(L.fd, o);
  ex.apply(H('5', ".", 0700), kNoData);  // skipped on overlay
  TarHeader w = H('0', "d/.wh.gone");
  w.uid = 4;
  ex.apply(w, kNoData);
  ex.apply(H('0', "d/.wh..wh..opq"), kNoData);
  ex.apply(H('0', ".wh.x"), kNoData);
  ex.apply(H('0', "x/.wh.y"), kNoData);  // parent whited out just above: ignored
  ex.finish();
  struct stat st;
  CHECK(lstat_ok(L / "d/gone", &st) && S_ISCHR(st.st_mode) && st.st_rdev == 0);
  CHECK((st.st_mode & 07777) == 0 && st.st_uid == 300004);
  CHECK(lstat_ok(L / "d", &st) && st.st_uid == 300000);  // new parent: mapped root
  char v[4] = {};
  CHECK(getxattr((L / "d").c_str(), "trusted.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y');
  CHECK(lstat_ok(L.path, &st) && (st.st_mode & 07777) == 0755);
}

TarHeader F(const std::string& name, const std::string& data, int64_t mode = 0644) {
  TarHeader h = H('0', name, mode);
  h.size = static_cast<int64_t>(data.size());
  return h;
}

// Entries that meet a file the write-behind worker may not have created yet: each must see
// the layer as if every earlier entry were done (what extracting in order gives).
void test_entries_meeting_queued_files() {
  Layer L("queued");
  {
    Extractor x(L.fd, base_opts());
    x.apply(F("a", "first"), data_of("first"));
    x.apply(F("a", "second!"), data_of("second!"));  // the same path again: replaced
    x.apply(F("h", "linked"), data_of("linked"));
    TarHeader link = H('1', "h2");
    link.linkname = "h";
    x.apply(link, kNoData);  // a hard link to a queued file
    x.apply(F("gone", "x"), data_of("x"));
    x.apply(H('0', ".wh.gone"), kNoData);  // a whiteout of a queued file
    x.apply(F("q/r", "in q"), data_of("in q"));
    x.apply(H('5', "q", 0711), kNoData);  // the directory after its file
    x.apply(H('5', "d"), kNoData);
    TarHeader s = H('2', "d/s");
    s.linkname = "/nowhere";
    x.apply(s, kNoData);
    x.apply(F("d", "replaces the directory"), data_of("replaces the directory"));
    x.finish();
  }
  struct stat st;
  CHECK(read_file(L / "a") == "second!");
  CHECK(read_file(L / "h2") == "linked");
  CHECK(lstat_ok(L / "h", &st) && st.st_nlink == 2);
  CHECK(!lstat_ok(L / "gone", &st));
  CHECK(read_file(L / "q/r") == "in q");
  CHECK(lstat_ok(L / "q", &st) && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0711);
  CHECK(read_file(L / "d") == "replaces the directory");
  // A file below a queued file: its parent is not a directory, as in order.
  Layer M("queued-parent");
  Extractor y(M.fd, base_opts());
  y.apply(F("f", "file"), data_of("file"));
  bool threw = false;
  try {
    y.apply(F("f/g", "below"), data_of("below"));
    y.finish();
  } catch (const ArchiveError&) {
    threw = true;
  }
  CHECK(threw);
  CHECK(read_file(M / "f") == "file");
}

// Entries that reach a queued file through a symlink (the path differs, the file is the
// same): the layer must come out as extracting in order gives.
void test_symlinks_into_queued_files() {
  Layer L("queued-alias");
  {
    Extractor x(L.fd, base_opts());
    x.apply(H('5', "a"), kNoData);
    TarHeader s = H('2', "s");
    s.linkname = "a";
    x.apply(s, kNoData);
    TarHeader abs = H('2', "t");
    abs.linkname = "/a";
    x.apply(abs, kNoData);
    x.apply(F("a/f", "queued"), data_of("queued"));
    x.apply(H('5', "s/f", 0700), kNoData);  // replaces the file a/f with a directory
    x.apply(F("a/g", "queued too"), data_of("queued too"));
    x.apply(F("t/g", "replaced"), data_of("replaced"));  // the same file again
    x.apply(F("a/d/h", "deep"), data_of("deep"));
    x.apply(F("s/d/h", "deeper"), data_of("deeper"));
    x.finish();
  }
  struct stat st;
  CHECK(lstat_ok(L / "a/f", &st) && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
  CHECK(read_file(L / "a/g") == "replaced");
  CHECK(read_file(L / "a/d/h") == "deeper");
  CHECK(lstat_ok(L / "s", &st) && S_ISLNK(st.st_mode));
}

// Many files of mixed sizes (empty, tiny, up to the 1 MiB write-behind limit and past it),
// ~40 MiB in all: the write-behind ring (8 MiB) wraps and fills many times over. Every file
// must come out with its own bytes, mode and mtime.
void test_many_files_through_the_ring() {
  Layer L("ring");
  std::vector<std::string> contents;
  {
    Extractor x(L.fd, base_opts());
    uint64_t seed = 12345;
    for (int i = 0; i < 160; ++i) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      size_t size;
      switch (i % 8) {
        case 0: size = 0; break;
        case 1: size = (seed >> 33) % 100; break;
        case 2: size = (1 << 20) - (seed >> 40) % 3; break;  // at the limit
        case 3: size = (1 << 20) + 1 + (seed >> 40) % 4096;  break;  // written inline
        default: size = (seed >> 33) % (700 << 10); break;
      }
      std::string data(size, '\0');
      for (size_t k = 0; k < size; ++k) data[k] = static_cast<char>((k * 131 + i * 7) >> 3);
      TarHeader h = H('0', "f" + std::to_string(i), 0640 + (i % 2));
      h.size = static_cast<int64_t>(size);
      h.mtime = TarTime{1000000000 + i, 0, true};
      x.apply(h, data_of(data));
      contents.push_back(std::move(data));
    }
    x.finish();
  }
  for (size_t i = 0; i < contents.size(); ++i) {
    const std::string p = L / ("f" + std::to_string(i));
    CHECK(read_file(p) == contents[i]);
    struct stat st;
    CHECK(lstat_ok(p, &st) && (st.st_mode & 07777) == 0640 + (i % 2));
    CHECK(st.st_mtim.tv_sec == static_cast<time_t>(1000000000 + i));
  }
}

}  // namespace

int main() {
  char tmpl[] = "/tmp/test_extract.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 2;
  g_top = tmpl;
  umask(022);
  test_rooted_components();
  for (bool wb : {true, false}) {
    g_write_behind = wb;
    test_every_type_and_metadata();
    test_replace_and_merge();
    test_paths_stay_inside();
    test_vfs_whiteouts();
    test_overlay_whiteouts();
    test_many_files_through_the_ring();
    test_entries_meeting_queued_files();
    test_symlinks_into_queued_files();
  }
  std::string rm = "rm -rf " + g_top;
  if (std::system(rm.c_str()) != 0) return 2;
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("test_extract: all checks passed\n");
  return 0;
}
