// Minimal byte stream interfaces: a pull source and a push sink, with big-buffer calls only.
#pragma once

#include <cstddef>
#include <cstdint>
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
