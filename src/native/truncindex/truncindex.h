// TruncIndex: the set of layer ids with lookup by unambiguous prefix, as
// containers/storage's pkg/truncindex (SPEC.md §7.1). Plain C++, no Python.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace layerstore {

class TruncIndex {
 public:
  enum class Status { kOk, kEmptyPrefix, kIllegalChar, kExists, kNotExist, kAmbiguous };

  TruncIndex() = default;
  // Builds the index from ids; invalid ids ("" or containing a space) and duplicates are
  // skipped silently, as Go's NewTruncIndex does.
  explicit TruncIndex(std::vector<std::string> ids);

  Status add(std::string_view id);
  Status remove(std::string_view id);
  // On kOk `out` is the one full id with that prefix; on kAmbiguous it is one of the
  // matching ids (for the error message).
  Status get(std::string_view prefix, std::string* out) const;
  bool contains(std::string_view id) const;
  size_t size() const { return ids_.size(); }
  const std::vector<std::string>& ids() const { return ids_; }

 private:
  std::vector<std::string> ids_;  // sorted, unique
};

}  // namespace layerstore
