// The transport's options and the facts it reports about peers (see transport.h).
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "identity/node_identity.h"
#include "transport/frame.h"

namespace llmesh::mesh {

struct PeerInfo;

// Admission (docs/invites.md, "The exchange"): when both functions are set, each side sends
// make(peer) as its ADMIT message (MSG kind kAdmitKind) right after its HELLO, and a connection
// becomes ready (on_connected, connect() returning) only once the peer's ADMIT passes verify().
// Nothing else is accepted before that. A refusal is sent as GOAWAY with the returned code and
// message, and logged on both sides. Both run on the I/O thread and must be quick.
struct AdmissionHooks {
  // `peer` has the id (from its pinned certificate), outbound (we dialed) and channel_binding.
  std::function<std::vector<uint8_t>(const struct PeerInfo& peer)> make;
  // nullopt: admitted; otherwise the refusal (code >= 0x100, a message naming the reason).
  std::function<std::optional<std::pair<uint32_t, std::string>>(const struct PeerInfo& peer,
                                                                  std::span<const uint8_t> admit)>
      verify;
  // The snake_case name of a refusal code (0x101..0x1FF), for the reason of log lines
  // ("wrong_secret"); unset: "not_admitted".
  std::function<std::string(uint32_t code)> reason_name;
  bool enabled() const { return make && verify; }
};

struct TransportOptions {
  std::string software_version = "llmesh/0.1.0";
  nlohmann::json capabilities = nlohmann::json::object();  // sent in HELLO "caps"
  uint32_t max_frame_payload = kDefaultMaxPayload;  // largest frame payload accepted (<= 16 MiB)
  size_t max_message = 16u << 20;                   // largest reassembled MSG accepted
  uint32_t stream_window = 4u << 20;  // per-stream credit granted = largest stream message accepted
  uint32_t max_streams = 256;         // concurrent streams a peer may open on one connection
  size_t max_send_queue = 64u << 20;  // bytes queued for a peer beyond which send() refuses
  size_t max_pending_handshakes = 64;  // accepted connections still in TLS/HELLO
  std::chrono::milliseconds handshake_timeout{10000};  // TCP connect + TLS + HELLO
  std::chrono::milliseconds ping_interval{5000};
  int max_missed_pings = 3;  // closed after ping_interval * max_missed_pings without a PONG
  std::chrono::milliseconds drain_timeout{10000};  // after GOAWAY, streams get this long to finish
  AdmissionHooks admission;  // empty: connections are ready after HELLO
  // One line per connection event (handshake refused, closed with a reason...); a refusal or
  // failure ends with " (reason code)" (docs/logging.md). Default: stderr (llmesh_log).
  std::function<void(const std::string&)> log;
};

// Why a connection ended (or a dial failed). `code` is a GoAwayCode (protocol.h).
struct CloseReason {
  uint32_t code = 0;
  bool by_peer = false;  // the peer sent the GOAWAY
  std::string message;
  std::string describe() const;  // "keepalive timeout (by peer): ..."
};

// The reason code of a connection's end for log lines (docs/logging.md): the GOAWAY code's name
// ("keepalive_timeout", "connection_lost"), an admission refusal's admission.reason_name
// ("wrong_secret"), or "" for an ordinary end (normal, shutdown, duplicate connection).
std::string close_reason_code(const CloseReason& why, const AdmissionHooks& admission);
// " (reason <code>)", or "" when close_reason_code is "".
std::string close_reason_suffix(const CloseReason& why, const AdmissionHooks& admission);

struct PeerInfo {
  NodeId id;
  std::string address;  // remote IP
  uint16_t port = 0;    // remote port
  bool outbound = false;  // we dialed
  uint32_t version = 0;   // negotiated protocol version
  std::string software;
  nlohmann::json capabilities = nlohmann::json::object();
  std::array<uint8_t, 32> channel_binding{};  // TLS exporter "EXPORTER-llmesh-admission"
};

}  // namespace llmesh::mesh
