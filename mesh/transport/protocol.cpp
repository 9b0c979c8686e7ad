#include "transport/protocol.h"

#include <algorithm>

namespace llmesh::mesh {

using nlohmann::json;

const char* goaway_name(uint32_t code) {
  switch (static_cast<GoAwayCode>(code)) {
    case GoAwayCode::NORMAL: return "normal";
    case GoAwayCode::PROTOCOL_ERROR: return "protocol error";
    case GoAwayCode::VERSION_MISMATCH: return "version mismatch";
    case GoAwayCode::FRAME_TOO_LARGE: return "frame too large";
    case GoAwayCode::FLOW_CONTROL: return "flow control violation";
    case GoAwayCode::KEEPALIVE_TIMEOUT: return "keepalive timeout";
    case GoAwayCode::DUPLICATE: return "duplicate connection";
    case GoAwayCode::SHUTDOWN: return "shutdown";
    case GoAwayCode::IDENTITY_MISMATCH: return "identity mismatch";
    case GoAwayCode::HANDSHAKE_TIMEOUT: return "handshake timeout";
    case GoAwayCode::INTERNAL: return "internal error";
    case GoAwayCode::TOO_MANY_STREAMS: return "too many streams";
    case GoAwayCode::MESSAGE_TOO_LARGE: return "message too large";
    case GoAwayCode::CONNECTION_LOST: return "connection lost";
    case GoAwayCode::NOT_ADMITTED: return "not admitted";
  }
  if (code > 0x100 && code < 0x200) return "not admitted";
  return code >= 0x100 ? "application reason" : "unknown reason";
}

const char* reset_name(uint32_t code) {
  switch (static_cast<ResetCode>(code)) {
    case ResetCode::CANCEL: return "cancel";
    case ResetCode::REFUSED: return "refused";
    case ResetCode::PROTOCOL_ERROR: return "protocol error";
    case ResetCode::MESSAGE_TOO_LARGE: return "message too large";
    case ResetCode::CONNECTION_CLOSED: return "connection closed";
    case ResetCode::NO_HANDLER: return "no handler";
  }
  return "unknown reason";
}

std::vector<uint8_t> encode_hello(const Hello& h) {
  json j = json::object();
  j["vmin"] = h.version_min;
  j["vmax"] = h.version_max;
  j["id"] = json::binary(std::vector<uint8_t>(h.id.bytes.begin(), h.id.bytes.end()));
  j["sw"] = h.software;
  j["caps"] = h.capabilities.is_object() ? h.capabilities : json::object();
  j["maxp"] = h.max_payload;
  j["win"] = h.stream_window;
  j["sid"] = h.session;
  return json::to_msgpack(j);
}

namespace {

bool get_u32_field(const json& j, const char* key, uint32_t* out, std::string* error) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned() || it->get<uint64_t>() > 0xFFFFFFFFull) {
    *error = std::string("HELLO field '") + key + "' missing or not a u32";
    return false;
  }
  *out = static_cast<uint32_t>(it->get<uint64_t>());
  return true;
}

}  // namespace

std::optional<Hello> decode_hello(std::span<const uint8_t> payload, std::string* error) {
  if (payload.size() > kMaxHelloPayload) {
    *error = "HELLO over " + std::to_string(kMaxHelloPayload) + " bytes";
    return std::nullopt;
  }
  json j = json::from_msgpack(payload.begin(), payload.end(), true, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = "HELLO payload is not a msgpack map";
    return std::nullopt;
  }
  Hello h;
  if (!get_u32_field(j, "vmin", &h.version_min, error) || !get_u32_field(j, "vmax", &h.version_max, error) ||
      !get_u32_field(j, "maxp", &h.max_payload, error) || !get_u32_field(j, "win", &h.stream_window, error))
    return std::nullopt;
  if (h.version_min > h.version_max) {
    *error = "HELLO version range is empty";
    return std::nullopt;
  }
  auto id = j.find("id");
  if (id == j.end() || !id->is_binary() || id->get_binary().size() != 32) {
    *error = "HELLO field 'id' missing or not 32 bytes";
    return std::nullopt;
  }
  std::copy(id->get_binary().begin(), id->get_binary().end(), h.id.bytes.begin());
  if (auto sw = j.find("sw"); sw != j.end() && sw->is_string()) h.software = sw->get<std::string>().substr(0, 256);
  if (auto sid = j.find("sid"); sid != j.end() && sid->is_number_unsigned()) h.session = sid->get<uint64_t>();
  if (auto caps = j.find("caps"); caps != j.end() && caps->is_object()) h.capabilities = *caps;
  if (h.max_payload < 1024 || h.stream_window < 1024) {
    *error = "HELLO limits 'maxp'/'win' below 1024 bytes";
    return std::nullopt;
  }
  return h;
}

std::optional<uint32_t> negotiate_version(uint32_t a_min, uint32_t a_max, uint32_t b_min, uint32_t b_max) {
  uint32_t hi = std::min(a_max, b_max), lo = std::max(a_min, b_min);
  if (hi < lo) return std::nullopt;
  return hi;
}

}  // namespace llmesh::mesh
