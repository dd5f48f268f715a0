#include "truncindex/truncindex.h"

#include <algorithm>

namespace layerstore {

namespace {
bool valid_id(std::string_view id) {
  return !id.empty() && id.find(' ') == std::string_view::npos;
}
}  // namespace

TruncIndex::TruncIndex(std::vector<std::string> ids) : ids_(std::move(ids)) {
  ids_.erase(std::remove_if(ids_.begin(), ids_.end(),
                            [](const std::string& id) { return !valid_id(id); }),
             ids_.end());
  std::sort(ids_.begin(), ids_.end());
  ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
}

TruncIndex::Status TruncIndex::add(std::string_view id) {
  if (id.empty()) return Status::kEmptyPrefix;
  if (id.find(' ') != std::string_view::npos) return Status::kIllegalChar;
  auto it = std::lower_bound(ids_.begin(), ids_.end(), id);
  if (it != ids_.end() && *it == id) return Status::kExists;
  ids_.insert(it, std::string(id));
  return Status::kOk;
}

TruncIndex::Status TruncIndex::remove(std::string_view id) {
  auto it = std::lower_bound(ids_.begin(), ids_.end(), id);
  if (id.empty() || it == ids_.end() || *it != id) return Status::kNotExist;
  ids_.erase(it);
  return Status::kOk;
}

bool TruncIndex::contains(std::string_view id) const {
  return std::binary_search(ids_.begin(), ids_.end(), id);
}

TruncIndex::Status TruncIndex::get(std::string_view prefix, std::string* out) const {
  if (prefix.empty()) return Status::kEmptyPrefix;
  auto it = std::lower_bound(ids_.begin(), ids_.end(), prefix);
  auto has_prefix = [&](const std::string& s) { return s.compare(0, prefix.size(), prefix) == 0; };
  if (it == ids_.end() || !has_prefix(*it)) return Status::kNotExist;
  if (out) *out = *it;
  auto next = it + 1;
  if (next != ids_.end() && has_prefix(*next)) return Status::kAmbiguous;
  return Status::kOk;
}

}  // namespace layerstore
