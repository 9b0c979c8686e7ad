#include "gossip/wire.h"

namespace llmesh::gossip {

using nlohmann::json;

const char* msg_kind_name(MsgKind k) {
  switch (k) {
    case MsgKind::ping: return "ping";
    case MsgKind::ack: return "ack";
    case MsgKind::ping_req: return "ping_req";
    case MsgKind::gossip: return "gossip";
    case MsgKind::sync: return "sync";
    case MsgKind::sync_reply: return "sync_reply";
    case MsgKind::sync_push: return "sync_push";
  }
  return "unknown";
}

const char* status_name(MemberStatus s) {
  switch (s) {
    case MemberStatus::alive: return "alive";
    case MemberStatus::suspect: return "suspect";
    case MemberStatus::dead: return "dead";
    case MemberStatus::left: return "left";
  }
  return "unknown";
}

json update_to_wire(const Update& u) {
  json out = {{"k", static_cast<int>(u.kind)}, {"i", encode_id(u.id)}};
  if (u.kind == UpdateKind::state) {
    out["s"] = u.state ? to_wire(*u.state) : json::object();
  } else {
    out["n"] = u.incarnation;
    if (!u.from.empty() && u.from != u.id) out["f"] = encode_id(u.from);
  }
  return out;
}

std::optional<Update> update_from_wire(const json& v) {
  require_map(v, "g[]");
  auto kind = read_uint(v, "k", 255, 0, true);
  if (kind < 1 || kind > 5) return std::nullopt;  // a kind from a newer protocol
  Update u;
  u.kind = static_cast<UpdateKind>(kind);
  u.id = read_id(v, "i");
  if (u.kind == UpdateKind::state) {
    auto it = v.find("s");
    if (it == v.end()) throw WireError("field 's': missing");
    u.state = node_state_from_wire(*it);
  } else {
    u.incarnation = read_uint(v, "n", UINT64_MAX, 0, true);
    u.from = read_id(v, "f", false);
    if (u.from.empty()) u.from = u.id;
  }
  return u;
}

json entry_to_wire(const SyncEntry& e) {
  json out = {{"i", encode_id(e.id)}, {"n", e.incarnation}, {"st", static_cast<int>(e.status)},
              {"sv", e.state_version}};
  if (e.state) out["s"] = to_wire(*e.state);
  return out;
}

SyncEntry entry_from_wire(const json& v) {
  require_map(v, "m[]");
  SyncEntry e;
  e.id = read_id(v, "i");
  e.incarnation = read_uint(v, "n", UINT64_MAX, 0, true);
  e.status = static_cast<MemberStatus>(read_uint(v, "st", 3, 0, true));
  e.state_version = read_uint(v, "sv", UINT64_MAX);
  if (auto it = v.find("s"); it != v.end()) {
    e.state = node_state_from_wire(*it);
    e.state_version = e.state->state_version;
  }
  return e;
}

json message_to_wire(const Message& m) {
  json out = {{"v", m.version}, {"t", static_cast<int>(m.kind)}};
  switch (m.kind) {
    case MsgKind::ping:
    case MsgKind::ack: out["s"] = m.seq; break;
    case MsgKind::ping_req:
      out["s"] = m.seq;
      out["i"] = encode_id(m.target);
      break;
    case MsgKind::sync:
    case MsgKind::sync_reply:
    case MsgKind::sync_push: {
      json entries = json::array();
      for (const auto& e : m.entries) entries.push_back(entry_to_wire(e));
      out["m"] = std::move(entries);
      break;
    }
    case MsgKind::gossip: break;
  }
  if (!m.updates.empty()) {
    json g = json::array();
    for (const auto& u : m.updates) g.push_back(update_to_wire(u));
    out["g"] = std::move(g);
  }
  return out;
}

std::vector<std::uint8_t> encode_message(const Message& m) { return json::to_msgpack(message_to_wire(m)); }

Message decode_message(std::span<const std::uint8_t> bytes, std::size_t max_bytes) {
  ParseLimits limits;
  limits.max_bytes = max_bytes;
  limits.max_depth = 10;  // message > m > entry > state > md > model > dk > range is 8
  limits.max_elements = 1 << 18;
  limits.max_string = 1024;
  json v = parse_msgpack(bytes, limits);
  require_map(v, "message");
  Message m;
  m.version = static_cast<std::uint32_t>(read_uint(v, "v", 0xffffffffu, 0, true));
  if (m.version == 0) throw WireError("field 'v': protocol version 0");
  auto kind = read_uint(v, "t", 255, 0, true);
  if (kind < 1 || kind >= kMsgKinds) throw WireError("field 't': unknown message kind " + std::to_string(kind));
  m.kind = static_cast<MsgKind>(kind);
  switch (m.kind) {
    case MsgKind::ping:
    case MsgKind::ack: m.seq = static_cast<std::uint32_t>(read_uint(v, "s", 0xffffffffu, 0, true)); break;
    case MsgKind::ping_req:
      m.seq = static_cast<std::uint32_t>(read_uint(v, "s", 0xffffffffu, 0, true));
      m.target = read_id(v, "i");
      break;
    case MsgKind::sync:
    case MsgKind::sync_reply:
    case MsgKind::sync_push:
      if (const json* entries = read_array(v, "m", kMaxSyncEntries))
        for (const json& e : *entries) m.entries.push_back(entry_from_wire(e));
      break;
    case MsgKind::gossip: break;
  }
  if (const json* g = read_array(v, "g", kMaxUpdatesPerMessage))
    for (const json& u : *g)
      if (auto upd = update_from_wire(u)) m.updates.push_back(std::move(*upd));
  return m;
}

}  // namespace llmesh::gossip
