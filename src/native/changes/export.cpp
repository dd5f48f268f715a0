// ExportChanges and TarWithOptions: containers/storage 1.43's tarAppender.addTarFile
// (FileInfoHeader, security/user xattrs, hard links by inode, ids mapped back to the
// container, ModTime truncated to seconds, the overlay whiteout converter) over Go's
// archive/tar writer layout (tar/writer.h).
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <memory>
#include <unordered_map>

#include "changes/changes.h"
#include "changes/fs_read.h"
#include "extract/path_error.h"
#include "tar/clean_path.h"
#include "tar/writer.h"

namespace layerstore {

namespace {

// os/user lookups, cached like archive/tar's userMap/groupMap.
class IdNames {
 public:
  const std::string& user(uint32_t uid) {
    auto it = users_.find(uid);
    if (it != users_.end()) return it->second;
    std::string name;
    struct passwd pw, *res = nullptr;
    std::vector<char> buf(16384);
    if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &res) == 0 && res != nullptr)
      name = res->pw_name;
    return users_.emplace(uid, std::move(name)).first->second;
  }
  const std::string& group(uint32_t gid) {
    auto it = groups_.find(gid);
    if (it != groups_.end()) return it->second;
    std::string name;
    struct group gr, *res = nullptr;
    std::vector<char> buf(16384);
    if (getgrgid_r(gid, &gr, buf.data(), buf.size(), &res) == 0 && res != nullptr)
      name = res->gr_name;
    return groups_.emplace(gid, std::move(name)).first->second;
  }

 private:
  std::unordered_map<uint32_t, std::string> users_;
  std::unordered_map<uint32_t, std::string> groups_;
};

class TarAppender {
 public:
  TarAppender(const std::string& root, ByteSink& out, const IdMappings& maps,
              bool overlay_whiteouts, const std::vector<std::string>& lowers)
      : tw_(out), maps_(maps), overlay_(overlay_whiteouts), lowers_(lowers), buf_(1 << 20) {
    root_fd_ = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd_ < 0) throw PathError("open", root, errno);
  }
  ~TarAppender() { ::close(root_fd_); }
  TarAppender(const TarAppender&) = delete;
  TarAppender& operator=(const TarAppender&) = delete;

  TarWriter& writer() { return tw_; }

  // addTarFile(path, name). Go logs a failing entry and goes on; so does this.
  // Returns whether path is a directory (for the tree walk).
  bool add(const std::string& path, const std::string& name) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return false;
    try {
      add_or_throw(path, name, st);
    } catch (const PathError&) {
    }
    return S_ISDIR(st.st_mode);
  }

 private:
  void add_or_throw(const std::string& path, const std::string& name, const struct stat& st) {
    std::string link;
    if (S_ISLNK(st.st_mode)) {
      std::vector<char> lb(static_cast<size_t>(std::max<off_t>(st.st_size, 255)) + 1);
      for (;;) {
        ssize_t n = readlink(path.c_str(), lb.data(), lb.size());
        if (n < 0) return;
        if (static_cast<size_t>(n) < lb.size()) {
          link.assign(lb.data(), static_cast<size_t>(n));
          break;
        }
        lb.resize(lb.size() * 2);
      }
    }
    if (S_ISSOCK(st.st_mode)) return;  // "archive: skipping %q since it is a socket"

    // tar.FileInfoHeader + fillGo18FileTypeBits + setHeaderForSpecialDevice.
    TarHeader h;
    h.name = name;
    switch (st.st_mode & S_IFMT) {
      case S_IFREG:
        h.typeflag = '0';
        h.size = st.st_size;
        break;
      case S_IFDIR:
        h.typeflag = '5';
        if (h.name.empty() || h.name.back() != '/') h.name.push_back('/');
        break;
      case S_IFLNK:
        h.typeflag = '2';
        h.linkname = link;
        break;
      case S_IFCHR:
        h.typeflag = '3';
        break;
      case S_IFBLK:
        h.typeflag = '4';
        break;
      case S_IFIFO:
        h.typeflag = '6';
        break;
      default:
        return;  // "archive/tar: unknown file mode"
    }
    h.mode = static_cast<int64_t>(st.st_mode & (S_IFMT | 07777));
    h.uid = st.st_uid;
    h.gid = st.st_gid;
    h.uname = names_.user(st.st_uid);
    h.gname = names_.group(st.st_gid);
    if ((st.st_mode & S_IFBLK) != 0 || (st.st_mode & S_IFCHR) != 0) {
      h.devmajor = static_cast<int64_t>(fsread::dev_major(st.st_rdev));
      h.devminor = static_cast<int64_t>(fsread::dev_minor(st.st_rdev));
    }
    // maybeTruncateHeaderModTime: the format is unknown, so whole seconds.
    h.mtime = {st.st_mtim.tv_sec, 0, true};

    // ReadSecurityXattrToTarHeader, then ReadUserXattrToTarHeader.
    for (const char* key : {"security.capability", "security.ima"}) {
      std::string value;
      if (fsread::get_xattr(path, key, &value)) h.xattrs.emplace_back(key, std::move(value));
    }
    for (const std::string& key : fsread::list_xattrs(path)) {
      if (key.compare(0, 5, "user.") != 0) continue;
      std::string value;
      if (fsread::get_xattr(path, key.c_str(), &value, false))
        h.xattrs.emplace_back(key, std::move(value));
    }

    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto it = seen_.find(static_cast<uint64_t>(st.st_ino));
      if (it != seen_.end()) {
        h.typeflag = '1';
        h.linkname = it->second;
        h.size = 0;
      } else {
        seen_.emplace(static_cast<uint64_t>(st.st_ino), name);
      }
    }

    if (fsread::path_base(h.name).compare(0, 4, ".wh.") != 0 && !maps_.empty()) {
      if (!maps_.to_container(h.uid, h.gid, &h.uid, &h.gid)) return;
    }

    std::unique_ptr<TarHeader> wo;
    if (overlay_ && !convert_write(h, path, st, &wo)) return;
    if (wo) {
      if (!tw_.write_header(h)) return;
      h = *wo;
    }
    if (!tw_.write_header(h)) return;
    if (h.typeflag == '0' && h.size > 0) copy_data(path, name, st);
  }

  // overlayWhiteoutConverter.ConvertWrite; false when Go would fail the entry.
  bool convert_write(TarHeader& h, const std::string& path, const struct stat& st,
                     std::unique_ptr<TarHeader>* wo) {
    if (S_ISCHR(st.st_mode) && h.devmajor == 0 && h.devminor == 0) {
      size_t slash = h.name.rfind('/');
      std::string dir = slash == std::string::npos ? "" : h.name.substr(0, slash + 1);
      std::string file = slash == std::string::npos ? h.name : h.name.substr(slash + 1);
      h.name = clean_path(dir.empty() ? ".wh." + file : dir + "/.wh." + file);
      h.mode = 0;
      h.typeflag = '0';
      h.size = 0;
    }
    if (!S_ISDIR(st.st_mode)) return true;
    std::string opaque;
    if (!fsread::get_xattr(path, "trusted.overlay.opaque", &opaque, false)) return true;
    if (opaque != "y" || lowers_.empty()) return true;
    const std::string rel = clean_path(h.name);  // "a/b/" -> "a/b"
    for (const std::string& lower : lowers_) {
      struct stat ls;
      if (fsread::stat_path(lower + "/" + rel, &ls, true)) {
        if (fsread::is_whiteout(ls)) return true;
        auto w = std::make_unique<TarHeader>();
        w->typeflag = '0';
        w->mode = h.mode & 0777;
        w->name = clean_path(h.name + "/.wh..wh..opq");
        w->uid = h.uid;
        w->gid = h.gid;
        w->uname = h.uname;
        w->gname = h.gname;
        *wo = std::move(w);
        return true;
      }
      for (std::string dir = fsread::path_dir(h.name); !dir.empty() && dir != "." && dir != "/";
           dir = fsread::path_dir(dir)) {
        struct stat ds;
        if (fsread::stat_path(lower + "/" + dir, &ds, true) && fsread::is_whiteout(ds))
          return true;
      }
    }
    return true;
  }

  // The file's data, opened beneath the root with no symlink on the way, and read only if
  // it is the inode that was lstat'ed: a layer changing underneath (a directory swapped
  // for a symlink) cannot pull a file from outside it into the tarball. What is not read
  // is zero-filled by the writer.
  void copy_data(const std::string& path, const std::string& rel, const struct stat& st) {
    struct open_how how = {};
    how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    int fd = static_cast<int>(syscall(SYS_openat2, root_fd_, rel.c_str(), &how, sizeof how));
    if (fd < 0 && errno == ENOSYS) fd = ::open(path.c_str(), static_cast<int>(how.flags));
    if (fd < 0) throw PathError("open", path, errno);
    struct stat now;
    if (fstat(fd, &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino ||
        !S_ISREG(now.st_mode)) {
      ::close(fd);
      throw PathError("open", path, ESTALE);
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    while (tw_.remaining() > 0) {
      size_t want = static_cast<size_t>(std::min<int64_t>(tw_.remaining(),
                                                          static_cast<int64_t>(buf_.size())));
      ssize_t n = ::read(fd, buf_.data(), want);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      tw_.write_data(buf_.data(), static_cast<size_t>(n));
    }
    ::close(fd);
  }

  int root_fd_ = -1;
  TarWriter tw_;
  const IdMappings& maps_;
  bool overlay_;
  const std::vector<std::string>& lowers_;
  std::vector<uint8_t> buf_;
  IdNames names_;
  std::unordered_map<uint64_t, std::string> seen_;
};

void walk_tree(TarAppender& ta, const std::string& root, const std::string& rel) {
  std::vector<fsread::NameIno> entries;
  try {
    entries = fsread::read_dir(rel.empty() ? root : root + "/" + rel);
  } catch (const PathError&) {
    return;  // WalkDir reports it; TarWithOptions logs it and goes on
  }
  for (const fsread::NameIno& e : entries) {
    const std::string child = rel.empty() ? e.name : rel + "/" + e.name;
    const std::string path = root + "/" + child;
    if (ta.add(path, child)) walk_tree(ta, root, child);
  }
}

}  // namespace

uint64_t export_changes(const std::string& root, std::vector<Change> changes,
                        const IdMappings& maps, ByteSink& out) {
  struct stat st;
  if (!fsread::lstat_path(root, &st)) throw PathError("lstat", root, ENOENT);
  std::sort(changes.begin(), changes.end(),
            [](const Change& a, const Change& b) { return a.path < b.path; });
  static const std::vector<std::string> no_lowers;
  TarAppender ta(root, out, maps, false, no_lowers);
  for (const Change& c : changes) {
    if (c.kind == ChangeKind::kDelete) {
      const std::string wh =
          clean_path(fsread::path_dir(c.path) + "/.wh." + fsread::path_base(c.path));
      struct timespec now;
      clock_gettime(CLOCK_REALTIME, &now);
      TarHeader h;
      h.typeflag = '\0';
      h.name = wh.substr(1);
      h.mtime = {now.tv_sec, now.tv_nsec, true};
      ta.writer().write_header(h);
    } else {
      ta.add(root + c.path, c.path.substr(1));
    }
  }
  ta.writer().close();
  return ta.writer().bytes_written();
}

uint64_t export_tree(const std::string& root, const IdMappings& maps, bool overlay_whiteouts,
                     const std::vector<std::string>& lowers, ByteSink& out) {
  struct stat st;
  if (!fsread::lstat_path(root, &st)) throw PathError("lstat", root, ENOENT);
  TarAppender ta(root, out, maps, overlay_whiteouts, lowers);
  if (S_ISDIR(st.st_mode)) walk_tree(ta, root, "");
  ta.writer().close();
  return ta.writer().bytes_written();
}

}  // namespace layerstore
