// What changed in a layer, and the layer's tarball regenerated from the changes, as
// containers/storage 1.43's pkg/archive computes them (SPEC §9.6, §6.8, §6.3):
//   - naive (vfs, or any driver when `from` is not the parent): ChangesDirs, which compares
//     the layer's tree with its parent's; ChangesSize; ExportChanges;
//   - overlay: OverlayChanges over the layer's diff/ and its lower diffs, directory.Size of
//     diff/, and TarWithOptions of diff/ with the overlay whiteout converter.
// All functions read only; filesystem failures throw PathError (extract/path_error.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/byte_io.h"
#include "extract/id_map.h"

namespace layerstore {

enum class ChangeKind : int { kModify = 0, kAdd = 1, kDelete = 2 };

struct Change {
  std::string path;  // absolute inside the layer: "/etc/passwd"
  ChangeKind kind;
  bool operator==(const Change& o) const { return path == o.path && kind == o.kind; }
};

// A layer's uid and gid maps (Go's idtools.IDMappings). An empty list is the identity.
struct IdMappings {
  std::vector<IdMapEntry> uids;
  std::vector<IdMapEntry> gids;
  bool empty() const { return uids.empty() && gids.empty(); }
  // Host -> container for both ids; false (outputs untouched) when either has no range.
  bool to_container(int64_t uid, int64_t gid, int64_t* cuid, int64_t* cgid) const;
};

// ChangesDirs(new_root, new_maps, old_root, old_maps). An empty old_root stands for an empty
// directory (a base layer: everything is an Add). Sorted by path (Go's own order comes
// from map iteration and is not deterministic).
std::vector<Change> naive_changes(const std::string& new_root, const IdMappings& new_maps,
                                  const std::string& old_root, const IdMappings& old_maps);

// OverlayChanges(lowers, diff_root): diff/ walked in lexical order; lowers uppermost first.
// Go's order is deterministic here and is kept.
std::vector<Change> overlay_changes(const std::string& diff_root,
                                    const std::vector<std::string>& lowers);

// ChangesSize: sum of lstat sizes of the non-directory Add/Modify paths under root, an
// inode with several links counted once.
int64_t changes_size(const std::string& root, const std::vector<Change>& changes);

// directory.Size: sum of the sizes of every non-directory inode under root, each once.
int64_t directory_size(const std::string& root);

// ExportChanges: the changes as a tar stream (sorted by path; deletions as ".wh.<base>"
// entries stamped with the current time), with ids mapped back to container ids.
// Returns the uncompressed tar size.
uint64_t export_changes(const std::string& root, std::vector<Change> changes,
                        const IdMappings& maps, ByteSink& out);

// TarWithOptions(root): every entry under root in walk order (the root itself left out).
// With `overlay_whiteouts`, 0/0 character devices become ".wh.<name>" files and opaque
// directories that shadow something in `lowers` get a "<dir>/.wh..wh..opq" entry.
// Returns the uncompressed tar size.
uint64_t export_tree(const std::string& root, const IdMappings& maps, bool overlay_whiteouts,
                     const std::vector<std::string>& lowers, ByteSink& out);

}  // namespace layerstore
