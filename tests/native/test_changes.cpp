// Change detection, sizes and the regenerated tarball on synthetic trees (run as root:
// device nodes, chown and trusted.* xattrs are used).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ftw.h>
#include <map>
#include <string>
#include <vector>

#include "changes/changes.h"
#include "compress/byte_io.h"
#include "tar/clean_path.h"
#include "tar/writer.h"

using namespace layerstore;

#include "check.h"

namespace {

std::string g_tmp;

void sh(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "command failed: %s\n", cmd.c_str());
    std::exit(2);
  }
}

void write_file(const std::string& path, const std::string& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::exit(2);
  }
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
}

void set_mtime(const std::string& path, time_t sec, long nsec = 0) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW);
}

std::string fresh(const std::string& name) {
  std::string d = g_tmp + "/" + name;
  sh("rm -rf '" + d + "' && mkdir -p '" + d + "'");
  return d;
}

std::string render(const std::vector<Change>& cs) {
  std::string s;
  for (const Change& c : cs) s += "CAD"[static_cast<int>(c.kind)] + std::string(" ") + c.path + "\n";
  return s;
}

// A minimal tar walker for the checks: (name, typeflag, header block, data).
struct Entry {
  std::string name;
  char type;
  std::string block;
  std::string data;
  std::string pax;  // records of the preceding 'x' header
};

int64_t octal(const std::string& b, size_t off, size_t len) {
  int64_t v = 0;
  for (size_t i = off; i < off + len && b[i] >= '0' && b[i] <= '7'; ++i) v = v * 8 + (b[i] - '0');
  return v;
}

std::vector<Entry> parse_tar(const std::string& t, bool* well_formed) {
  std::vector<Entry> out;
  size_t off = 0;
  std::string pax;
  *well_formed = false;
  while (off + 512 <= t.size()) {
    std::string blk = t.substr(off, 512);
    if (blk == std::string(512, '\0')) {
      *well_formed = off + 1024 == t.size() && t.substr(off + 512) == std::string(512, '\0');
      break;
    }
    unsigned sum = 0;
    for (size_t i = 0; i < 512; ++i)
      sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(blk[i]);
    if (octal(blk, 148, 8) != static_cast<int64_t>(sum)) return out;
    int64_t size = octal(blk, 124, 12);
    char type = blk[156];
    std::string data = t.substr(off + 512, static_cast<size_t>(size));
    if (type == 'x') {
      pax = data;
    } else {
      Entry e;
      e.name = std::string(blk.c_str(), strnlen(blk.c_str(), 100));
      std::string prefix(blk.c_str() + 345, strnlen(blk.c_str() + 345, 155));
      if (!prefix.empty()) e.name = prefix + "/" + e.name;
      e.type = type;
      e.block = blk;
      e.pax = pax;
      pax.clear();
      bool has_data = type == '0';
      e.data = has_data ? data : "";
      if (!has_data) size = 0;
      out.push_back(e);
    }
    off += 512 + static_cast<size_t>((size + 511) / 512 * 512);
  }
  return out;
}

// ---- tar writer ---------------------------------------------------------------------
void test_writer() {
  StringSink sink;
  TarWriter tw(sink);
  TarHeader h;
  h.typeflag = '0';
  h.name = "etc/passwd";
  h.mode = 0100644;
  h.size = 5;
  h.uname = "root";
  h.gname = "root";
  h.mtime = {1700000000, 700000000, true};  // rounds up
  CHECK(tw.write_header(h));
  tw.write_data(reinterpret_cast<const uint8_t*>("hello"), 5);

  TarHeader longdir;
  longdir.typeflag = '5';
  longdir.name = std::string(120, 'd') + "/";
  longdir.mode = 040755;
  longdir.mtime = {1700000000, 0, true};
  CHECK(tw.write_header(longdir));

  TarHeader split;
  split.typeflag = '0';
  split.name = std::string(120, 'd') + "/file";
  split.mode = 0100644;
  CHECK(tw.write_header(split));

  TarHeader xa;
  xa.typeflag = '0';
  xa.name = "keep/k";
  xa.mode = 0100644;
  xa.xattrs = {{"user.foo", "baz"}};
  CHECK(tw.write_header(xa));

  TarHeader big;
  big.typeflag = '0';
  big.name = "big";
  big.mode = 0100644;
  big.uid = 3000000;  // over 7 octal digits
  CHECK(tw.write_header(big));

  TarHeader bad;
  bad.typeflag = '0';
  bad.name = "file/";
  CHECK(!tw.write_header(bad));

  TarHeader wh;
  wh.typeflag = '\0';
  wh.name = ".wh.gone";
  CHECK(tw.write_header(wh));
  tw.close();

  bool ok = false;
  std::vector<Entry> es = parse_tar(sink.data, &ok);
  CHECK(ok);
  CHECK(es.size() == 6);
  if (es.size() != 6) return;
  CHECK(es[0].name == "etc/passwd" && es[0].data == "hello");
  CHECK(es[0].block.substr(100, 8) == std::string("0100644\0", 8));
  CHECK(octal(es[0].block, 136, 12) == 1700000001);
  CHECK(es[0].block.substr(257, 8) == std::string("ustar\0" "00", 8));
  CHECK(es[0].block.substr(329, 16) == std::string("0000000\0" "0000000\0", 16));
  CHECK(es[0].block.substr(148, 8).back() == ' ');
  // PAX for a long single component: the name field is the truncated name.
  CHECK(es[1].name == std::string(100, 'd'));
  CHECK(es[1].pax == "131 path=" + std::string(120, 'd') + "/\n");
  // Splittable long path: USTAR prefix.
  CHECK(es[2].name == std::string(120, 'd') + "/file" && es[2].pax.empty());
  CHECK(es[3].pax == "29 SCHILY.xattr.user.foo=baz\n");
  CHECK(es[4].pax == "15 uid=3000000\n" && octal(es[4].block, 108, 8) == 0);
  CHECK(es[5].name == ".wh.gone" && es[5].type == '0');
  // The PAX header of keep/k is named keep/PaxHeaders.0/k.
  CHECK(sink.data.find(std::string("keep/PaxHeaders.0/k\0", 20)) != std::string::npos);

  CHECK(clean_path("a/b/") == "a/b");
  CHECK(clean_path("/../x/./y//") == "/x/y");
  CHECK(clean_path("") == ".");
  CHECK(format_pax_record("path", std::string(91, 'a')) == "101 path=" + std::string(91, 'a') + "\n");
}

// ---- naive changes ------------------------------------------------------------------
void test_naive() {
  std::string old_dir = fresh("naive_old"), new_dir = fresh("naive_new");
  for (const std::string& d : {old_dir, new_dir}) {
    sh("mkdir -p " + d + "/etc/sub " + d + "/gone/inner " + d + "/same");
    write_file(d + "/etc/passwd", "root\n");
    write_file(d + "/etc/sub/f", "x\n");
    write_file(d + "/gone/inner/g", "g\n");
    write_file(d + "/same/s", "s\n");
    write_file(d + "/xat", "12345678");
    symlink("target", (d + "/link").c_str());
    for (const char* p : {"/etc/passwd", "/etc/sub/f", "/gone/inner/g", "/same/s", "/xat"})
      set_mtime(d + p, 1600000000, 123);
    set_mtime(d + "/link", 1600000000, 0);
  }
  // Edits in the new tree.
  sh("rm -rf " + new_dir + "/gone");
  write_file(new_dir + "/etc/sub/f", "xy\n");
  write_file(new_dir + "/added", "abc");
  link((new_dir + "/added").c_str(), (new_dir + "/etc/added-link").c_str());
  setxattr((new_dir + "/xat").c_str(), "user.k", "v", 1, 0);
  // Only the nanoseconds dropped: same time for Go.
  set_mtime(new_dir + "/same/s", 1600000000, 0);

  std::vector<Change> cs = naive_changes(new_dir, {}, old_dir, {});
  CHECK(render(cs) ==
        "A /added\n"
        "C /etc\n"
        "A /etc/added-link\n"
        "C /etc/sub\n"
        "C /etc/sub/f\n"
        "D /gone\n"
        "C /xat\n");
  // added (3 bytes, two links: once) + etc/sub/f (3) + xat (8).
  CHECK(changes_size(new_dir, cs) == 14);

  // Base layer: everything is an Add.
  std::vector<Change> base = naive_changes(old_dir, {}, "", {});
  CHECK(base.size() == 11);
  bool all_add = true;
  for (const Change& c : base) all_add = all_add && c.kind == ChangeKind::kAdd;
  CHECK(all_add);
  CHECK(naive_changes(old_dir, {}, old_dir, {}).empty());

  // Owners compare as container ids: host 100000+N in the new tree is N in the old.
  std::string o2 = fresh("map_old"), n2 = fresh("map_new");
  write_file(o2 + "/f", "1");
  write_file(n2 + "/f", "1");
  set_mtime(o2 + "/f", 1600000000);
  set_mtime(n2 + "/f", 1600000000);
  CHECK(lchown((n2 + "/f").c_str(), 100005, 100005) == 0);
  CHECK(lchown((o2 + "/f").c_str(), 5, 5) == 0);
  IdMappings maps;
  maps.uids = {{0, 100000, 65536}};
  maps.gids = {{0, 100000, 65536}};
  CHECK(naive_changes(n2, maps, o2, {}).empty());
  CHECK(render(naive_changes(n2, {}, o2, {})) == "C /f\n");

  bool threw = false;
  try {
    naive_changes(g_tmp + "/does-not-exist", {}, old_dir, {});
  } catch (const std::exception&) {
    threw = true;
  }
  CHECK(threw);
}

// ---- overlay changes ----------------------------------------------------------------
void test_overlay() {
  std::string lower = fresh("ovl_lower"), diff = fresh("ovl_diff");
  sh("mkdir -p " + lower + "/dir/old " + lower + "/opq/x " + lower + "/keep");
  write_file(lower + "/keep/file", "1");
  write_file(lower + "/gone", "1");
  write_file(lower + "/opq/x/y", "1");
  // diff/: a whiteout for /gone, an opaque /opq with new content, a changed file under
  // /keep (the dir itself copied up unchanged), a new file.
  sh("mkdir -p " + diff + "/keep " + diff + "/opq " + diff + "/newdir/sub");
  CHECK(mknod((diff + "/gone").c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);
  CHECK(setxattr((diff + "/opq").c_str(), "trusted.overlay.opaque", "y", 1, 0) == 0);
  write_file(diff + "/opq/fresh", "new");
  write_file(diff + "/keep/file", "22");
  write_file(diff + "/newdir/sub/n", "n");
  struct stat st;
  stat((lower + "/keep").c_str(), &st);
  chmod((diff + "/keep").c_str(), st.st_mode & 07777);
  set_mtime(diff + "/keep", st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  // Equal sizes: ext4 dirs are 4096 in both.

  std::vector<Change> cs = overlay_changes(diff, {lower});
  CHECK(render(cs) ==
        "D /gone\n"
        "C /keep/file\n"
        "A /newdir\n"
        "A /newdir/sub\n"
        "A /newdir/sub/n\n"
        "D /opq\n"
        "A /opq/fresh\n");
  // Without lowers, nothing is a Delete from the opaque dir.
  std::vector<Change> alone = overlay_changes(diff, {});
  CHECK(alone.size() == 8);
  CHECK(directory_size(diff) == 2 + 3 + 1);

  // Overlay export: the whiteout as .wh.gone (mode 0), opaque dir + .wh..wh..opq.
  StringSink sink;
  export_tree(diff, {}, true, {lower}, sink);
  bool ok = false;
  std::vector<Entry> es = parse_tar(sink.data, &ok);
  CHECK(ok);
  std::vector<std::string> names;
  for (const Entry& e : es) names.push_back(e.name);
  std::vector<std::string> want = {".wh.gone", "keep/", "keep/file", "newdir/", "newdir/sub/",
                                   "newdir/sub/n", "opq/", "opq/.wh..wh..opq", "opq/fresh"};
  CHECK(names == want);
  if (names == want) {
    CHECK(octal(es[0].block, 100, 8) == 0 && es[0].type == '0');
    CHECK(octal(es[7].block, 100, 8) == 0755 && es[7].type == '0');
    CHECK(octal(es[7].block, 136, 12) == 0);
    CHECK(es[2].data == "22");
  }
}

// ---- naive export -------------------------------------------------------------------
void test_export() {
  std::string old_dir = fresh("exp_old"), new_dir = fresh("exp_new");
  sh("mkdir -p " + old_dir + "/gone " + new_dir + "/a/b " + new_dir + "/a-c");
  write_file(new_dir + "/a/b/q", "q");
  write_file(new_dir + "/a-c/q", "qq");
  write_file(new_dir + "/h1", "hard");
  link((new_dir + "/h1").c_str(), (new_dir + "/h2").c_str());
  symlink("/etc/passwd", (new_dir + "/sym").c_str());
  mkfifo((new_dir + "/fifo").c_str(), 0600);
  mknod((new_dir + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3));
  // Owned by container root under the map below; an id outside the map is skipped.
  sh("chown -hR 100000:100000 " + new_dir);
  CHECK(lchown((new_dir + "/a-c/q").c_str(), 100007, 100008) == 0);

  IdMappings maps;
  maps.uids = {{0, 100000, 65536}};
  maps.gids = {{0, 100000, 65536}};
  std::vector<Change> cs = naive_changes(new_dir, maps, old_dir, {});
  StringSink sink;
  uint64_t n = export_changes(new_dir, cs, maps, sink);
  CHECK(n == sink.data.size());
  bool ok = false;
  std::vector<Entry> es = parse_tar(sink.data, &ok);
  CHECK(ok);
  std::vector<std::string> names;
  for (const Entry& e : es) names.push_back(e.name);
  // Sorted by path: "/a-c" < "/a/b" because '-' < '/'.
  std::vector<std::string> want = {"a/", "a-c/", "a-c/q", "a/b/", "a/b/q", "fifo",
                                   ".wh.gone", "h1", "h2", "null", "sym"};
  CHECK(names == want);
  if (names != want) {
    for (auto& s : names) std::fprintf(stderr, "  %s\n", s.c_str());
    return;
  }
  CHECK(octal(es[2].block, 108, 8) == 7 && octal(es[2].block, 116, 8) == 8);
  CHECK(es[2].data == "qq");
  CHECK(es[5].type == '6' && octal(es[5].block, 100, 8) == 010600);
  CHECK(es[6].type == '0' && octal(es[6].block, 100, 8) == 0);
  CHECK(es[7].type == '0' && es[7].data == "hard");
  CHECK(es[8].type == '1' && es[8].block.substr(157, 3) == std::string("h1\0", 3));
  CHECK(es[9].type == '3' && octal(es[9].block, 329, 8) == 1 && octal(es[9].block, 337, 8) == 3);
  CHECK(es[10].type == '2' && es[10].block.substr(157, 12) == std::string("/etc/passwd\0", 12));

  // Base layer walk order (TarWithOptions): "a/" "a/b/" ... before "a-c/".
  StringSink base;
  export_tree(new_dir, maps, false, {}, base);
  std::vector<Entry> bes = parse_tar(base.data, &ok);
  CHECK(ok && bes.size() == 10);
  if (bes.size() == 10) {
    CHECK(bes[0].name == "a/" && bes[1].name == "a/b/" && bes[3].name == "a-c/");
  }
}

// A path through a symlink (a layer changed under our feet) never brings in data from
// outside the layer: the header may be written, the data is not read.
void test_no_escape() {
  std::string outside = fresh("outside"), root = fresh("escape_root");
  write_file(outside + "/secret", "TOPSECRET");
  symlink(outside.c_str(), (root + "/link").c_str());
  StringSink sink;
  export_changes(root, {{"/link/secret", ChangeKind::kAdd}}, {}, sink);
  CHECK(sink.data.find("TOPSECRET") == std::string::npos);
  bool ok = false;
  parse_tar(sink.data, &ok);
  CHECK(ok);
}

int rm_cb(const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }

}  // namespace

int main() {
  char tmpl[] = "/tmp/test_changes.XXXXXX";
  if (!mkdtemp(tmpl)) return 2;
  g_tmp = tmpl;
  test_writer();
  test_naive();
  test_overlay();
  test_export();
  test_no_escape();
  nftw(g_tmp.c_str(), rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  if (failures) std::fprintf(stderr, "%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
