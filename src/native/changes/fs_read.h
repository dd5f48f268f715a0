// Read-only filesystem helpers shared by the change walkers and the tar appender. Errors
// throw PathError with the full path.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace layerstore {
namespace fsread {

struct NameIno {
  std::string name;
  uint64_t ino;
};

// Directory entries without "." and "..", sorted by name (bytewise), with d_ino.
std::vector<NameIno> read_dir(const std::string& dir);

// lstat / stat; false when the path does not exist (ENOENT), or also on ENOTDIR when
// `enotdir_ok`; throws on any other error.
bool lstat_path(const std::string& path, struct stat* st, bool enotdir_ok = false);
bool stat_path(const std::string& path, struct stat* st, bool enotdir_ok = false);

// Names of the extended attributes of path (not following a symlink); empty when the
// filesystem does not support them.
std::vector<std::string> list_xattrs(const std::string& path);

// One attribute's value (not following a symlink); false when absent (ENODATA), or also
// when unsupported if `enotsup_ok`.
bool get_xattr(const std::string& path, const char* name, std::string* value,
               bool enotsup_ok = true);

// containers/storage's major()/minor() (12-bit major, 20-bit minor).
inline uint64_t dev_major(uint64_t dev) { return (dev >> 8) & 0xfff; }
inline uint64_t dev_minor(uint64_t dev) { return (dev & 0xff) | ((dev >> 12) & 0xfff00); }

// An overlay whiteout: a character device 0/0.
inline bool is_whiteout(const struct stat& st) {
  return S_ISCHR(st.st_mode) && dev_major(st.st_rdev) == 0 && dev_minor(st.st_rdev) == 0;
}

// Go's filepath.Dir / Base for the slash-separated paths used here.
std::string path_dir(const std::string& p);
std::string path_base(const std::string& p);

}  // namespace fsread
}  // namespace layerstore
