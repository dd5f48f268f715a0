// A system call failed on a path inside the layer (Go's *os.PathError): the binding turns
// it into the matching OSError subclass with the path attached.
#pragma once

#include <cstring>
#include <stdexcept>
#include <string>

namespace layerstore {

struct PathError : std::runtime_error {
  std::string op;    // "open", "mkdir", "lchown", ...
  std::string path;  // inside the layer, as "/a/b" (the layer dir is "/")
  int err;           // errno
  PathError(const std::string& op_, const std::string& path_, int err_)
      : std::runtime_error(op_ + " " + path_ + ": " + std::strerror(err_)),
        op(op_),
        path(path_),
        err(err_) {}
};

}  // namespace layerstore
