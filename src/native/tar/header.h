// One tar entry as the Go archive/tar reader returns it: PAX and GNU long names/links
// already merged, sparse files expanded. The seam between the tar reader, the
// tar-split packer and the extractor.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace layerstore {

struct TarTime {
  int64_t sec = 0;
  int64_t nsec = 0;
  bool set = false;  // false: the header carried no such time
};

struct TarHeader {
  char typeflag = '0';    // '0' regular ('\0' normalised), '1' hardlink, '2' symlink,
                          // '3' char, '4' block, '5' dir, '6' fifo, 'g' PAX global, ...
  std::string name;       // raw bytes as in the archive (may be non-UTF-8)
  std::string linkname;   // raw bytes
  int64_t size = 0;       // logical data size
  int64_t mode = 0;       // permission + setuid/setgid/sticky bits (07777)
  int64_t uid = 0;
  int64_t gid = 0;
  std::string uname;
  std::string gname;
  TarTime mtime;
  TarTime atime;
  TarTime ctime;
  int64_t devmajor = 0;
  int64_t devminor = 0;
  // SCHILY.xattr.<name> PAX records, in archive order: (name, value bytes).
  std::vector<std::pair<std::string, std::string>> xattrs;
};

}  // namespace layerstore
