// Path resolution with "the layer directory is /" rules (what Go gets from its chroot):
// names are cleaned lexically with ".." clamped at the root, and every lookup goes
// through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from the layer's dir fd, so
// absolute and ".." symlinks stay inside the layer. Nothing here follows a final symlink.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace layerstore {

// "/a/./b/../c/" -> {"a", "c"}; "../../x" -> {"x"}; "." or "/" -> {} (the root).
std::vector<std::string> rooted_components(const std::string& name);

// The first n components joined with '/', or "." when n == 0.
std::string join_components(const std::vector<std::string>& comps, size_t n);

// openat2(root_fd, rel, flags | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
// symlinks in every component (the last too, unless flags has O_NOFOLLOW) resolve inside
// the root. `extra_resolve` adds RESOLVE_* flags (RESOLVE_NO_SYMLINKS: -ELOOP at the first
// symlink). Returns the fd, or -errno.
int open_in_root(int root_fd, const std::string& rel, int flags, uint64_t extra_resolve = 0);

// Go's os.RemoveAll on dirfd/name without following symlinks: unlink, or empty a
// directory recursively and rmdir it. A missing name is success. Returns 0 or -errno.
int remove_all_at(int dirfd, const std::string& name);

// Names in a directory (no "." and ".."), read from a dup of dirfd. Returns 0 or -errno.
int list_dir(int dirfd, std::vector<std::string>* names);

}  // namespace layerstore
