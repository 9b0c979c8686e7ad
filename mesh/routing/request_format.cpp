#include "routing/request_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "gossip/codec.h"
#include "transport/protocol.h"

namespace llmesh::mesh::routing {

using nlohmann::json;

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// RFC 9110 token characters.
bool token(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (std::isalnum(c)) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) == std::string_view::npos) return false;
  }
  return true;
}

// Printable ASCII and UTF-8 bytes; no control characters (no header or request-line injection).
bool clean_value(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

json parse(std::span<const uint8_t> bytes, size_t max_bytes, const char* what) {
  if (bytes.size() > max_bytes) throw FormatError(fmt::format("{}: {} bytes, over the {} byte limit", what, bytes.size(), max_bytes));
  gossip::ParseLimits limits;
  limits.max_bytes = max_bytes;
  limits.max_depth = 4;
  limits.max_elements = 1024;
  limits.max_string = 8192;
  json v;
  try {
    v = gossip::parse_msgpack(bytes, limits);
  } catch (const gossip::WireError& e) {
    throw FormatError(fmt::format("{}: not a valid MessagePack map ({})", what, e.what()));
  }
  if (!v.is_object()) throw FormatError(fmt::format("{}: not a MessagePack map", what));
  return v;
}

const json* find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::string str(const json& obj, const char* key, size_t max, bool required) {
  const json* v = find(obj, key);
  if (!v) {
    if (required) throw FormatError(fmt::format("'{}' is required", key));
    return "";
  }
  if (!v->is_string()) throw FormatError(fmt::format("'{}' must be a string", key));
  const auto& s = v->get_ref<const std::string&>();
  if (s.size() > max) throw FormatError(fmt::format("'{}' is {} bytes, over the {} byte limit", key, s.size(), max));
  if (!clean_value(s)) throw FormatError(fmt::format("'{}' contains a control character", key));
  return s;
}

uint64_t uint(const json& obj, const char* key, uint64_t max, bool required, uint64_t fallback = 0) {
  const json* v = find(obj, key);
  if (!v) {
    if (required) throw FormatError(fmt::format("'{}' is required", key));
    return fallback;
  }
  // MessagePack decodes every non-negative integer as unsigned.
  if (!v->is_number_unsigned()) throw FormatError(fmt::format("'{}' must be an unsigned integer", key));
  uint64_t n = v->get<uint64_t>();
  if (n > max) throw FormatError(fmt::format("'{}' is {}, over the limit of {}", key, n, max));
  return n;
}

}  // namespace

std::string describe_reset(uint32_t code) {
  switch (code) {
    case static_cast<uint32_t>(ResetCode::REFUSED): return "refused: busy or stopping (1)";
    case kResetBadRequest: return "refused as malformed (0x100)";
    case kResetLocalUnavailable: return "its own API did not answer (0x101)";
    default: return fmt::format("{} ({})", reset_name(code), code);
  }
}

bool forwardable_header(const std::string& name) {
  static const char* const kNever[] = {"authorization", "x-api-key", "host", "content-length", "content-type",
                                       "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
                                       "expect", "accept-encoding", "cookie"};
  const std::string n = lower(name);
  if (!token(n)) return false;
  for (const char* k : kNever)
    if (n == k) return false;
  if (n.rfind("proxy-", 0) == 0 || n.rfind("x-llmesh-", 0) == 0) return false;
  return true;
}

std::vector<uint8_t> encode_request_head(const RequestHead& h) {
  if (h.method.size() > kMaxMethod || h.path.size() > kMaxPath || h.content_type.size() > kMaxContentType ||
      h.origin.size() > kMaxOrigin || h.body_length > kMaxBodyLength)
    throw FormatError("request head field over its limit");
  json hj = json::object();
  for (const auto& [k, v] : h.headers) {
    if (hj.size() >= kMaxHeaders) break;
    if (!forwardable_header(k) || k.size() > kMaxHeaderName || v.size() > kMaxHeaderValue || !clean_value(v)) continue;
    hj[lower(k)] = v;
  }
  json j = {{"t", kHttpStreamType}, {"v", h.version}, {"m", h.method}, {"p", h.path}, {"n", h.body_length}};
  if (!h.content_type.empty()) j["ct"] = h.content_type;
  if (!hj.empty()) j["h"] = std::move(hj);
  if (!h.origin.empty()) j["o"] = h.origin;
  auto bytes = json::to_msgpack(j);
  if (bytes.size() > kMaxRequestHeadBytes) throw FormatError("request head over 64 KiB");
  return bytes;
}

RequestHead decode_request_head(std::span<const uint8_t> bytes, uint64_t max_body) {
  json j = parse(bytes, kMaxRequestHeadBytes, "request head");
  RequestHead h;
  if (str(j, "t", 64, true) != kHttpStreamType) throw FormatError("'t' is not \"http\"");
  h.version = static_cast<uint32_t>(uint(j, "v", 0xffffffffu, true));
  if (h.version < 1) throw FormatError("'v' must be at least 1");
  h.method = str(j, "m", kMaxMethod, true);
  if (!token(h.method)) throw FormatError("'m' is not an HTTP method");
  h.path = str(j, "p", kMaxPath, true);
  if (h.path.empty() || h.path[0] != '/' || h.path.find(' ') != std::string::npos)
    throw FormatError("'p' is not an absolute path");
  h.content_type = str(j, "ct", kMaxContentType, false);
  h.body_length = uint(j, "n", kMaxBodyLength, true);
  if (h.body_length > max_body)
    throw FormatError(fmt::format("'n': a {} byte body is over this node's {} byte limit", h.body_length, max_body));
  h.origin = str(j, "o", kMaxOrigin, false);
  if (const json* hv = find(j, "h")) {
    if (!hv->is_object()) throw FormatError("'h' must be a map");
    if (hv->size() > kMaxHeaders) throw FormatError(fmt::format("'h' has {} headers, over {}", hv->size(), kMaxHeaders));
    for (const auto& [k, v] : hv->items()) {
      if (k.size() > kMaxHeaderName || !token(k)) throw FormatError("'h': a header name is not an HTTP token");
      if (!v.is_string()) throw FormatError(fmt::format("'h.{}' must be a string", k));
      const auto& s = v.get_ref<const std::string&>();
      if (s.size() > kMaxHeaderValue) throw FormatError(fmt::format("'h.{}' is over {} bytes", k, kMaxHeaderValue));
      if (!clean_value(s)) throw FormatError(fmt::format("'h.{}' contains a control character", k));
      if (forwardable_header(k)) h.headers[lower(k)] = s;
    }
  }
  return h;
}

std::vector<uint8_t> encode_response_head(const ResponseHead& h) {
  json j = {{"s", h.status}};
  if (!h.interim()) j["v"] = kFormatVersion;
  if (!h.content_type.empty()) j["ct"] = h.content_type.substr(0, kMaxContentType);
  return json::to_msgpack(j);
}

ResponseHead decode_response_head(std::span<const uint8_t> bytes) {
  json j = parse(bytes, kMaxResponseHeadBytes, "answer head");
  ResponseHead h;
  h.status = static_cast<uint32_t>(uint(j, "s", 599, true));
  if (h.status < 100) throw FormatError("'s' is not an HTTP status");
  h.content_type = str(j, "ct", kMaxContentType, false);
  return h;
}

std::string stream_type(std::span<const uint8_t> header) {
  try {
    json j = parse(header, kMaxRequestHeadBytes, "stream header");
    auto it = j.find("t");
    if (it != j.end() && it->is_string() && it->get_ref<const std::string&>().size() <= 64) return *it;
  } catch (const FormatError&) {
  }
  return "";
}

}  // namespace llmesh::mesh::routing
