#include "gossip/codec.h"

#include <cmath>
#include <string_view>
#include <vector>

namespace llmesh::gossip {

using nlohmann::json;

namespace {

// Builds the tree itself (instead of json::from_msgpack) so that depth and element counts are
// checked at each opening bracket, before the reader recurses into it.
class BoundedBuilder {
 public:
  BoundedBuilder(json& root, const ParseLimits& limits) : root_(root), limits_(limits) {}

  bool null() { return add(nullptr); }
  bool boolean(bool v) { return add(v); }
  bool number_integer(json::number_integer_t v) { return add(v); }
  bool number_unsigned(json::number_unsigned_t v) { return add(v); }
  bool number_float(json::number_float_t v, const json::string_t&) { return add(v); }
  bool string(json::string_t& v) {
    if (v.size() > limits_.max_string) return fail("string too long");
    return add(std::move(v));
  }
  bool binary(json::binary_t& v) {
    if (v.size() > limits_.max_string) return fail("binary too long");
    return add(json::binary(std::move(static_cast<std::vector<std::uint8_t>&>(v))));
  }
  bool start_object(std::size_t len) { return open(json::object(), len); }
  bool key(json::string_t& k) {
    if (k.size() > limits_.max_string) return fail("key too long");
    pending_key_ = std::move(k);
    return true;
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t len) { return open(json::array(), len); }
  bool end_array() { return close(); }
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& ex) {
    return fail(ex.what());
  }

  const std::string& error() const { return error_; }

 private:
  bool fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return false;
  }
  bool count() {
    if (++elements_ > limits_.max_elements) return fail("too many elements");
    return true;
  }
  json* place(json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json& slot = top[pending_key_];
    slot = std::move(v);
    return &slot;
  }
  bool add(json v) {
    if (!count()) return false;
    place(std::move(v));
    return true;
  }
  bool open(json container, std::size_t len) {
    if (!count()) return false;
    if (stack_.size() >= limits_.max_depth) return fail("nesting too deep");
    if (len != static_cast<std::size_t>(-1) && len > limits_.max_elements)
      return fail("container too large");
    stack_.push_back(place(std::move(container)));
    return true;
  }
  bool close() {
    if (stack_.empty()) return fail("unbalanced container");
    stack_.pop_back();
    return true;
  }

  json& root_;
  const ParseLimits& limits_;
  std::vector<json*> stack_;
  std::string pending_key_;
  std::size_t elements_ = 0;
  std::string error_;
};

bool is_hex_id(const std::string& id) {
  if (id.size() != 64) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

[[noreturn]] void bad(const char* key, std::string_view why) {
  throw WireError("field '" + std::string(key) + "': " + std::string(why));
}

}  // namespace

json parse_msgpack(std::span<const std::uint8_t> bytes, const ParseLimits& limits) {
  if (bytes.empty()) throw WireError("empty message");
  if (bytes.size() > limits.max_bytes)
    throw WireError("message of " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                    std::to_string(limits.max_bytes));
  json root;
  BoundedBuilder builder(root, limits);
  bool ok = false;
  try {
    ok = json::sax_parse(bytes.begin(), bytes.end(), &builder, json::input_format_t::msgpack,
                         /*strict=*/true);
  } catch (const std::exception& e) {
    throw WireError(std::string("malformed msgpack: ") + e.what());
  }
  if (!ok)
    throw WireError("malformed msgpack: " + (builder.error().empty() ? std::string("parse error")
                                                                      : builder.error()));
  return root;
}

const json& require_map(const json& v, const char* what) {
  if (!v.is_object()) bad(what, "expected a map");
  return v;
}

std::uint64_t read_uint(const json& obj, const char* key, std::uint64_t max, std::uint64_t fallback,
                        bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) bad(key, "missing");
    return fallback;
  }
  if (!it->is_number_integer()) bad(key, "expected an unsigned integer");
  if (it->is_number_unsigned()) {
    auto v = it->get<std::uint64_t>();
    if (v > max) bad(key, "out of range");
    return v;
  }
  auto v = it->get<std::int64_t>();
  if (v < 0) bad(key, "negative");
  if (static_cast<std::uint64_t>(v) > max) bad(key, "out of range");
  return static_cast<std::uint64_t>(v);
}

double read_double(const json& obj, const char* key, double fallback) {
  auto it = obj.find(key);
  if (it == obj.end()) return fallback;
  if (!it->is_number()) bad(key, "expected a number");
  double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) bad(key, "expected a finite non-negative number");
  return v;
}

std::string read_string(const json& obj, const char* key, std::size_t max_len, bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) bad(key, "missing");
    return {};
  }
  if (!it->is_string()) bad(key, "expected a string");
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_len) bad(key, "string too long");
  return s;
}

bool read_bool(const json& obj, const char* key, bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end()) return fallback;
  if (!it->is_boolean()) bad(key, "expected a boolean");
  return it->get<bool>();
}

const json* read_array(const json& obj, const char* key, std::size_t max_items) {
  auto it = obj.find(key);
  if (it == obj.end()) return nullptr;
  if (!it->is_array()) bad(key, "expected an array");
  if (it->size() > max_items) bad(key, "too many items");
  return &*it;
}

json encode_id(const std::string& id) {
  if (!is_hex_id(id)) return id;
  std::vector<std::uint8_t> raw(32);
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i < 32; ++i)
    raw[i] = static_cast<std::uint8_t>(nibble(id[2 * i]) << 4 | nibble(id[2 * i + 1]));
  return json::binary(std::move(raw));
}

std::string decode_id(const json& v, const char* key) {
  if (v.is_binary()) {
    const auto& raw = v.get_binary();
    if (raw.size() != 32) bad(key, "binary id must be 32 bytes");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out(64, '0');
    for (std::size_t i = 0; i < 32; ++i) {
      out[2 * i] = kHex[raw[i] >> 4];
      out[2 * i + 1] = kHex[raw[i] & 15];
    }
    return out;
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.empty() || s.size() > kMaxIdLength) bad(key, "id length out of range");
    return s;
  }
  bad(key, "expected an id (32-byte binary or string)");
}

std::string read_id(const json& obj, const char* key, bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) bad(key, "missing");
    return {};
  }
  return decode_id(*it, key);
}

}  // namespace llmesh::gossip
