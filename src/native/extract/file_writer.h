// Write-behind for small regular files: the extractor creates each file (O_EXCL, in
// archive order) and hands the open fd, the file's bytes and its metadata to a worker
// thread that writes, chowns, sets xattrs, chmods, sets times and closes. Creation order,
// and so every path decision, stays on the extractor's thread; barrier() makes the worker
// catch up wherever an entry touches an inode that may still be pending (hard links, the
// end of the layer).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace layerstore {

// What Go does to a regular file after writing it, in its order (SPEC §6.4 items 8-10).
struct FileMeta {
  bool chown = false;
  uid_t uid = 0;
  gid_t gid = 0;
  bool ignore_chown_errors = false;
  std::vector<std::pair<std::string, std::string>> xattrs;
  mode_t mode = 0;
  struct timespec times[2] = {};
};

// chown, xattrs, chmod, times on an open fd; throws ArchiveError / PathError naming rel.
void apply_fd_metadata(int fd, const std::string& rel, const FileMeta& meta);

// Go-style failure of a system call on rel (inside the layer): ArchiveError when the
// archive caused it (ENOENT, ENOTDIR, EEXIST, ELOOP, ...), PathError otherwise.
[[noreturn]] void throw_path_failure(const char* op, const std::string& rel, int err);

// write(2) all of [p, p+n) to fd.
void write_all(int fd, const uint8_t* p, size_t n, const std::string& rel);

struct FileJob {
  int fd = -1;  // owned
  std::string rel;
  std::vector<uint8_t> data;
  FileMeta meta;
};

class FileWriter {
 public:
  explicit FileWriter(size_t max_queued_bytes);
  ~FileWriter();  // stops the worker; pending files are closed unfinished
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  // A buffer to fill for the next job (recycled from finished jobs).
  std::vector<uint8_t> take_buffer();
  // Queues the job (blocks while too many bytes are queued). Throws the worker's error.
  void submit(FileJob&& job);
  // Waits until every submitted job is done. Throws the worker's error.
  void barrier();

 private:
  void run();
  void rethrow_locked();

  static constexpr size_t kWakeJobs = 64;

  std::mutex mu_;
  std::condition_variable work_;
  std::condition_variable done_;
  std::deque<FileJob> jobs_;
  std::vector<std::vector<uint8_t>> spare_;
  size_t queued_bytes_ = 0;
  size_t max_queued_bytes_;
  size_t in_flight_ = 0;  // queued + being processed
  bool stop_ = false;
  bool worker_idle_ = false;
  bool producer_waiting_ = false;
  bool barrier_waiting_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace layerstore
