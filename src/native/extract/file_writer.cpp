#include "extract/file_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "extract/path_error.h"
#include "extract/safe_path.h"
#include "tar/errors.h"

namespace layerstore {

namespace {

bool is_archive_errno(int e) {
  return e == ENOENT || e == ENOTDIR || e == EEXIST || e == ELOOP || e == EISDIR ||
         e == ENAMETOOLONG || e == EXDEV || e == EMLINK || e == ENOTEMPTY;
}

std::string display_path(const std::string& rel) { return rel == "." ? "/" : "/" + rel; }

}  // namespace

void throw_path_failure(const char* op, const std::string& rel, int err) {
  if (is_archive_errno(err))
    throw ArchiveError(std::string(op) + " " + display_path(rel) + ": " + std::strerror(err));
  throw PathError(op, display_path(rel), err);
}

void write_all(int fd, const uint8_t* p, size_t n, const std::string& rel) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_path_failure("write", rel, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void apply_fd_metadata(int fd, const std::string& rel, const FileMeta& m) {
  if (m.chown && fchown(fd, m.uid, m.gid) != 0 && !m.ignore_chown_errors) {
    if (errno == EINVAL)
      throw ArchiveError("potentially insufficient UIDs or GIDs available in user namespace "
                         "(requested " + std::to_string(m.uid) + ":" + std::to_string(m.gid) +
                         " for " + display_path(rel) +
                         "): Check /etc/subuid and /etc/subgid if configured locally and run "
                         "\"podman system migrate\": lchown " + display_path(rel) +
                         ": invalid argument");
    throw_path_failure("lchown", rel, errno);
  }
  for (const auto& kv : m.xattrs) {
    if (fsetxattr(fd, kv.first.c_str(), kv.second.data(), kv.second.size(), 0) == 0) continue;
    const int e = errno;
    if (e == ENOTSUP) continue;  // the filesystem has no xattrs: Go logs and goes on
    if (e == EPERM || e == EINVAL || e == ERANGE || e == E2BIG)
      throw ArchiveError("lsetxattr " + display_path(rel) + " " + kv.first + ": " +
                         std::strerror(e));
    throw_path_failure("lsetxattr", rel, e);
  }
  if (fchmod(fd, m.mode) != 0) throw_path_failure("chmod", rel, errno);
  if (futimens(fd, m.times) != 0) throw_path_failure("chtimes", rel, errno);
}

DirRef::~DirRef() {
  if (owned && fd >= 0) close(fd);
}

namespace {

// The file of a job that the extractor left to the worker to create: like the extractor's
// create() for a regular file (remove what is there and retry once on EEXIST).
int create_job_file(const FileJob& job) {
  const int dirfd = job.dir->fd;
  const char* base = job.base.c_str();
  constexpr int kFlags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = openat(dirfd, base, kFlags, 0600);
  if (fd < 0 && errno == EEXIST) {
    struct stat st;
    if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
      throw_path_failure("lstat", job.rel, errno);
    int rr = remove_all_at(dirfd, job.base);
    if (rr < 0) throw_path_failure("remove", job.rel, -rr);
    fd = openat(dirfd, base, kFlags, 0600);
  }
  if (fd < 0) throw_path_failure("open", job.rel, errno);
  return fd;
}

}  // namespace

FileWriter::FileWriter(size_t ring_bytes)
    : capacity_(std::max<size_t>(ring_bytes, 4096)),
      ring_(new uint8_t[capacity_]),
      thread_([this] { run(); }) {}

FileWriter::~FileWriter() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    work_.notify_all();
  }
  thread_.join();
  for (FileJob& j : jobs_)
    if (j.fd >= 0) close(j.fd);
}

void FileWriter::rethrow_locked() {
  if (error_) std::rethrow_exception(error_);
}

// Where n bytes go: after the newest reservation, or at the start of the ring when they
// do not fit before its end (the bytes skipped are charged to this job, so the ring is
// always one run of held bytes, freed from its oldest end).
bool FileWriter::fits(size_t n, size_t* off, size_t* charge) const {
  if (n == 0 || used_ == 0) {  // an empty file holds nothing
    *off = used_ == 0 ? 0 : head_;
    *charge = n;
    return n <= capacity_;
  }
  const size_t tail = (head_ + capacity_ - used_ % capacity_) % capacity_;
  if (used_ < capacity_ && head_ >= tail) {  // free: [head, end) and [0, tail)
    if (capacity_ - head_ >= n) {
      *off = head_;
      *charge = n;
      return true;
    }
    if (tail >= n) {
      *off = 0;
      *charge = capacity_ - head_ + n;
      return true;
    }
    return false;
  }
  if (used_ < capacity_ && tail - head_ >= n) {  // free: [head, tail)
    *off = head_;
    *charge = n;
    return true;
  }
  return false;
}

void FileWriter::reserve(FileJob& job, size_t n) {
  std::unique_lock<std::mutex> lk(mu_);
  size_t off = 0;
  size_t charge = 0;
  if (!error_ && !fits(n, &off, &charge)) {
    // Full: sleep until the worker has written half of it (one wake-up per burst); then
    // any n <= max_file() fits.
    producer_waiting_ = true;
    if (worker_idle_) work_.notify_one();
    done_.wait(lk, [&] { return error_ || fits(n, &off, &charge); });
    producer_waiting_ = false;
  }
  rethrow_locked();
  if (used_ == 0) head_ = 0;
  job.data = ring_.get() + off;
  job.size = n;
  job.charge = charge;
  head_ = (off + n) % capacity_;
  used_ += charge;
}

uint64_t FileWriter::submit(FileJob&& job) {
  std::unique_lock<std::mutex> lk(mu_);
  if (error_) {
    if (job.fd >= 0) close(job.fd);
    job.fd = -1;
    rethrow_locked();
  }
  ++in_flight_;
  jobs_.push_back(std::move(job));
  // Wake an idle worker only once a batch has gathered.
  if (worker_idle_ && (jobs_.size() >= kWakeJobs || used_ >= capacity_ / 4))
    work_.notify_one();
  return submitted_++;
}

void FileWriter::barrier() {
  std::unique_lock<std::mutex> lk(mu_);
  if (in_flight_ > 0 && !error_) {
    barrier_waiting_ = true;
    work_.notify_one();
    done_.wait(lk, [&] { return error_ || in_flight_ == 0; });
    barrier_waiting_ = false;
  }
  rethrow_locked();
}

void FileWriter::run() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    if (!stop_ && jobs_.empty()) {
      worker_idle_ = true;
      work_.wait(lk, [&] {
        return stop_ || (!jobs_.empty() && (jobs_.size() >= kWakeJobs || barrier_waiting_ ||
                                            producer_waiting_ || used_ >= capacity_ / 4));
      });
      worker_idle_ = false;
    }
    if (stop_) return;
    if (jobs_.empty()) continue;
    FileJob job = std::move(jobs_.front());
    jobs_.pop_front();
    const bool failed = error_ != nullptr;
    lk.unlock();
    std::exception_ptr err;
    if (!failed) {
      try {
        if (job.fd < 0 && job.dir) job.fd = create_job_file(job);
        write_all(job.fd, job.data, job.size, job.rel);
        apply_fd_metadata(job.fd, job.rel, job.meta);
      } catch (...) {
        err = std::current_exception();
      }
    }
    if (job.fd >= 0) close(job.fd);
    job.dir.reset();
    lk.lock();
    if (err && !error_) error_ = err;
    used_ -= job.charge;
    --in_flight_;
    completed_.fetch_add(1, std::memory_order_release);
    if ((producer_waiting_ && used_ <= capacity_ / 2) ||
        (barrier_waiting_ && in_flight_ == 0) || err)
      done_.notify_all();
  }
}

}  // namespace layerstore
