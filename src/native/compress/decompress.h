// Push-style decompressors: feed compressed bytes, get plain bytes written to a sink.
// gzip: ISA-L inflate (multi-member, header CRC/size trailers verified); zstd: libzstd
// (multi-frame); bzip2: libbz2 (multi-stream); xz: liblzma; kNone passes bytes through.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "compress/byte_io.h"
#include "compress/compression.h"

namespace layerstore {

// A sink that lends its own memory: gzip and zstd decompress straight into it instead of
// into a buffer of their own that is then copied by write().
class SpanSink : public ByteSink {
 public:
  // Writable space of at least one byte; its size in *n. Valid until the next call.
  virtual uint8_t* space(size_t* n) = 0;
  // The first n bytes of the last space() were filled.
  virtual void commit(size_t n) = 0;
};

class Decompressor {
 public:
  static std::unique_ptr<Decompressor> create(Compression c);
  virtual ~Decompressor();
  // Throws ArchiveError on corrupt input.
  void feed(const uint8_t* in, size_t n, ByteSink& out) { feed_some(in, n, out, SIZE_MAX); }
  // Like feed(), but returns early, with input left, once max_out bytes came out (a bomb's
  // output must not pile up in a pull reader); returns the input bytes used. Without input
  // left it goes on draining what the format holds inside (at most one block).
  virtual size_t feed_some(const uint8_t* in, size_t n, ByteSink& out, size_t max_out) = 0;
  // End of input. Throws ArchiveError("unexpected EOF") if the stream is truncated.
  virtual void finish(ByteSink& out) = 0;
};

// Pull adapter: decompresses a ByteSource (by detected or given format) as a ByteSource.
class DecompressingSource : public ByteSource {
 public:
  // Detects the compression from the first bytes.
  explicit DecompressingSource(ByteSource& in);
  DecompressingSource(ByteSource& in, Compression c);
  ~DecompressingSource() override;
  size_t read(uint8_t* buf, size_t n) override;
  Compression compression() const { return c_; }

 private:
  struct Impl;
  ByteSource& in_;
  Compression c_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace layerstore
