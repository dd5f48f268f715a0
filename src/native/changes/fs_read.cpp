#include "changes/fs_read.h"

#include <dirent.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "extract/path_error.h"
#include "tar/clean_path.h"
#include "tar/writer.h"

namespace layerstore {
namespace fsread {

std::vector<NameIno> read_dir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) throw PathError("open", dir, errno);
  std::unique_ptr<DIR, int (*)(DIR*)> guard(d, closedir);
  std::vector<NameIno> out;
  for (;;) {
    errno = 0;
    struct dirent* e = readdir(d);
    if (e == nullptr) {
      if (errno != 0) throw PathError("readdirent", dir, errno);
      break;
    }
    if (e->d_ino == 0) continue;
    const char* n = e->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    out.push_back({n, static_cast<uint64_t>(e->d_ino)});
  }
  std::sort(out.begin(), out.end(),
            [](const NameIno& a, const NameIno& b) { return a.name < b.name; });
  return out;
}

namespace {
bool stat_impl(const char* op, int (*fn)(const char*, struct stat*), const std::string& path,
               struct stat* st, bool enotdir_ok) {
  if (fn(path.c_str(), st) == 0) return true;
  if (errno == ENOENT || (enotdir_ok && errno == ENOTDIR)) return false;
  throw PathError(op, path, errno);
}
}  // namespace

bool lstat_path(const std::string& path, struct stat* st, bool enotdir_ok) {
  return stat_impl("lstat", ::lstat, path, st, enotdir_ok);
}

bool stat_path(const std::string& path, struct stat* st, bool enotdir_ok) {
  return stat_impl("stat", ::stat, path, st, enotdir_ok);
}

std::vector<std::string> list_xattrs(const std::string& path) {
  std::vector<std::string> names;
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = llistxattr(path.c_str(), &buf[0], buf.size());
    if (n >= 0) {
      buf.resize(static_cast<size_t>(n));
      break;
    }
    if (errno == ENOTSUP) return names;
    if (errno != ERANGE) throw PathError("llistxattr", path, errno);
    ssize_t need = llistxattr(path.c_str(), nullptr, 0);
    if (need < 0) throw PathError("llistxattr", path, errno);
    buf.assign(static_cast<size_t>(need) + 1, '\0');
  }
  size_t start = 0;
  for (size_t i = 0; i < buf.size(); ++i) {
    if (buf[i] == '\0') {
      if (i > start) names.emplace_back(buf, start, i - start);
      start = i + 1;
    }
  }
  return names;
}

bool get_xattr(const std::string& path, const char* name, std::string* value, bool enotsup_ok) {
  std::string buf(128, '\0');
  for (;;) {
    ssize_t n = lgetxattr(path.c_str(), name, &buf[0], buf.size());
    if (n >= 0) {
      buf.resize(static_cast<size_t>(n));
      *value = std::move(buf);
      return true;
    }
    if (errno == ENODATA || (enotsup_ok && errno == ENOTSUP)) return false;
    if (errno != ERANGE) throw PathError("lgetxattr", path, errno);
    ssize_t need = lgetxattr(path.c_str(), name, nullptr, 0);
    if (need < 0) throw PathError("lgetxattr", path, errno);
    buf.assign(static_cast<size_t>(need) + 1, '\0');
  }
}

std::string path_dir(const std::string& p) {
  size_t slash = p.rfind('/');
  std::string dir = slash == std::string::npos ? "" : p.substr(0, slash + 1);
  return clean_path(dir);
}

std::string path_base(const std::string& p) {
  if (p.empty()) return ".";
  size_t end = p.size();
  while (end > 0 && p[end - 1] == '/') --end;
  if (end == 0) return "/";
  size_t slash = p.rfind('/', end - 1);
  size_t start = slash == std::string::npos ? 0 : slash + 1;
  return p.substr(start, end - start);
}

}  // namespace fsread
}  // namespace layerstore
