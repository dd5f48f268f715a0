// Write-behind for small regular files: the extractor resolves each file's parent
// directory (in archive order) and hands it, the file's name, bytes and metadata to a
// worker thread that creates the file (O_EXCL), writes, chowns, sets xattrs, chmods, sets
// times and closes, in the order the files were queued. Every path decision stays on the
// extractor's thread: before an entry that meets a queued file (same path, below it, above
// it, a link or a removal) it calls barrier(), as at the end of the layer.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
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

// A directory fd shared by the extractor's parent cache and the jobs created in it: closed
// (when owned) once the last of them lets go.
struct DirRef {
  DirRef(int f, bool own) : fd(f), owned(own) {}
  ~DirRef();
  DirRef(const DirRef&) = delete;
  DirRef& operator=(const DirRef&) = delete;
  int fd;
  bool owned;
};

struct FileJob {
  int fd = -1;  // owned; -1 with `dir` set: the worker creates the file first
  // Where the worker creates the file (O_EXCL; what is in the way is removed first, as
  // the extractor does). The extractor makes sure no earlier job is still pending there.
  std::shared_ptr<DirRef> dir;
  std::string base;
  std::string rel;
  uint8_t* data = nullptr;  // size bytes in the writer's ring, from FileWriter::reserve()
  size_t size = 0;
  size_t charge = 0;  // ring bytes the job holds (set by reserve)
  FileMeta meta;
};

// The file data waits in one ring buffer, allocated once and released in the order the
// jobs were queued: no allocation, zeroing or page faults per file.
class FileWriter {
 public:
  // ring_bytes: how much file data may wait (at least 4 MiB is sensible).
  explicit FileWriter(size_t ring_bytes);
  ~FileWriter();  // stops the worker; pending files are closed unfinished
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  // The biggest file reserve() takes.
  size_t max_file() const { return capacity_ / 4; }
  // Room for n <= max_file() bytes for the next job, in job.data (blocks while the ring
  // is full). Fill it, then submit() the job before the next reserve(). Throws the
  // worker's error.
  void reserve(FileJob& job, size_t n);
  // Queues the job; returns its number (0, 1, ...). Throws the worker's error.
  uint64_t submit(FileJob&& job);
  // How many jobs are done: jobs finish in the order they were queued, so job n is done
  // once completed() > n.
  uint64_t completed() const { return completed_.load(std::memory_order_acquire); }
  // Waits until every submitted job is done. Throws the worker's error.
  void barrier();

 private:
  void run();
  void rethrow_locked();
  bool fits(size_t n, size_t* off, size_t* charge) const;

  static constexpr size_t kWakeJobs = 64;

  std::mutex mu_;
  std::condition_variable work_;
  std::condition_variable done_;
  std::deque<FileJob> jobs_;
  size_t capacity_;
  std::unique_ptr<uint8_t[]> ring_;
  size_t head_ = 0;  // where the next reservation starts (if it fits before the end)
  size_t used_ = 0;  // bytes held by reserved, queued and running jobs, from the oldest
  size_t in_flight_ = 0;  // queued + being processed
  uint64_t submitted_ = 0;
  std::atomic<uint64_t> completed_{0};
  bool stop_ = false;
  bool worker_idle_ = false;
  bool producer_waiting_ = false;
  bool barrier_waiting_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace layerstore
