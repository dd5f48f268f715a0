// Go's path.Clean (and filepath.Clean on Unix) on a raw byte string: the one lexical path
// cleaning used for tar names, whiteouts and tar-split entries.
#pragma once

#include <string>

namespace layerstore {

// "a//b/./c/.." -> "a/b"; "/../x" -> "/x"; "a/../../b" -> "../b"; "" -> ".".
std::string clean_path(const std::string& path);

}  // namespace layerstore
