// Admission: after the TLS handshake each side proves it holds the mesh secret, bound to this
// very channel so a proof cannot be replayed on another connection.
//
//   key   = BLAKE2b-256(key = secret, salt = mesh id, personal = "llmesh-admit-v1",
//                       input = epoch as 4 bytes big-endian)
//   proof = HMAC-SHA256(key, "llmesh-admission-v1" || channel binding (32 bytes, the TLS
//                       exporter value, equal on both ends) || own node id (32) || role (1))
//
// Each side sends an ADMIT message {version, mesh id, epoch, proof} (encode_admit_message); the
// receiver checks it against its own secret with the peer's node id (from the peer's pinned
// certificate) and the peer's role, compares proofs in constant time, and either proceeds or
// closes with a reason code, logged on both sides. Spec: docs/invites.md.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "invite/mesh_secret.h"

namespace llmesh::invite {

inline constexpr uint8_t kAdmissionVersion = 1;
inline constexpr size_t kChannelBindingBytes = 32;
inline constexpr size_t kProofBytes = 32;
// version (1) | mesh id (16) | epoch (4, big-endian) | token expiry (8, big-endian, 0 = none) | proof (32)
inline constexpr size_t kAdmitMessageBytes = 1 + 16 + 4 + 8 + 32;
// The TLS exporter label the transport should use for the 32-byte channel binding.
inline constexpr const char* kChannelBindingLabel = "EXPORTER-llmesh-admission";

// The role byte in the proof: which end of the TLS connection sent it. Each side verifies the
// peer's proof with the opposite role, so a proof can never be reflected back to its sender.
enum class AdmissionRole : uint8_t { initiator = 1, responder = 2 };
inline AdmissionRole peer_role(AdmissionRole own) {
  return own == AdmissionRole::initiator ? AdmissionRole::responder : AdmissionRole::initiator;
}

// Stable numeric values: they travel in refusal frames and appear in logs. Never renumber.
enum class AdmissionReason : uint8_t {
  ok = 0,
  wrong_mesh = 1,           // the peer belongs to another mesh (different mesh id)
  wrong_secret = 2,         // same mesh id and epoch, but the proof does not verify
  stale_epoch = 3,          // the peer's secret is older than ours: its token was rotated out
  expired = 4,              // the peer joined with an invite token that has expired
  malformed = 5,            // the ADMIT message has the wrong size or shape
  version_unsupported = 6,  // an admission version this llmesh does not speak
  newer_epoch = 7,          // the peer's secret is newer than ours: this node must rejoin
};
const char* admission_reason_name(AdmissionReason r);  // "wrong_secret"
std::string admission_reason_text(AdmissionReason r);  // a sentence for logs
std::optional<AdmissionReason> admission_reason_from_code(uint8_t code);

struct AdmissionResult {
  AdmissionReason reason = AdmissionReason::ok;
  std::string detail;  // for logs; never contains secret material
  bool ok() const { return reason == AdmissionReason::ok; }
};

struct AdmitMessage {
  uint8_t version = kAdmissionVersion;
  MeshId mesh_id{};
  uint32_t epoch = 0;
  int64_t token_expires = 0;  // expiry of the invite this node joined with, 0 = none/never
  std::array<uint8_t, kProofBytes> proof{};
};

std::array<uint8_t, 32> admission_key(const MeshSecret& s);
std::array<uint8_t, kProofBytes> admission_proof(const MeshSecret& s,
                                                 std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                                 std::span<const uint8_t, 32> node_id, uint8_t role);

// What this node sends after the handshake.
AdmitMessage make_admit_message(const MeshSecret& s, std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                std::span<const uint8_t, 32> own_node_id, AdmissionRole own_role,
                                int64_t token_expires = 0);
std::array<uint8_t, kAdmitMessageBytes> encode_admit_message(const AdmitMessage& m);
// nullopt when the size is wrong (reason malformed).
std::optional<AdmitMessage> decode_admit_message(std::span<const uint8_t> bytes);

// Checks the peer's message against our secret. now: unix seconds (0 = current time).
AdmissionResult verify_admission(const MeshSecret& ours, const AdmitMessage& theirs,
                                 std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                 std::span<const uint8_t, 32> peer_node_id, uint8_t peer_role, int64_t now = 0);
// Same, from the raw ADMIT bytes (a wrong size gives malformed).
AdmissionResult verify_admission(const MeshSecret& ours, std::span<const uint8_t> admit_bytes,
                                 std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                 std::span<const uint8_t, 32> peer_node_id, uint8_t peer_role, int64_t now = 0);

// Constant-time equality (libsodium sodium_memcmp); false when the sizes differ.
bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace llmesh::invite
