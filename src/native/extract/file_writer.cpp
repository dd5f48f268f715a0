#include "extract/file_writer.h"

#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "extract/path_error.h"
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

FileWriter::FileWriter(size_t max_queued_bytes)
    : max_queued_bytes_(max_queued_bytes), thread_([this] { run(); }) {}

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

std::vector<uint8_t> FileWriter::take_buffer() {
  std::lock_guard<std::mutex> lk(mu_);
  if (spare_.empty()) return {};
  std::vector<uint8_t> b = std::move(spare_.back());
  spare_.pop_back();
  return b;
}

void FileWriter::rethrow_locked() {
  if (error_) std::rethrow_exception(error_);
}

void FileWriter::submit(FileJob&& job) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!error_ && queued_bytes_ > 0 && queued_bytes_ + job.data.size() > max_queued_bytes_) {
    // Full: sleep until the worker has written half of it (one wake-up per burst).
    producer_waiting_ = true;
    done_.wait(lk, [&] { return error_ || queued_bytes_ <= max_queued_bytes_ / 2; });
    producer_waiting_ = false;
  }
  if (error_) {
    close(job.fd);
    rethrow_locked();
  }
  queued_bytes_ += job.data.size();
  ++in_flight_;
  jobs_.push_back(std::move(job));
  // Wake an idle worker only once a batch has gathered.
  if (worker_idle_ && (jobs_.size() >= kWakeJobs || queued_bytes_ >= max_queued_bytes_ / 4))
    work_.notify_one();
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
                                            queued_bytes_ >= max_queued_bytes_ / 4));
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
        write_all(job.fd, job.data.data(), job.data.size(), job.rel);
        apply_fd_metadata(job.fd, job.rel, job.meta);
      } catch (...) {
        err = std::current_exception();
      }
    }
    close(job.fd);
    const size_t n = job.data.size();
    job.data.clear();
    lk.lock();
    if (err && !error_) error_ = err;
    if (spare_.size() < 16 && job.data.capacity() <= (1u << 20))
      spare_.push_back(std::move(job.data));
    queued_bytes_ -= n;
    --in_flight_;
    if ((producer_waiting_ && queued_bytes_ <= max_queued_bytes_ / 2) ||
        (barrier_waiting_ && in_flight_ == 0) || err)
      done_.notify_all();
  }
}

}  // namespace layerstore
