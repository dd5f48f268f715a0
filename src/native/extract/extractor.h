// Applies tar entries to a layer directory with the semantics of containers/storage's
// pkg/archive (SPEC §6.3-§6.6): vfs's UnpackLayer (whiteouts applied) or overlay's Unpack
// (whiteouts translated into 0/0 char devices and the opaque xattr). Every lookup resolves
// inside the layer as if it were "/" (what Go gets from its chroot), and every change is
// made relative to a directory fd found that way, never through a path that could leave.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "extract/file_writer.h"
#include "extract/id_map.h"
#include "tar/header.h"

namespace layerstore {

enum class WhiteoutFormat { kVfs, kOverlay };

struct ExtractOptions {
  WhiteoutFormat whiteout_format = WhiteoutFormat::kVfs;
  std::vector<IdMapEntry> uid_map;  // empty: identity
  std::vector<IdMapEntry> gid_map;
  bool ignore_chown_errors = false;
  bool sync = false;  // syncfs(root) in finish()
  // Small regular files are written and finished by a worker thread (see file_writer.h).
  bool write_behind = true;
};

class Extractor {
 public:
  // Reads up to n bytes of the current entry's data into buf; 0 at its end.
  using DataReader = std::function<size_t(uint8_t* buf, size_t n)>;

  // root_dirfd is duplicated; the caller keeps its own.
  Extractor(int root_dirfd, ExtractOptions opts);
  ~Extractor();
  Extractor(const Extractor&) = delete;
  Extractor& operator=(const Extractor&) = delete;

  // One entry. Throws ArchiveError for bad input (unhandled type, unmappable id, a link
  // to nothing, ...) and PathError for other system errors.
  void apply(const TarHeader& hdr, const DataReader& data);
  // Directory times again (without the atime rule), then syncfs if asked.
  void finish();

 private:
  struct Parent {
    int fd = -1;
    bool setgid = false;
    gid_t gid = 0;
    std::shared_ptr<DirRef> ref;  // keeps fd open for jobs queued in it
  };
  struct DirTimes {
    std::string path;
    TarTime atime;
    TarTime mtime;
  };
  struct Node;  // the entry being created: where, how, with which ids
  struct AufsLink {
    TarHeader hdr;
    int fd;
  };

  // The resolved parent directory of comps (created like MkdirAll when missing); fd < 0
  // holds -errno. Cached across consecutive entries until something is removed.
  Parent parent_dir(const std::vector<std::string>& comps);
  int make_parents(const std::vector<std::string>& comps, size_t n);
  void drop_parent_cache();
  // Regular files the write-behind worker has yet to create: an entry at one of their
  // paths, below one, or above one (or any removal) waits until they exist.
  bool touches_pending(const TarHeader& entry, const std::vector<std::string>& comps,
                       const std::string& rel, const std::string& base) const;
  void note_pending(const std::string& rel, const std::vector<std::string>& comps, uint64_t job);
  void settle();  // waits for every queued file; forgets what may have changed
  void removed_something() { cache_dirty_ = true; }
  void create(Node& node, const TarHeader& hdr);  // the inode, not its data
  void write_data(Node& node, const DataReader& data);
  void set_metadata(Node& node, const TarHeader& hdr);
  void vfs_opaque(int dirfd, const std::string& lexical_dir);
  void stash_aufs_link(const std::string& base, const TarHeader& hdr, const DataReader& data);
  FileMeta file_meta(const Node& node, const TarHeader& hdr) const;
  void set_dir_times(const DirTimes& d);

  int root_fd_;
  ExtractOptions opts_;
  uid_t euid_;
  gid_t egid_;
  mode_t umask_;
  bool vfs_;
  int64_t root_uid_ = 0;  // overlay: host ids of container root (new parents' owner)
  int64_t root_gid_ = 0;

  std::string cached_path_;
  Parent cached_;
  bool cache_dirty_ = false;

  std::vector<DirTimes> dirs_;
  std::unordered_set<std::string> unpacked_;  // vfs opaque dirs keep these
  std::unordered_map<std::string, AufsLink> aufs_links_;  // .wh..wh.plnk/<base>
  std::vector<uint8_t> buffer_;
  std::unique_ptr<FileWriter> writer_;
  std::shared_ptr<DirRef> root_ref_;
  // path -> number of the last queued job creating it (files) or something below it (dirs)
  std::unordered_map<std::string, uint64_t> pending_files_;
  std::unordered_map<std::string, uint64_t> pending_dirs_;
  std::deque<std::pair<uint64_t, std::string>> pending_order_;  // to forget finished jobs
};

}  // namespace layerstore
