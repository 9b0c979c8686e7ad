// A nostr relay client (NIP-01 over WebSocket, ws:// and wss://): publish one event to many
// relays, or query many relays with one filter. Relays are untrusted and often down: each
// relay gets one deadline for the whole exchange (resolve, connect, TLS, WebSocket handshake,
// messages), a relay that fails is reported with a reason and never holds up the others, and
// every event a relay serves is parsed with bounds and verified (id and BIP-340 signature).
//
// Threads: each call runs one io_context on the calling thread with every relay's exchange on
// it as a coroutine, and returns when all have finished or hit their deadline. Calls are
// independent and may run concurrently on different threads. Nothing throws. docs/nostr.md.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "discovery/nostr_event.h"

namespace llmesh::mesh::discovery {

struct RelayUrl {
  bool tls = false;          // wss://
  std::string host;          // a name, an IPv4 address, or an IPv6 address without brackets
  uint16_t port = 0;         // 80 for ws://, 443 for wss:// unless given
  std::string target = "/";  // path and query
  std::string text;          // the URL as given
};
// ws:// or wss:// (scheme in any case), host or [IPv6], optional :port, optional path and
// query; a #fragment is dropped. No user info, no spaces or control characters.
std::optional<RelayUrl> parse_relay_url(std::string_view url, std::string* error = nullptr);

struct RelayOptions {
  std::chrono::milliseconds timeout{5000};  // whole operation per relay (connect+handshake+exchange)
  size_t max_message_bytes = 512 * 1024;    // a larger relay message is a failure of that relay
  size_t max_events = 1000;                 // per query per relay: the query ends (ok) when reached
  std::string ca_file;                      // extra CA certificate (PEM) to trust for wss, besides the system's
};

struct PublishResult {
  std::string relay;
  bool ok = false;      // the relay answered ["OK", id, true, ...]
  std::string error;    // why not, when !ok: "timed out after 5000 ms waiting for OK", "refused: ..."
  std::string message;  // the relay's OK message (e.g. "duplicate: already have this event")
  std::chrono::milliseconds took{0};
};

struct QueryResult {
  std::string relay;
  bool ok = false;  // EOSE (or max_events) reached; on failure `events` holds what came before it
  std::string error;
  std::vector<NostrEvent> events;       // verified, distinct ids, in the relay's order
  size_t rejected = 0;                  // events dropped: malformed, bad id or bad signature
  std::vector<std::string> rejections;  // their reasons, e.g. "bad_signature: 3f2a9c01" (at most 20 kept)
  std::chrono::milliseconds took{0};
};

// Sends ["EVENT", e] to each relay (all relays concurrently) and waits for
// ["OK", id, accepted, message]: ok = accepted. One result per relay, in the given order.
std::vector<PublishResult> publish_event(const std::vector<std::string>& relays, const NostrEvent& e,
                                         const RelayOptions& o = {});

// Sends ["REQ", subid, filter] to each relay concurrently, collects the EVENTs of that
// subscription until EOSE (or the deadline: then ok=false with the events so far), then sends
// CLOSE. Every event is parsed and verified; failing ones are dropped and counted. Events are
// deduplicated by id within a relay. ["CLOSED", subid, msg] fails the query with the relay's
// message. NOTICE is remembered (and quoted in a failure), AUTH and unknown messages ignored.
std::vector<QueryResult> query_relays(const std::vector<std::string>& relays, const nlohmann::json& filter,
                                      const RelayOptions& o = {});

}  // namespace llmesh::mesh::discovery
