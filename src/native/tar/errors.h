// Exceptions of the native format layer. Messages follow Go's (archive/tar, compress/*,
// tar-split) so that the Python side can show the same text as the Go store.
#pragma once

#include <stdexcept>
#include <string>

namespace layerstore {

// Bad tar or compression input: "archive/tar: invalid tar header", "unexpected EOF",
// "gzip: invalid header", "zstd: ...".
struct ArchiveError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A file's content no longer matches the CRC-64 its tar-split entry recorded.
struct ChecksumError : std::runtime_error {
  std::string name;  // raw file name as in the tar-split entry
  explicit ChecksumError(const std::string& raw_name)
      : std::runtime_error("file integrity checksum failed for \"" + raw_name + "\""),
        name(raw_name) {}
};

}  // namespace layerstore
