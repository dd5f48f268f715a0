#include "extract/id_map.h"

#include <string>

#include "tar/errors.h"

namespace layerstore {

int64_t map_to_host(int64_t container_id, const std::vector<IdMapEntry>& map) {
  if (map.empty()) return container_id;
  for (const IdMapEntry& m : map) {
    if (container_id >= m.container_id && container_id - m.container_id < m.size)
      return m.host_id + (container_id - m.container_id);
  }
  throw ArchiveError("container ID " + std::to_string(container_id) +
                     " cannot be mapped to a host ID");
}

}  // namespace layerstore
