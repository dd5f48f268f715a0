#include "extract/safe_path.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace layerstore {

std::vector<std::string> rooted_components(const std::string& name) {
  std::vector<std::string> out;
  size_t i = 0;
  const size_t n = name.size();
  while (i < n) {
    size_t j = name.find('/', i);
    if (j == std::string::npos) j = n;
    if (j > i) {
      if (j - i == 1 && name[i] == '.') {
        // "." adds nothing
      } else if (j - i == 2 && name[i] == '.' && name[i + 1] == '.') {
        if (!out.empty()) out.pop_back();  // ".." at the root stays at the root
      } else {
        out.emplace_back(name, i, j - i);
      }
    }
    i = j + 1;
  }
  return out;
}

std::string join_components(const std::vector<std::string>& comps, size_t n) {
  if (n == 0) return ".";
  std::string s = comps[0];
  for (size_t k = 1; k < n; ++k) {
    s += '/';
    s += comps[k];
  }
  return s;
}

int open_in_root(int root_fd, const std::string& rel, int flags, uint64_t extra_resolve) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | extra_resolve;
  for (int tries = 0;; ++tries) {
    long fd = syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof(how));
    if (fd >= 0) return static_cast<int>(fd);
    // EAGAIN: a concurrent rename raced the lookup; retry a few times.
    if ((errno == EAGAIN && tries < 64) || errno == EINTR) continue;
    return -errno;
  }
}

int list_dir(int dirfd, std::vector<std::string>* names) {
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    int e = errno;
    close(fd);
    return -e;
  }
  errno = 0;
  while (struct dirent* de = readdir(d)) {
    const char* nm = de->d_name;
    if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0))) continue;
    names->emplace_back(nm);
    errno = 0;
  }
  int e = errno;
  closedir(d);
  return e ? -e : 0;
}

int remove_all_at(int dirfd, const std::string& name) {
  if (unlinkat(dirfd, name.c_str(), 0) == 0) return 0;
  int e = errno;
  if (e == ENOENT) return 0;
  if (e != EISDIR && e != EPERM) return -e;
  int fd = openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -errno;
  std::vector<std::string> children;
  int r = list_dir(fd, &children);
  for (size_t k = 0; r == 0 && k < children.size(); ++k) r = remove_all_at(fd, children[k]);
  close(fd);
  if (r != 0) return r;
  if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
  return -errno;
}

}  // namespace layerstore
