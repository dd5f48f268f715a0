// Minimal byte stream interfaces: a pull source and a push sink, with big-buffer calls only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace layerstore {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Up to n bytes into buf; 0 means end of stream. Throws on error.
  virtual size_t read(uint8_t* buf, size_t n) = 0;
};

class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual void write(const uint8_t* p, size_t n) = 0;
  // Flush whatever is buffered / finish the stream. Idempotent.
  virtual void close() {}
  // Zero-copy writing, for sinks that buffer anyway: lend() returns space for up to *room
  // (> 0) bytes inside the sink's own buffer; the caller fills some of it and commit(k)s
  // them (k <= *room; the space is valid until the next call on the sink). Sinks without
  // a buffer of their own return nullptr: use write().
  virtual uint8_t* lend(size_t* room) {
    *room = 0;
    return nullptr;
  }
  virtual void commit(size_t k) { (void)k; }
};

// A byte buffer that grows without zero-filling (data is read straight into it).
class RawBuffer {
 public:
  explicit RawBuffer(size_t cap = 0) { grow(cap, 0); }
  uint8_t* data() { return p_.get(); }
  const uint8_t* data() const { return p_.get(); }
  size_t size() const { return cap_; }
  // Capacity at least cap; contents are not kept.
  void reserve(size_t cap) { grow(cap, 0); }
  // Capacity at least cap, keeping the first `used` bytes.
  void grow(size_t cap, size_t used) {
    if (cap <= cap_) return;
    std::unique_ptr<uint8_t[]> q(new uint8_t[cap]);
    if (used) std::memcpy(q.get(), p_.get(), used);
    p_ = std::move(q);
    cap_ = cap;
  }

 private:
  std::unique_ptr<uint8_t[]> p_;
  size_t cap_ = 0;
};

// Reads a file descriptor (not owned); retries EINTR; throws std::system_error.
class FdSource : public ByteSource {
 public:
  explicit FdSource(int fd) : fd_(fd) {}
  size_t read(uint8_t* buf, size_t n) override;

 private:
  int fd_;
};

// Writes everything to a file descriptor (not owned); throws std::system_error (EPIPE too).
class FdSink : public ByteSink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  void write(const uint8_t* p, size_t n) override;
  uint64_t bytes_written() const { return written_; }

 private:
  int fd_;
  uint64_t written_ = 0;
};

// Reads from memory it does not own.
class MemorySource : public ByteSource {
 public:
  MemorySource(const void* p, size_t n) : p_(static_cast<const uint8_t*>(p)), n_(n) {}
  size_t read(uint8_t* buf, size_t n) override;

 private:
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
};

// Appends to a std::string.
class StringSink : public ByteSink {
 public:
  void write(const uint8_t* p, size_t n) override {
    data.append(reinterpret_cast<const char*>(p), n);
  }
  std::string data;
};

// Counts bytes passing through to another sink.
class CountingSink : public ByteSink {
 public:
  explicit CountingSink(ByteSink& out) : out_(out) {}
  void write(const uint8_t* p, size_t n) override {
    count += n;
    out_.write(p, n);
  }
  void close() override { out_.close(); }
  uint64_t count = 0;

 private:
  ByteSink& out_;
};

}  // namespace layerstore
