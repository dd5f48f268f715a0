// OverlayChanges and directory.Size over an overlay layer's diff/ (containers/storage 1.43
// pkg/archive changes.go + changes_linux.go, pkg/directory).
#include <unordered_set>

#include "changes/changes.h"
#include "changes/fs_read.h"
#include "extract/path_error.h"

namespace layerstore {

namespace {

// Go's os.Stat on a lower path: follows symlinks; a missing path is "not there".
bool stat_lower(const std::string& layer, const std::string& path, struct stat* st) {
  return fsread::stat_path(layer + path, st, true);
}

// overlayLowerContainsWhiteout.
bool lower_whiteout(const std::string& layer, const std::string& path) {
  struct stat st;
  return stat_lower(layer, path, &st) && fsread::is_whiteout(st);
}

class OverlayWalker {
 public:
  OverlayWalker(const std::string& rw, const std::vector<std::string>& layers)
      : rw_(rw), layers_(layers) {}

  void walk_dir(const std::string& path) {
    const std::string prefix = path == "/" ? "/" : path + "/";
    for (const fsread::NameIno& e : fsread::read_dir(rw_ + path)) {
      const std::string child = prefix + e.name;
      struct stat st;
      // A name that vanished since readdir is skipped, as filepath.Walk does.
      if (!fsread::lstat_path(rw_ + child, &st)) continue;
      visit(child, st);
      if (S_ISDIR(st.st_mode)) walk_dir(child);
    }
  }

  std::vector<Change> out;

 private:
  // overlayDeletedFile: the path this entry deletes, or "" for none.
  std::string deleted_file(const std::string& path, const struct stat& fi) {
    if (fsread::is_whiteout(fi)) return path;
    if (!S_ISDIR(fi.st_mode)) return "";
    std::string opaque;
    if (!fsread::get_xattr(rw_ + path, "trusted.overlay.opaque", &opaque, false)) return "";
    if (opaque != "y" || layers_.empty()) return "";
    for (const std::string& layer : layers_) {
      struct stat st;
      if (stat_lower(layer, path, &st)) return fsread::is_whiteout(st) ? "" : path;
      for (std::string dir = fsread::path_dir(path); !dir.empty() && dir != "/";
           dir = fsread::path_dir(dir)) {
        if (lower_whiteout(layer, dir)) return "";
      }
    }
    return "";
  }

  void visit(const std::string& path, const struct stat& f) {
    Change change{path, ChangeKind::kAdd};
    std::string deleted = deleted_file(path, f);
    if (!deleted.empty()) {
      change = {deleted, ChangeKind::kDelete};
    } else {
      for (const std::string& layer : layers_) {
        bool ignore = lower_whiteout(layer, path);
        for (std::string dir = fsread::path_dir(path); !ignore && !dir.empty() && dir != "/";
             dir = fsread::path_dir(dir))
          ignore = lower_whiteout(layer, dir);
        if (ignore) break;
        // Go's os.Stat here treats only ENOENT as absent: ENOTDIR fails the whole call.
        struct stat st;
        if (!fsread::stat_path(layer + path, &st)) continue;
        if (S_ISDIR(st.st_mode) && S_ISDIR(f.st_mode) && f.st_size == st.st_size &&
            f.st_mode == st.st_mode &&
            f.st_mtim.tv_sec == st.st_mtim.tv_sec &&
            (f.st_mtim.tv_nsec == st.st_mtim.tv_nsec || f.st_mtim.tv_nsec == 0 ||
             st.st_mtim.tv_nsec == 0))
          return;  // an unchanged directory is not recorded
        change.kind = ChangeKind::kModify;
        break;
      }
    }
    if (S_ISDIR(f.st_mode)) changed_dirs_.insert(path);
    if (change.kind == ChangeKind::kAdd || change.kind == ChangeKind::kDelete) {
      std::vector<Change> tail;
      for (std::string parent = fsread::path_dir(path); parent != "/";
           parent = fsread::path_dir(parent)) {
        if (changed_dirs_.insert(parent).second)
          tail.insert(tail.begin(), Change{parent, ChangeKind::kModify});
      }
      out.insert(out.end(), tail.begin(), tail.end());
    }
    out.push_back(change);
  }

  std::string rw_;
  const std::vector<std::string>& layers_;
  std::unordered_set<std::string> changed_dirs_;
};

}  // namespace

std::vector<Change> overlay_changes(const std::string& diff_root,
                                    const std::vector<std::string>& lowers) {
  struct stat st;
  if (!fsread::lstat_path(diff_root, &st)) throw PathError("lstat", diff_root, ENOENT);
  OverlayWalker walker(diff_root, lowers);
  if (S_ISDIR(st.st_mode)) walker.walk_dir("/");
  return std::move(walker.out);
}

int64_t directory_size(const std::string& root) {
  struct stat st;
  if (!fsread::lstat_path(root, &st)) throw PathError("lstat", root, ENOENT);
  int64_t size = 0;
  std::unordered_set<uint64_t> seen;
  std::vector<std::string> dirs;
  if (S_ISDIR(st.st_mode)) {
    dirs.push_back(root);
  } else {
    return st.st_size;
  }
  while (!dirs.empty()) {
    std::string dir = std::move(dirs.back());
    dirs.pop_back();
    std::vector<fsread::NameIno> entries;
    try {
      entries = fsread::read_dir(dir);
    } catch (const PathError& e) {
      if (e.err == ENOENT) continue;  // vanished while walking
      throw;
    }
    for (const fsread::NameIno& e : entries) {
      const std::string path = dir + "/" + e.name;
      struct stat cst;
      if (!fsread::lstat_path(path, &cst)) continue;
      if (S_ISDIR(cst.st_mode)) {
        dirs.push_back(path);
        continue;
      }
      if (seen.insert(static_cast<uint64_t>(cst.st_ino)).second) size += cst.st_size;
    }
  }
  return size;
}

}  // namespace layerstore
