// Small helpers shared by the tar-split packer and assembler: base64 (standard, padded),
// Go-compatible JSON string escaping, UTF-8 validation and Go's %q.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace layerstore {
namespace tarsplit {

void base64_encode(const uint8_t* p, size_t n, std::string& out);
// Appends the decoded bytes; false on malformed input.
bool base64_decode(const char* p, size_t n, std::string& out);
// Decodes into o (room for n / 4 * 3 bytes); sets *produced; false on malformed input.
bool base64_decode_to(const char* p, size_t n, uint8_t* o, size_t* produced);
// Go's utf8.ValidString.
bool valid_utf8(const std::string& s);
// Go encoding/json string encoding with HTML escaping (as Encoder does), quotes included.
void json_quote(const std::string& s, std::string& out);
// Go's strconv.Quote (fmt %q) for messages.
std::string go_quote(const std::string& s);

}  // namespace tarsplit
}  // namespace layerstore
