// Protocol constants and the structured payloads of the transport (docs/protocol.md): the
// HELLO exchange, version negotiation and the reason codes carried by GOAWAY and RESET.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "identity/node_identity.h"

namespace llmesh::mesh {

// Versions of the transport protocol this build speaks.
inline constexpr uint32_t kProtocolVersionMin = 1;
inline constexpr uint32_t kProtocolVersionMax = 1;

// GOAWAY reason codes (u32). Codes 0x100 and up belong to the layers above the transport
// (admission, gossip); the transport passes them through.
enum class GoAwayCode : uint32_t {
  NORMAL = 0,             // the owner closed the connection
  PROTOCOL_ERROR = 1,     // malformed frame or payload, frame on the wrong stream, missing HELLO
  VERSION_MISMATCH = 2,   // no common protocol version
  FRAME_TOO_LARGE = 3,    // a frame over the receiver's limit
  FLOW_CONTROL = 4,       // more stream data than the credit granted
  KEEPALIVE_TIMEOUT = 5,  // no PONG for too long
  DUPLICATE = 6,          // another connection to the same peer is kept
  SHUTDOWN = 7,           // the node is stopping
  IDENTITY_MISMATCH = 8,  // HELLO's node id differs from the certificate, or a connection to self
  HANDSHAKE_TIMEOUT = 9,  // TLS + HELLO not done in time
  INTERNAL = 10,
  TOO_MANY_STREAMS = 11,
  MESSAGE_TOO_LARGE = 12, // a reassembled MSG over the limit
  // Local-only reasons (never sent; reported to the owner when the connection just ends).
  CONNECTION_LOST = 0xF0,  // EOF or a socket/TLS error
  // The admission layer's codes: 0x100 + AdmissionReason (docs/invites.md), 0x101..0x1FF.
  NOT_ADMITTED = 0x100,
};

// The MSG kind of the ADMIT message (the first message after HELLO when admission is on).
// Other layers' kinds: gossip 2, mesh control 3 (docs/protocol.md, "Messages").
inline constexpr uint16_t kAdmitKind = 1;

// RESET reason codes (u32).
enum class ResetCode : uint32_t {
  CANCEL = 0,             // the stream's owner gave up
  REFUSED = 1,            // too many streams, or the connection is going away
  PROTOCOL_ERROR = 2,     // a frame that the stream's state does not allow
  MESSAGE_TOO_LARGE = 3,  // a reassembled message over the stream's limit
  CONNECTION_CLOSED = 4,  // local only: the connection ended under the stream
  NO_HANDLER = 5,         // the peer has no one to take the stream
};

const char* goaway_name(uint32_t code);
const char* reset_name(uint32_t code);

// The HELLO payload: a msgpack map. Unknown keys are ignored (the protocol stays additive).
//   "vmin", "vmax": u32 versions supported    "id": bin(32) node id
//   "sw": software version string             "caps": map of capabilities (free-form)
//   "maxp": u32 largest frame payload the sender accepts
//   "win": u32 initial credit per stream (largest stream message the sender accepts)
//   "sid": u64 random per process run (tells a restarted peer from a second connection)
struct Hello {
  uint32_t version_min = kProtocolVersionMin;
  uint32_t version_max = kProtocolVersionMax;
  NodeId id;
  std::string software;
  nlohmann::json capabilities = nlohmann::json::object();
  uint32_t max_payload = 0;
  uint32_t stream_window = 0;
  uint64_t session = 0;
};

inline constexpr size_t kMaxHelloPayload = 8 * 1024;  // also keeps msgpack nesting shallow

std::vector<uint8_t> encode_hello(const Hello& h);
// nullopt (with *error set) when the payload is not a well-formed HELLO (or over 8 KiB).
std::optional<Hello> decode_hello(std::span<const uint8_t> payload, std::string* error);

// Highest version both sides speak, or nullopt.
std::optional<uint32_t> negotiate_version(uint32_t a_min, uint32_t a_max, uint32_t b_min, uint32_t b_max);

}  // namespace llmesh::mesh
