// Container -> host ID mapping (containers/storage pkg/idtools, SPEC §6.6).
#pragma once

#include <cstdint>
#include <vector>

namespace layerstore {

struct IdMapEntry {
  int64_t container_id = 0;
  int64_t host_id = 0;
  int64_t size = 0;
};

// An empty map is the identity (Go's nil map). Throws ArchiveError("container ID <id>
// cannot be mapped to a host ID") when no range holds the id.
int64_t map_to_host(int64_t container_id, const std::vector<IdMapEntry>& map);

}  // namespace layerstore
