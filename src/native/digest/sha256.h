// Streaming SHA-256 (OpenSSL EVP, SHA-NI where the CPU has it).
#pragma once

#include <cstddef>
#include <string>

namespace layerstore {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* p, size_t n);
  // 64 lowercase hex digits; finalises the hash (call once).
  std::string hex();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

// One-shot helper.
std::string sha256_hex(const void* p, size_t n);

}  // namespace layerstore
