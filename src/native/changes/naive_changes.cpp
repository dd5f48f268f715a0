// ChangesDirs as containers/storage 1.43 computes it: walk both trees side by side (pruning
// names whose inode is the same on the same device), build a FileInfo tree for each, then
// compare (statDifferent, security.capability, user.* xattrs).
#include <algorithm>
#include <map>
#include <memory>
#include <unordered_set>

#include "changes/changes.h"
#include "changes/fs_read.h"
#include "extract/path_error.h"

namespace layerstore {

namespace {

struct Node {
  std::string path;  // "/a/b"; "/" for the root
  Node* parent = nullptr;
  struct stat st = {};
  std::string capability;  // security.capability; empty when absent (Go's bytes.Equal)
  std::vector<std::pair<std::string, std::string>> user_xattrs;  // sorted by name
  std::map<std::string, std::unique_ptr<Node>> children;
  bool added = false;

  bool is_dir() const { return parent == nullptr || (st.st_mode & S_IFDIR) != 0; }
};

class TreeWalker {
 public:
  TreeWalker(const std::string& dir1, const std::string& dir2) : dir1_(dir1), dir2_(dir2) {}

  void walk(const std::string& path, Node* n1, Node* n2, const struct stat* i1,
            const struct stat* i2) {
    const bool is1dir = i1 != nullptr && S_ISDIR(i1->st_mode);
    const bool is2dir = i2 != nullptr && S_ISDIR(i2->st_mode);
    if (!is1dir && !is2dir) return;
    const bool same_device = i1 != nullptr && i2 != nullptr && i1->st_dev == i2->st_dev;

    std::vector<fsread::NameIno> names1, names2;
    if (is1dir) names1 = fsread::read_dir(dir1_ + path);
    if (is2dir) names2 = fsread::read_dir(dir2_ + path);

    std::vector<std::string> names;
    size_t a = 0, b = 0;
    while (a < names1.size() && b < names2.size()) {
      int c = names1[a].name.compare(names2[b].name);
      if (c < 0) {
        names.push_back(names1[a++].name);
      } else if (c > 0) {
        names.push_back(names2[b++].name);
      } else {
        if (names1[a].ino != names2[b].ino || !same_device) names.push_back(names1[a].name);
        ++a;
        ++b;
      }
    }
    for (; a < names1.size(); ++a) names.push_back(names1[a].name);
    for (; b < names2.size(); ++b) names.push_back(names2[b].name);

    const std::string prefix = path == "/" ? "/" : path + "/";
    for (const std::string& name : names) {
      const std::string child = prefix + name;
      struct stat c1, c2;
      bool have1 = is1dir && fsread::lstat_path(dir1_ + child, &c1);
      bool have2 = is2dir && fsread::lstat_path(dir2_ + child, &c2);
      Node* k1 = have1 ? add_node(n1, name, child, c1, dir1_) : nullptr;
      Node* k2 = have2 ? add_node(n2, name, child, c2, dir2_) : nullptr;
      walk(child, k1, k2, have1 ? &c1 : nullptr, have2 ? &c2 : nullptr);
    }
  }

 private:
  static Node* add_node(Node* parent, const std::string& name, const std::string& path,
                        const struct stat& st, const std::string& dir) {
    auto node = std::make_unique<Node>();
    node->path = path;
    node->parent = parent;
    node->st = st;
    const std::string full = dir + path;
    for (const std::string& key : fsread::list_xattrs(full)) {
      if (key == "security.capability") {
        fsread::get_xattr(full, key.c_str(), &node->capability);
      } else if (key.compare(0, 5, "user.") == 0) {
        std::string value;
        if (fsread::get_xattr(full, key.c_str(), &value, false))
          node->user_xattrs.emplace_back(key, std::move(value));
      }
    }
    std::sort(node->user_xattrs.begin(), node->user_xattrs.end());
    Node* raw = node.get();
    parent->children[name] = std::move(node);
    return raw;
  }

  std::string dir1_, dir2_;
};

bool same_fs_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && (a.tv_nsec == b.tv_nsec || a.tv_nsec == 0 || b.tv_nsec == 0);
}

bool stat_different(const struct stat& old_st, const IdMappings& old_maps,
                    const struct stat& new_st, const IdMappings& new_maps) {
  int64_t old_uid = old_st.st_uid, old_gid = old_st.st_gid;
  int64_t uid = new_st.st_uid, gid = new_st.st_gid;
  if (new_maps.to_container(uid, gid, &uid, &gid)) old_maps.to_container(old_uid, old_gid, &old_uid, &old_gid);
  const bool owner_changed = uid != old_uid || gid != old_gid;
  return old_st.st_mode != new_st.st_mode || owner_changed || old_st.st_rdev != new_st.st_rdev ||
         ((old_st.st_mode & S_IFDIR) != S_IFDIR &&
          (!same_fs_time(old_st.st_mtim, new_st.st_mtim) || old_st.st_size != new_st.st_size));
}

struct Comparer {
  const IdMappings& new_maps;
  const IdMappings& old_maps;
  std::vector<Change>& out;

  void add_changes(Node* info, Node* old) {
    const size_t size_at_entry = out.size();
    if (old == nullptr) {
      out.push_back({info->path, ChangeKind::kAdd});
      info->added = true;
    }
    std::map<std::string, Node*> old_children;
    if (old != nullptr && info->is_dir())
      for (auto& kv : old->children) old_children.emplace(kv.first, kv.second.get());

    for (auto& kv : info->children) {
      Node* new_child = kv.second.get();
      Node* old_child = nullptr;
      auto it = old_children.find(kv.first);
      if (it != old_children.end()) {
        old_child = it->second;
        if (stat_different(old_child->st, old_maps, new_child->st, new_maps) ||
            old_child->capability != new_child->capability ||
            old_child->user_xattrs != new_child->user_xattrs) {
          out.push_back({new_child->path, ChangeKind::kModify});
          new_child->added = true;
        }
        old_children.erase(it);
      }
      add_changes(new_child, old_child);
    }
    for (auto& kv : old_children) out.push_back({kv.second->path, ChangeKind::kDelete});

    if (out.size() > size_at_entry && info->is_dir() && !info->added && info->parent != nullptr)
      out.insert(out.begin() + static_cast<std::ptrdiff_t>(size_at_entry),
                 Change{info->path, ChangeKind::kModify});
  }
};

}  // namespace

bool IdMappings::to_container(int64_t uid, int64_t gid, int64_t* cuid, int64_t* cgid) const {
  auto raw = [](int64_t host, const std::vector<IdMapEntry>& map, int64_t* out) {
    if (map.empty()) {
      *out = host;
      return true;
    }
    for (const IdMapEntry& m : map) {
      if (host >= m.host_id && host <= m.host_id + m.size - 1) {
        *out = m.container_id + (host - m.host_id);
        return true;
      }
    }
    return false;
  };
  int64_t u, g;
  if (!raw(uid, uids, &u) || !raw(gid, gids, &g)) return false;
  *cuid = u;
  *cgid = g;
  return true;
}

std::vector<Change> naive_changes(const std::string& new_root, const IdMappings& new_maps,
                                  const std::string& old_root, const IdMappings& old_maps) {
  Node old_tree, new_tree;
  old_tree.path = new_tree.path = "/";
  struct stat i1 = {}, i2 = {};
  if (!fsread::lstat_path(new_root, &i2)) throw PathError("lstat", new_root, ENOENT);
  const bool have_old = !old_root.empty();
  if (have_old && !fsread::lstat_path(old_root, &i1)) throw PathError("lstat", old_root, ENOENT);
  TreeWalker walker(have_old ? old_root : std::string(), new_root);
  // No old tree: Go walks an empty temporary directory, which contributes nothing.
  walker.walk("/", &old_tree, &new_tree, have_old ? &i1 : nullptr, &i2);
  std::vector<Change> out;
  Comparer{new_maps, old_maps, out}.add_changes(&new_tree, &old_tree);
  std::sort(out.begin(), out.end(),
            [](const Change& a, const Change& b) { return a.path < b.path; });
  return out;
}

int64_t changes_size(const std::string& root, const std::vector<Change>& changes) {
  int64_t size = 0;
  std::unordered_set<uint64_t> seen;
  for (const Change& c : changes) {
    if (c.kind != ChangeKind::kModify && c.kind != ChangeKind::kAdd) continue;
    struct stat st;
    // Go logs a path that vanished and goes on.
    try {
      if (!fsread::lstat_path(root + c.path, &st, true)) continue;
    } catch (const PathError&) {
      continue;
    }
    if (S_ISDIR(st.st_mode)) continue;
    if (st.st_nlink > 1) {
      if (seen.insert(static_cast<uint64_t>(st.st_ino)).second) size += st.st_size;
    } else {
      size += st.st_size;
    }
  }
  return size;
}

}  // namespace layerstore
