// Bounded MessagePack reading for gossip messages: every byte that arrives from a peer is
// untrusted, so parsing limits nesting depth and element counts before building a tree, and the
// field readers check types and ranges and name the offending field when they refuse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace llmesh::gossip {

// A gossip message or record that cannot be decoded. what() names the field and the reason.
class WireError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ParseLimits {
  std::size_t max_bytes = 1 << 20;      // whole message
  std::size_t max_depth = 8;            // nested maps/arrays
  std::size_t max_elements = 1 << 16;   // all values in the message together
  std::size_t max_string = 4096;        // any one string or binary blob
};

// Parses MessagePack bytes into a json tree, refusing (WireError) anything beyond the limits,
// malformed, or truncated. Never recurses deeper than max_depth.
nlohmann::json parse_msgpack(std::span<const std::uint8_t> bytes, const ParseLimits& limits = {});

// Field readers for a map `obj`. A missing optional field yields the fallback; a present field of
// the wrong type or out of range throws WireError naming `key`.
const nlohmann::json& require_map(const nlohmann::json& v, const char* what);
std::uint64_t read_uint(const nlohmann::json& obj, const char* key, std::uint64_t max,
                        std::uint64_t fallback = 0, bool required = false);
double read_double(const nlohmann::json& obj, const char* key, double fallback = 0.0);
std::string read_string(const nlohmann::json& obj, const char* key, std::size_t max_len,
                        bool required = false);
bool read_bool(const nlohmann::json& obj, const char* key, bool fallback = false);
// Returns nullptr when absent; throws if present and not an array of at most max_items.
const nlohmann::json* read_array(const nlohmann::json& obj, const char* key, std::size_t max_items);

// Member ids are the node id's lowercase hex form (64 hex digits = a 32-byte Ed25519 key). On
// the wire such an id travels as 32 raw bytes (msgpack bin); any other id as a string.
nlohmann::json encode_id(const std::string& id);
std::string decode_id(const nlohmann::json& v, const char* key);
std::string read_id(const nlohmann::json& obj, const char* key, bool required = true);
constexpr std::size_t kMaxIdLength = 128;

}  // namespace llmesh::gossip
