// Files and shell commands for the C++ tests: read or write a whole file, run a command
// (a failing one counts as a CHECK failure).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "check.h"

// The file's bytes; "" when it cannot be opened.
static inline std::string read_file(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

static inline void write_file(const std::string& path, const std::string& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  CHECK(f != nullptr);
  if (!f) return;
  CHECK(std::fwrite(data.data(), 1, data.size(), f) == data.size());
  std::fclose(f);
}

static inline void sh(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "command failed: %s\n", cmd.c_str());
    ++failures;
  }
}
