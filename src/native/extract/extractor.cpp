#include "extract/extractor.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "extract/path_error.h"
#include "extract/safe_path.h"
#include "tar/clean_path.h"
#include "tar/errors.h"

namespace layerstore {

namespace {

constexpr size_t kBufferSize = 1 << 20;
const std::string kWhiteoutPrefix = ".wh.";
const std::string kWhiteoutMetaPrefix = ".wh..wh.";
const std::string kWhiteoutOpaque = ".wh..wh..opq";
const std::string kWhiteoutLinkDir = ".wh..wh.plnk";

bool starts_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}

std::string display_path(const std::string& rel) { return rel == "." ? "/" : "/" + rel; }

mode_t process_umask() {
  FILE* f = std::fopen("/proc/self/status", "re");
  mode_t mask = 022;
  if (f == nullptr) return mask;
  char line[256];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    unsigned m = 0;
    if (std::sscanf(line, "Umask: %o", &m) == 1) {
      mask = static_cast<mode_t>(m);
      break;
    }
  }
  std::fclose(f);
  return mask;
}

// Go's time.Time as far as extraction cares: zero (no such time in the header) or a value.
struct GoTime {
  int64_t sec = 0;
  int64_t nsec = 0;
  bool zero = true;
};

GoTime mtime_of(const TarHeader& h) { return GoTime{h.mtime.sec, h.mtime.nsec, false}; }
GoTime atime_of(const TarHeader& h) {
  return h.atime.set ? GoTime{h.atime.sec, h.atime.nsec, false} : GoTime{};
}
GoTime go_time(const TarTime& t) { return t.set ? GoTime{t.sec, t.nsec, false} : GoTime{}; }

bool before(const GoTime& a, const GoTime& b) {
  if (a.zero) return !b.zero;
  if (b.zero) return false;
  return a.sec < b.sec || (a.sec == b.sec && a.nsec < b.nsec);
}

// pkg/system.Chtimes: before the epoch or after time.Unix(0, 1<<63-1) becomes the epoch.
struct timespec clamped(const GoTime& t) {
  constexpr int64_t kMaxSec = 9223372036;
  constexpr int64_t kMaxNsec = 854775807;
  if (t.zero || t.sec < 0 || t.sec > kMaxSec || (t.sec == kMaxSec && t.nsec > kMaxNsec))
    return timespec{0, 0};
  return timespec{static_cast<time_t>(t.sec), static_cast<long>(t.nsec)};
}

// LUtimesNano on symlinks: raw values, a zero time is left alone.
struct timespec raw(const GoTime& t) {
  if (t.zero) return timespec{0, UTIME_OMIT};
  return timespec{static_cast<time_t>(t.sec), static_cast<long>(t.nsec)};
}

constexpr int64_t kWriteBehindMax = 1 << 20;  // bigger files are written inline
constexpr size_t kWriteBehindQueue = 8 << 20;

[[noreturn]] void fail(const char* op, const std::string& rel, int err) {
  throw_path_failure(op, rel, err);
}

std::string proc_path(int dirfd, const std::string& base) {
  return "/proc/self/fd/" + std::to_string(dirfd) + "/" + base;
}

}  // namespace

struct Extractor::Node {
  int dirfd = -1;        // the parent directory
  std::string base;      // final component
  std::string rel;       // layer-relative path ("." for the root)
  int fd = -1;           // open fd of a created regular file or directory
  bool own_fd = true;    // false for the root fd
  bool owner_known = false;
  uid_t cur_uid = 0;
  gid_t cur_gid = 0;
  bool link_to_symlink = false;  // hard link whose inode is a symlink: no chmod/utimes
  int64_t uid = 0;               // mapped ids
  int64_t gid = 0;
  ~Node() {
    if (fd >= 0 && own_fd) close(fd);
  }
};

Extractor::Extractor(int root_dirfd, ExtractOptions opts)
    : root_fd_(fcntl(root_dirfd, F_DUPFD_CLOEXEC, 3)),
      opts_(std::move(opts)),
      euid_(geteuid()),
      egid_(getegid()),
      umask_(process_umask()),
      vfs_(opts_.whiteout_format == WhiteoutFormat::kVfs),
      buffer_(kBufferSize) {
  if (root_fd_ < 0) throw PathError("dup", "/", errno);
  struct stat st;
  if (fstat(root_fd_, &st) != 0) throw PathError("stat", "/", errno);
  if (!S_ISDIR(st.st_mode)) throw PathError("open", "/", ENOTDIR);
  if (!vfs_) {
    root_uid_ = map_to_host(0, opts_.uid_map);
    root_gid_ = map_to_host(0, opts_.gid_map);
  }
  if (opts_.write_behind) writer_ = std::make_unique<FileWriter>(kWriteBehindQueue);
  root_ref_ = std::make_shared<DirRef>(root_fd_, false);
}

Extractor::~Extractor() {
  writer_.reset();  // stops the worker before the fds it may use go away
  for (auto& kv : aufs_links_) close(kv.second.fd);
  drop_parent_cache();
  if (root_fd_ >= 0) close(root_fd_);
}

void Extractor::drop_parent_cache() {
  cached_ = Parent{};  // the fd closes when no queued job needs it any more
  cached_path_.clear();
  cache_dirty_ = false;
}

// Creates the missing directories of comps[0..n) like Go's MkdirAll in the chroot; returns
// an fd of the last one.
int Extractor::make_parents(const std::vector<std::string>& comps, size_t n) {
  int cur = -1;  // fd of the resolved prefix, -1 = root
  for (size_t i = 0; i < n; ++i) {
    const std::string prefix = join_components(comps, i + 1);
    int fd = open_in_root(root_fd_, prefix, O_RDONLY | O_DIRECTORY);
    if (fd == -ENOENT) {
      const int at = cur < 0 ? root_fd_ : cur;
      const mode_t mode = vfs_ ? 0755 : (0777 & ~umask_);
      if (mkdirat(at, comps[i].c_str(), mode) != 0) {
        int e = errno;
        if (cur >= 0) close(cur);
        fail("mkdir", prefix, e);
      }
      fd = openat(at, comps[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) fd = -errno;
      if (fd >= 0) {
        // vfs runs with umask 0: exactly 0755. overlay chowns new parents to the mapped root.
        if (vfs_ && (0755 & ~umask_) != 0755 && fchmod(fd, 0755) != 0) fd = -errno;
        if (fd >= 0 && !vfs_ && (root_uid_ != euid_ || root_gid_ != egid_) &&
            fchown(fd, static_cast<uid_t>(root_uid_), static_cast<gid_t>(root_gid_)) != 0)
          fd = -errno;
      }
    }
    if (cur >= 0) close(cur);
    if (fd < 0) fail("mkdir", prefix, -fd);
    cur = fd;
  }
  return cur;
}

Extractor::Parent Extractor::parent_dir(const std::vector<std::string>& comps) {
  const size_t n = comps.empty() ? 0 : comps.size() - 1;
  if (n == 0) {
    struct stat st;
    if (fstat(root_fd_, &st) != 0) fail("stat", ".", errno);
    return Parent{root_fd_, (st.st_mode & S_ISGID) != 0, st.st_gid, root_ref_};
  }
  const std::string rel = join_components(comps, n);
  if (cached_.fd >= 0 && cached_path_ == rel) return cached_;
  drop_parent_cache();
  int fd;
  if (!pending_order_.empty()) {
    // A symlink on the way may lead to files the writer has queued under another path
    // (touches_pending compares paths only): through a symlink, only once they are done.
    fd = open_in_root(root_fd_, rel, O_RDONLY | O_DIRECTORY, RESOLVE_NO_SYMLINKS);
    if (fd == -ELOOP) {
      settle();
      fd = open_in_root(root_fd_, rel, O_RDONLY | O_DIRECTORY);
    }
  } else {
    fd = open_in_root(root_fd_, rel, O_RDONLY | O_DIRECTORY);
  }
  if (fd == -ENOENT) fd = make_parents(comps, n);
  if (fd < 0) {
    Parent p;
    p.fd = fd;  // -errno, for callers that tolerate ENOTDIR
    return p;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    fail("stat", rel, e);
  }
  cached_ = Parent{fd, (st.st_mode & S_ISGID) != 0, st.st_gid, std::make_shared<DirRef>(fd, true)};
  cached_path_ = rel;
  return cached_;
}

bool Extractor::touches_pending(const TarHeader& entry, const std::vector<std::string>& comps,
                                const std::string& rel, const std::string& base) const {
  if (entry.typeflag == '1' || entry.typeflag == 'g' || starts_with(base, kWhiteoutPrefix))
    return true;  // links and removals: everything queued first
  const uint64_t done = writer_->completed();
  auto queued = [done](const std::unordered_map<std::string, uint64_t>& m,
                       const std::string& k) {
    auto it = m.find(k);
    return it != m.end() && it->second >= done;
  };
  if (queued(pending_files_, rel) || queued(pending_dirs_, rel)) return true;
  std::string prefix;
  for (size_t i = 0; i + 1 < comps.size(); ++i) {
    if (i > 0) prefix += '/';
    prefix += comps[i];
    if (queued(pending_files_, prefix)) return true;
  }
  return false;
}

void Extractor::note_pending(const std::string& rel, const std::vector<std::string>& comps,
                             uint64_t job) {
  pending_files_[rel] = job;
  std::string prefix;
  for (size_t i = 0; i + 1 < comps.size(); ++i) {
    if (i > 0) prefix += '/';
    prefix += comps[i];
    pending_dirs_[prefix] = job;
  }
  pending_order_.emplace_back(job, rel);
  // Forget finished jobs (they finish in order), so the maps hold only what is queued.
  const uint64_t done = writer_->completed();
  while (!pending_order_.empty() && pending_order_.front().first < done) {
    const std::string& r = pending_order_.front().second;
    auto it = pending_files_.find(r);
    if (it != pending_files_.end() && it->second < done) pending_files_.erase(it);
    size_t slash = r.size();
    while ((slash = r.rfind('/', slash - 1)) != std::string::npos && slash > 0) {
      auto d = pending_dirs_.find(r.substr(0, slash));
      if (d != pending_dirs_.end() && d->second < done) pending_dirs_.erase(d);
    }
    pending_order_.pop_front();
  }
}

void Extractor::settle() {
  writer_->barrier();
  pending_files_.clear();
  pending_dirs_.clear();
  pending_order_.clear();
  drop_parent_cache();  // a file the worker created may have replaced a cached directory
}

void Extractor::apply(const TarHeader& entry, const DataReader& entry_data) {
  if (cache_dirty_) drop_parent_cache();
  const std::string name = clean_path(entry.name);  // Go: hdr.Name = filepath.Clean(hdr.Name)
  const std::vector<std::string> comps = rooted_components(entry.name);
  const bool is_root = comps.empty();
  const std::string rel = join_components(comps, comps.size());
  const std::string base = is_root ? "/" : comps.back();
  if (!pending_order_.empty() && touches_pending(entry, comps, rel, base)) settle();

  // Parent directories exist (Go: Lstat(parent) / MkdirAll) for everything but "/".
  Parent parent{root_fd_, false, 0};
  if (name != "/") {
    parent = parent_dir(comps);
    if (parent.fd < 0 && parent.fd != -ENOTDIR)
      fail("open", join_components(comps, comps.size() - 1), -parent.fd);
  }

  // What gets created: the entry itself, or for an AUFS hard link into .wh..wh.plnk a
  // copy of the stashed file there (Go extracts that file's header and data at the path).
  const TarHeader* source = &entry;
  DataReader aufs_data;
  if (vfs_) {
    if (starts_with(name, kWhiteoutMetaPrefix)) {
      // AUFS metadata: skipped, but files under .wh..wh.plnk serve AUFS hard links.
      if (starts_with(name, kWhiteoutLinkDir) && entry.typeflag == '0')
        stash_aufs_link(comps.back(), entry, entry_data);
      if (name != kWhiteoutOpaque) return;
    }
    if (starts_with(base, kWhiteoutPrefix)) {
      if (parent.fd < 0) fail("open", join_components(comps, comps.size() - 1), -parent.fd);
      if (base == kWhiteoutOpaque) {
        vfs_opaque(parent.fd, join_components(comps, comps.size() - 1));
      } else {
        const std::string orig = base.substr(kWhiteoutPrefix.size());
        if (orig.empty() || orig == "." || orig == "..")
          throw ArchiveError("invalid whiteout " + display_path(rel));
        int r = remove_all_at(parent.fd, orig);
        if (r < 0) fail("remove", join_components(comps, comps.size() - 1) + "/" + orig, -r);
        removed_something();
      }
      return;
    }
    if (entry.typeflag == '1') {
      const std::string target = clean_path(entry.linkname);
      if (starts_with(target, kWhiteoutLinkDir)) {
        auto it = aufs_links_.find(rooted_components(target).back());
        if (it == aufs_links_.end()) throw ArchiveError("invalid aufs hardlink");
        source = &it->second.hdr;
        const int fd = it->second.fd;
        auto off = std::make_shared<off_t>(0);
        aufs_data = [fd, off](uint8_t* buf, size_t n) {
          ssize_t r = pread(fd, buf, n, *off);
          if (r < 0) throw PathError("read", "/.wh..wh.plnk", errno);
          *off += r;
          return static_cast<size_t>(r);
        };
      }
    }
  } else if (is_root && name == ".") {
    return;  // overlay's Unpack skips the root entry: the layer dir exists
  }
  const TarHeader& hdr = *source;
  const DataReader& data = aufs_data ? aufs_data : entry_data;
  const char type = hdr.typeflag;

  const bool global = type == 'g';
  Node node;
  node.dirfd = parent.fd;
  node.base = base;
  node.rel = rel;
  node.uid = map_to_host(global ? 0 : hdr.uid, opts_.uid_map);
  node.gid = map_to_host(global ? 0 : hdr.gid, opts_.gid_map);

  if (!vfs_ && starts_with(base, kWhiteoutPrefix)) {
    if (base == kWhiteoutOpaque) {
      if (parent.fd < 0) fail("setxattr", join_components(comps, comps.size() - 1), -parent.fd);
      if (fsetxattr(parent.fd, "trusted.overlay.opaque", "y", 1, 0) != 0)
        fail("setxattr", join_components(comps, comps.size() - 1), errno);
    } else {
      if (parent.fd == -ENOTDIR) return;  // the parent was itself whited out
      const std::string orig = base.substr(kWhiteoutPrefix.size());
      if (orig.empty() || orig == "." || orig == "..")
        throw ArchiveError("invalid whiteout " + display_path(rel));
      const std::string orel = join_components(comps, comps.size() - 1) + "/" + orig;
      if (mknodat(parent.fd, orig.c_str(), S_IFCHR | (0 & ~umask_), makedev(0, 0)) != 0) {
        if (errno == ENOTDIR) return;
        fail("mknod", orel, errno);
      }
      if (fchownat(parent.fd, orig.c_str(), static_cast<uid_t>(node.uid),
                   static_cast<gid_t>(node.gid), AT_SYMLINK_NOFOLLOW) != 0)
        fail("lchown", orel, errno);
    }
    return;
  }

  if (parent.fd < 0) fail("open", join_components(comps, comps.size() - 1), -parent.fd);

  if (is_root) {
    // The layer root itself: only a directory entry can merge onto it.
    if (type != '5') {
      if (global) return;
      throw ArchiveError(display_path(rel) + ": cannot replace the layer root with a " +
                         "non-directory (type " + std::to_string(static_cast<int>(type)) + ")");
    }
    struct stat st;
    if (fstat(root_fd_, &st) != 0) fail("stat", ".", errno);
    node.fd = root_fd_;
    node.own_fd = false;
    node.owner_known = true;
    node.cur_uid = st.st_uid;
    node.cur_gid = st.st_gid;
    set_metadata(node, hdr);
    dirs_.push_back(DirTimes{rel, hdr.atime, hdr.mtime});
    if (vfs_) unpacked_.insert(rel);
    return;
  }

  if (global) {
    // Go removes whatever is at the path, then ignores the PAX global header.
    struct stat st;
    if (fstatat(parent.fd, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      int r = remove_all_at(parent.fd, base);
      if (r < 0) fail("remove", rel, -r);
      removed_something();
    }
    if (vfs_) unpacked_.insert(rel);
    return;
  }
  if (type != '0' && type != '1' && type != '2' && type != '3' && type != '4' &&
      type != '5' && type != '6')
    throw ArchiveError("unhandled tar header type " +
                       std::to_string(static_cast<int>(static_cast<unsigned char>(type))));

  // A hard link's metadata lands on an inode that may still be pending in the worker.
  if (type == '1' && writer_) writer_->barrier();
  if (type == '0' && writer_ && hdr.size >= 0 && hdr.size <= kWriteBehindMax &&
      static_cast<size_t>(hdr.size) <= writer_->max_file()) {
    // Small file: the worker creates, writes and finishes it (nothing queued is in the
    // way, see touches_pending). A fresh inode is ours, with the parent's group when the
    // parent is setgid.
    node.owner_known = true;
    node.cur_uid = euid_;
    node.cur_gid = parent.setgid ? parent.gid : egid_;
    FileJob job;
    job.dir = parent.ref;
    job.base = base;
    job.rel = rel;
    writer_->reserve(job, static_cast<size_t>(hdr.size));
    size_t got = 0;
    while (got < job.size) {
      size_t n = data(job.data + got, job.size - got);
      if (n == 0) break;
      got += n;
    }
    job.size = got;
    job.meta = file_meta(node, hdr);
    note_pending(rel, comps, writer_->submit(std::move(job)));
    // The worker replaces whatever is at rel (a directory too): never resolve under it
    // through the cache again.
    if (cached_path_ == rel || starts_with(cached_path_, rel + "/")) drop_parent_cache();
    if (vfs_) unpacked_.insert(rel);
    return;
  }
  create(node, hdr);
  // A fresh inode belongs to us, with the parent's group when the parent is setgid.
  if (!node.owner_known) {
    node.owner_known = true;
    node.cur_uid = euid_;
    node.cur_gid = parent.setgid ? parent.gid : egid_;
  }
  if (type == '0') write_data(node, data);
  set_metadata(node, hdr);
  if (entry.typeflag == '5') dirs_.push_back(DirTimes{rel, hdr.atime, hdr.mtime});
  if (vfs_) unpacked_.insert(rel);
}

// Keeps a file of .wh..wh.plnk (an unnamed temporary file in the layer's filesystem) for
// the AUFS hard links that point at it.
void Extractor::stash_aufs_link(const std::string& base, const TarHeader& hdr,
                                const DataReader& data) {
  int fd = openat(root_fd_, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) fail("open", ".wh..wh.plnk/" + base, errno);
  try {
    uint8_t* buf = buffer_.data();
    for (size_t n; (n = data(buf, buffer_.size())) > 0;) write_all(fd, buf, n, base);
  } catch (...) {
    close(fd);
    throw;
  }
  auto it = aufs_links_.find(base);
  if (it != aufs_links_.end()) {
    close(it->second.fd);
    aufs_links_.erase(it);
  }
  aufs_links_.emplace(base, AufsLink{hdr, fd});
}

// Creates the node; on EEXIST removes what is there (unless dir onto dir) and retries once.
void Extractor::create(Node& node, const TarHeader& hdr) {
  const char type = hdr.typeflag;
  const char* base = node.base.c_str();
  for (int attempt = 0;; ++attempt) {
    int r = 0;
    const char* op = "create";
    switch (type) {
      case '5':
        op = "mkdir";
        r = mkdirat(node.dirfd, base, 0700);
        if (r == 0) {
          node.fd = openat(node.dirfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (node.fd < 0) fail("open", node.rel, errno);
        }
        break;
      case '0':
        op = "open";
        node.fd = openat(node.dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                         0600);
        r = node.fd < 0 ? -1 : 0;
        break;
      case '2':
        op = "symlink";
        r = symlinkat(hdr.linkname.c_str(), node.dirfd, base);
        break;
      case '1': {
        op = "link";
        // The target resolves inside the layer too; its last component is not followed.
        const std::vector<std::string> tc = rooted_components(hdr.linkname);
        if (tc.empty())
          throw ArchiveError("invalid hardlink " + display_path(node.rel) + " -> " +
                             hdr.linkname + ": the target is the layer root");
        const std::string tparent = join_components(tc, tc.size() - 1);
        int tfd = open_in_root(root_fd_, tparent, O_PATH | O_DIRECTORY);
        if (tfd < 0)
          throw ArchiveError("invalid hardlink " + display_path(node.rel) + " -> " +
                             hdr.linkname + ": " + std::strerror(-tfd));
        r = linkat(tfd, tc.back().c_str(), node.dirfd, base, 0);
        int e = errno;
        close(tfd);
        if (r != 0 && e != EEXIST)
          throw ArchiveError("invalid hardlink " + display_path(node.rel) + " -> " +
                             hdr.linkname + ": " + std::strerror(e));
        errno = e;
        break;
      }
      default: {  // '3', '4', '6'
        op = "mknod";
        mode_t fmt = type == '3' ? S_IFCHR : type == '4' ? S_IFBLK : S_IFIFO;
        dev_t dev = type == '6' ? 0
                                : makedev(static_cast<unsigned>(hdr.devmajor),
                                          static_cast<unsigned>(hdr.devminor));
        r = mknodat(node.dirfd, base, fmt | 0600, dev);
        break;
      }
    }
    if (r == 0) break;
    const int e = errno;
    if (e != EEXIST || attempt > 0) fail(op, node.rel, e);
    struct stat st;
    if (fstatat(node.dirfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0) fail("lstat", node.rel, errno);
    if (S_ISDIR(st.st_mode) && type == '5') {
      // Directory onto directory: merge, keeping the contents.
      node.fd = openat(node.dirfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (node.fd < 0) fail("open", node.rel, errno);
      node.owner_known = true;
      node.cur_uid = st.st_uid;
      node.cur_gid = st.st_gid;
      removed_something();  // its metadata changes: do not trust a cached view of it
      return;
    }
    int rr = remove_all_at(node.dirfd, node.base);
    if (rr < 0) fail("remove", node.rel, -rr);
    removed_something();
  }
  if (type == '1') {
    struct stat st;
    if (fstatat(node.dirfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0) fail("lstat", node.rel, errno);
    node.owner_known = true;
    node.cur_uid = st.st_uid;
    node.cur_gid = st.st_gid;
    node.link_to_symlink = S_ISLNK(st.st_mode);
  }
}

void Extractor::write_data(Node& node, const DataReader& data) {
  uint8_t* buf = buffer_.data();
  for (;;) {
    size_t n = data(buf, buffer_.size());
    if (n == 0) break;
    write_all(node.fd, buf, n, node.rel);
  }
}

FileMeta Extractor::file_meta(const Node& node, const TarHeader& hdr) const {
  FileMeta m;
  m.uid = static_cast<uid_t>(node.uid);
  m.gid = static_cast<gid_t>(node.gid);
  m.chown = !(node.owner_known && node.cur_uid == m.uid && node.cur_gid == m.gid);
  m.ignore_chown_errors = opts_.ignore_chown_errors;
  for (const auto& kv : hdr.xattrs)
    if (kv.first != "security.selinux") m.xattrs.push_back(kv);
  m.mode = static_cast<mode_t>(hdr.mode & 07777);
  GoTime mt = mtime_of(hdr);
  GoTime at = atime_of(hdr);
  if (before(at, mt)) at = mt;
  m.times[0] = clamped(at);
  m.times[1] = clamped(mt);
  return m;
}

void Extractor::set_metadata(Node& node, const TarHeader& hdr) {
  if (node.fd >= 0) {  // regular files and directories: everything through the fd
    apply_fd_metadata(node.fd, node.rel, file_meta(node, hdr));
    return;
  }
  // Symlinks, hard links, devices and fifos: by name in their parent directory.
  const char type = hdr.typeflag;
  const char* base = node.base.c_str();
  // 1. lchown to the mapped ids, unless the inode already has them.
  const uid_t uid = static_cast<uid_t>(node.uid);
  const gid_t gid = static_cast<gid_t>(node.gid);
  if (!(node.owner_known && node.cur_uid == uid && node.cur_gid == gid)) {
    if (fchownat(node.dirfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 &&
        !opts_.ignore_chown_errors) {
      if (errno == EINVAL)
        throw ArchiveError("potentially insufficient UIDs or GIDs available in user namespace "
                           "(requested " + std::to_string(uid) + ":" + std::to_string(gid) +
                           " for " + display_path(node.rel) +
                           "): Check /etc/subuid and /etc/subgid if configured locally and "
                           "run \"podman system migrate\": lchown " + display_path(node.rel) +
                           ": invalid argument");
      fail("lchown", node.rel, errno);
    }
  }
  // 2. xattrs from SCHILY.xattr.* (security.selinux is left to the labeling code).
  for (const auto& kv : hdr.xattrs) {
    if (kv.first == "security.selinux") continue;
    const std::string p = proc_path(node.dirfd, node.base);
    if (lsetxattr(p.c_str(), kv.first.c_str(), kv.second.data(), kv.second.size(), 0) == 0)
      continue;
    const int e = errno;
    if (e == ENOTSUP) continue;
    // The kernel refusing this attribute here (user.* on a symlink, a bad name or value)
    // is the archive's fault.
    if (e == EPERM || e == EINVAL || e == ERANGE || e == E2BIG)
      throw ArchiveError("lsetxattr " + display_path(node.rel) + " " + kv.first + ": " +
                         std::strerror(e));
    fail("lsetxattr", node.rel, e);
  }
  // 3. chmod after chown (chown clears setuid/setgid); never on symlinks.
  const bool plain = type != '2' && !node.link_to_symlink;
  if (plain && fchmodat(node.dirfd, base, static_cast<mode_t>(hdr.mode & 07777), 0) != 0)
    fail("chmod", node.rel, errno);
  // 4. times: atime = max(atime, mtime); clamped to the epoch except for symlinks.
  GoTime m = mtime_of(hdr);
  GoTime a = atime_of(hdr);
  if (before(a, m)) a = m;
  if (type == '2') {
    struct timespec ts[2] = {raw(a), raw(m)};
    if (utimensat(node.dirfd, base, ts, AT_SYMLINK_NOFOLLOW) != 0)
      fail("lutimes", node.rel, errno);
  } else if (plain) {
    struct timespec ts[2] = {clamped(a), clamped(m)};
    if (utimensat(node.dirfd, base, ts, 0) != 0) fail("chtimes", node.rel, errno);
  }
}

// vfs opaque directory: remove everything under dir that this layer did not unpack.
void Extractor::vfs_opaque(int dirfd, const std::string& lexical_dir) {
  std::vector<std::string> names;
  int r = list_dir(dirfd, &names);
  if (r < 0) fail("readdir", lexical_dir, -r);
  for (const std::string& n : names) {
    const std::string p = lexical_dir == "." ? n : lexical_dir + "/" + n;
    if (unpacked_.count(p) == 0) {
      int rr = remove_all_at(dirfd, n);
      if (rr < 0) fail("remove", p, -rr);
      removed_something();
      continue;
    }
    struct stat st;
    if (fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
      continue;
    int sub = openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) fail("open", p, errno);
    try {
      vfs_opaque(sub, p);
    } catch (...) {
      close(sub);
      throw;
    }
    close(sub);
  }
}

void Extractor::set_dir_times(const DirTimes& d) {
  // pkg/system.Chtimes(path, hdr.AccessTime, hdr.ModTime): no max rule, zero -> epoch.
  struct timespec ts[2] = {clamped(go_time(d.atime)),
                           clamped(GoTime{d.mtime.sec, d.mtime.nsec, false})};
  int fd = open_in_root(root_fd_, d.path, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    int r = futimens(fd, ts);
    int e = errno;
    close(fd);
    if (r != 0) fail("chtimes", d.path, e);
    return;
  }
  if (fd != -ENOTDIR) fail("chtimes", d.path, -fd);
  // Replaced by a non-directory later in the layer: Go's Chtimes follows to it.
  fd = open_in_root(root_fd_, d.path, O_PATH);
  if (fd < 0) fail("chtimes", d.path, -fd);
  const std::string p = "/proc/self/fd/" + std::to_string(fd);
  int r = utimensat(AT_FDCWD, p.c_str(), ts, 0);
  int e = errno;
  close(fd);
  if (r != 0) fail("chtimes", d.path, e);
}

void Extractor::finish() {
  if (writer_) writer_->barrier();
  drop_parent_cache();
  for (const DirTimes& d : dirs_) set_dir_times(d);
  dirs_.clear();
  if (opts_.sync && syncfs(root_fd_) != 0) throw PathError("syncfs", "/", errno);
}

}  // namespace layerstore
