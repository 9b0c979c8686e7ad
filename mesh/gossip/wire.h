// Gossip message formats (docs/gossip.md): every message is one MessagePack map
//   {"v": protocol version, "t": kind, ...kind fields..., "g": [piggybacked updates]}
// with short keys; unknown keys and unknown update kinds are ignored so the protocol can grow.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gossip/codec.h"
#include "gossip/node_state.h"

namespace llmesh::gossip {

// A member is named by its node id's hex form (64 lowercase hex digits, the Ed25519 public key).
using MemberId = std::string;

inline constexpr std::uint32_t kGossipProtocolVersion = 1;

enum class MsgKind : std::uint8_t {
  ping = 1,        // {s: seq}: answer with ack
  ack = 2,         // {s: seq}
  ping_req = 3,    // {s: seq, i: target}: ping target for me, relay its ack
  gossip = 4,      // only piggybacked updates
  sync = 5,        // push-pull request: {m: digest of my whole view}
  sync_reply = 6,  // {m: your missing/older states plus my digest}
  sync_push = 7,   // {m: states the replier lacked}
};
inline constexpr std::size_t kMsgKinds = 8;  // index 0 unused
const char* msg_kind_name(MsgKind k);

enum class MemberStatus : std::uint8_t { alive = 0, suspect = 1, dead = 2, left = 3 };
const char* status_name(MemberStatus s);

enum class UpdateKind : std::uint8_t { alive = 1, suspect = 2, dead = 3, left = 4, state = 5 };

// One piggybacked update: membership (alive/suspect/dead/left at an incarnation, `from` naming
// who suspects or declared death) or a state record (kind state, carrying `state`).
struct Update {
  UpdateKind kind = UpdateKind::alive;
  MemberId id;
  std::uint64_t incarnation = 0;
  MemberId from;
  std::optional<NodeState> state;
};

// One member in a push-pull exchange: its status, incarnation and state version, and the state
// record itself when the receiver needs it.
struct SyncEntry {
  MemberId id;
  std::uint64_t incarnation = 0;
  MemberStatus status = MemberStatus::alive;
  std::uint64_t state_version = 0;
  std::optional<NodeState> state;
};

struct Message {
  std::uint32_t version = kGossipProtocolVersion;
  MsgKind kind = MsgKind::gossip;
  std::uint32_t seq = 0;
  MemberId target;                  // ping_req
  std::vector<SyncEntry> entries;   // sync, sync_reply, sync_push
  std::vector<Update> updates;      // piggyback, any kind
};

// Bounds on what a peer can make us decode.
inline constexpr std::size_t kMaxUpdatesPerMessage = 1024;
inline constexpr std::size_t kMaxSyncEntries = 8192;

nlohmann::json update_to_wire(const Update& u);
std::optional<Update> update_from_wire(const nlohmann::json& v);  // nullopt: unknown kind
nlohmann::json entry_to_wire(const SyncEntry& e);
SyncEntry entry_from_wire(const nlohmann::json& v);

// The message header and body without piggyback (Swim appends "g" itself).
nlohmann::json message_to_wire(const Message& m);
std::vector<std::uint8_t> encode_message(const Message& m);
// Throws WireError on anything malformed or beyond the limits.
Message decode_message(std::span<const std::uint8_t> bytes, std::size_t max_bytes);

}  // namespace llmesh::gossip
