// The diff hot path: replay a tar-split stream into the original tarball.
#pragma once

#include <atomic>
#include <string>
#include <system_error>
#include <vector>

#include "compress/byte_io.h"

namespace layerstore {

// An OS error about one file: `path` names it (for layer files: the first root joined with
// the entry's name).
struct FileError : std::system_error {
  FileError(int err, const std::string& file)
      : std::system_error(err, std::generic_category(), file), path(file) {}
  std::string path;
};

class FileGetter {
 public:
  virtual ~FileGetter() = default;
  // An fd open for reading the file named in the tar-split entry; the caller closes it.
  // Throws FileError (a std::system_error) naming the file.
  virtual int open(const std::string& raw_name) = 0;
  // True if open() may be called from several threads at once.
  virtual bool thread_safe() const { return false; }
};

// Looks the name up in each root directory in order (overlay: diff/ first, then the lower
// diffs), resolving inside the root (openat2 RESOLVE_IN_ROOT) so nothing outside is read.
class RootsFileGetter : public FileGetter {
 public:
  explicit RootsFileGetter(const std::vector<std::string>& roots);
  ~RootsFileGetter() override;
  RootsFileGetter(const RootsFileGetter&) = delete;
  RootsFileGetter& operator=(const RootsFileGetter&) = delete;
  int open(const std::string& raw_name) override;
  bool thread_safe() const override { return true; }

 private:
  std::vector<int> root_fds_;
  std::vector<std::string> roots_;
  std::atomic<bool> noatime_{true};
};

// Replays segments and streams files (verifying each CRC-64: ChecksumError) into out.
// Reads both tar-split flavours and any gzip (multi-member). Does not close out.
// threads: file readers working ahead in parallel (1 = all on the calling thread, the
// default; 0 = one per CPU; only used when files.thread_safe()). out is only written from
// the calling thread; serially, files are read straight into out's lent buffer when it has
// one (ByteSink::lend: the gzip sink's blocks).
void assemble(ByteSource& tarsplit_gz, FileGetter& files, ByteSink& out, int threads = 1);

}  // namespace layerstore
