// Invite tokens: "llmesh1" + base64url (no padding) of
//   MessagePack map {v: version, m: mesh id, s: secret, e: epoch, n: [[address, node id], ...],
//                    x: expiry (unix seconds, 0 = never), t: issue time}
//   followed by a 4-byte BLAKE2b checksum of the map bytes.
// Unknown keys are ignored (newer issuers may add fields). A token is a secret (it carries the
// mesh secret): never log it in full, use redact_token(). Format: docs/invites.md.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "invite/mesh_secret.h"

namespace llmesh::invite {

inline constexpr std::string_view kTokenPrefix = "llmesh1";
inline constexpr uint32_t kTokenVersion = 1;
inline constexpr size_t kMaxTokenChars = 8192;   // anything longer is refused before decoding
inline constexpr size_t kMaxInviteNodes = 64;
inline constexpr size_t kMaxAddressChars = 261;  // "[" + 253-char host + "]:65535"

struct InviteNode {
  std::string address;  // "host:port" or "[v6]:port"
  NodeId node_id{};     // the node's public key: the joiner pins it when it connects
  bool operator==(const InviteNode&) const = default;
};

struct Invite {
  MeshSecret mesh;
  std::vector<InviteNode> nodes;
  int64_t expires = 0;  // unix seconds; 0 = never
  int64_t issued = 0;   // unix seconds; informational
  bool operator==(const Invite&) const = default;
};

enum class InviteErrorCode : uint8_t {
  ok = 0,
  bad_prefix = 1,           // not an llmesh invite (or from a newer, incompatible llmesh)
  bad_encoding = 2,         // characters outside base64url / impossible length
  damaged = 3,              // checksum mismatch: mistyped or cut off
  bad_format = 4,           // checksum fine but not a MessagePack map (a buggy issuer)
  wrong_types = 5,          // a field is missing or has the wrong type or size
  unsupported_version = 6,  // token version this llmesh does not read
  expired = 7,
  too_large = 8,
};
const char* invite_error_name(InviteErrorCode c);

struct InviteDecodeResult {
  std::optional<Invite> invite;
  InviteErrorCode code = InviteErrorCode::ok;
  std::string error;  // a sentence for the user; never contains the token
  bool ok() const { return code == InviteErrorCode::ok; }
};

// Throws std::invalid_argument on an unencodable invite (bad address, too many nodes).
std::string encode_invite(const Invite& inv);
// now: unix seconds (0 = the current time). Never throws.
InviteDecodeResult decode_invite(std::string_view token, int64_t now = 0);

// "llmesh1…(312 chars, id 1a2b3c4d)": safe to log; the id is a hash of the whole token, so two
// log lines about the same token can be matched without revealing it.
std::string redact_token(std::string_view token);

// "host:port" with a non-empty host (a name, IPv4, or [IPv6]) and port 1..65535.
bool valid_address(std::string_view address);

// Durations for `llmesh invite --expires D`: "never", or one or more <number><unit> with unit
// s, m, h, d, w (e.g. "7d", "12h", "1d12h", "90m"). Returns seconds, 0 for never; nullopt and a
// message in *error when malformed. Bounded to 10 years.
std::optional<int64_t> parse_duration(std::string_view text, std::string* error = nullptr);
// Expiry for a duration from parse_duration: 0 stays 0 (never), else now + seconds.
int64_t expiry_after(int64_t seconds, int64_t now = 0);
// "2025-03-01 12:00:00 UTC".
std::string format_utc(int64_t unix_seconds);
int64_t unix_now();

}  // namespace llmesh::invite
