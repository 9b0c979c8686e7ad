#include "invite/admission.h"

#include <sodium.h>

#include <cstring>

#include "invite/invite_token.h"
#include "invite/sodium_init.h"

namespace llmesh::invite {

namespace {
constexpr char kProofContext[] = "llmesh-admission-v1";
// Exactly crypto_generichash_blake2b_PERSONALBYTES (16) bytes, zero padded.
constexpr uint8_t kPersonal[crypto_generichash_blake2b_PERSONALBYTES] = {'l', 'l', 'm', 'e', 's', 'h', '-', 'a',
                                                                          'd', 'm', 'i', 't', '-', 'v', '1', 0};
static_assert(sizeof(MeshId) == crypto_generichash_blake2b_SALTBYTES);

void put_be(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = uint8_t(v >> (8 * (n - 1 - i)));
}
uint64_t get_be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = v << 8 | p[i];
  return v;
}

AdmissionResult refuse(AdmissionReason r, std::string detail) { return {r, std::move(detail)}; }
}  // namespace

const char* admission_reason_name(AdmissionReason r) {
  switch (r) {
    case AdmissionReason::ok: return "ok";
    case AdmissionReason::wrong_mesh: return "wrong_mesh";
    case AdmissionReason::wrong_secret: return "wrong_secret";
    case AdmissionReason::stale_epoch: return "stale_epoch";
    case AdmissionReason::expired: return "expired";
    case AdmissionReason::malformed: return "malformed";
    case AdmissionReason::version_unsupported: return "version_unsupported";
    case AdmissionReason::newer_epoch: return "newer_epoch";
  }
  return "unknown";
}

std::string admission_reason_text(AdmissionReason r) {
  switch (r) {
    case AdmissionReason::ok: return "admitted";
    case AdmissionReason::wrong_mesh: return "the peer belongs to a different mesh";
    case AdmissionReason::wrong_secret: return "the peer does not hold this mesh's secret";
    case AdmissionReason::stale_epoch:
      return "the peer holds an old mesh secret (it was rotated); it needs a new invite token";
    case AdmissionReason::expired: return "the peer's invite token has expired; it needs a new one";
    case AdmissionReason::malformed: return "the peer's admission message is malformed";
    case AdmissionReason::version_unsupported: return "the peer speaks an unsupported admission version";
    case AdmissionReason::newer_epoch:
      return "the peer holds a newer mesh secret (rotated since this node joined); this node needs a new invite token";
  }
  return "unknown reason";
}

std::optional<AdmissionReason> admission_reason_from_code(uint8_t code) {
  if (code > uint8_t(AdmissionReason::newer_epoch)) return std::nullopt;
  return AdmissionReason(code);
}

bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  ensure_sodium();
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::array<uint8_t, 32> admission_key(const MeshSecret& s) {
  ensure_sodium();
  uint8_t in[4];
  put_be(in, s.epoch, 4);
  std::array<uint8_t, 32> key{};
  crypto_generichash_blake2b_salt_personal(key.data(), key.size(), in, sizeof in, s.secret.data(), s.secret.size(),
                                           s.mesh_id.data(), kPersonal);
  return key;
}

std::array<uint8_t, kProofBytes> admission_proof(const MeshSecret& s,
                                                 std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                                 std::span<const uint8_t, 32> node_id, uint8_t role) {
  auto key = admission_key(s);
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const uint8_t*>(kProofContext), sizeof kProofContext - 1);
  crypto_auth_hmacsha256_update(&st, channel_binding.data(), channel_binding.size());
  crypto_auth_hmacsha256_update(&st, node_id.data(), node_id.size());
  crypto_auth_hmacsha256_update(&st, &role, 1);
  std::array<uint8_t, kProofBytes> out{};
  crypto_auth_hmacsha256_final(&st, out.data());
  sodium_memzero(key.data(), key.size());
  sodium_memzero(&st, sizeof st);
  return out;
}

AdmitMessage make_admit_message(const MeshSecret& s, std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                std::span<const uint8_t, 32> own_node_id, AdmissionRole own_role,
                                int64_t token_expires) {
  AdmitMessage m;
  m.mesh_id = s.mesh_id;
  m.epoch = s.epoch;
  m.token_expires = token_expires < 0 ? 0 : token_expires;
  m.proof = admission_proof(s, channel_binding, own_node_id, uint8_t(own_role));
  return m;
}

std::array<uint8_t, kAdmitMessageBytes> encode_admit_message(const AdmitMessage& m) {
  std::array<uint8_t, kAdmitMessageBytes> out{};
  uint8_t* p = out.data();
  *p++ = m.version;
  std::memcpy(p, m.mesh_id.data(), 16);
  p += 16;
  put_be(p, m.epoch, 4);
  p += 4;
  put_be(p, uint64_t(m.token_expires), 8);
  p += 8;
  std::memcpy(p, m.proof.data(), kProofBytes);
  return out;
}

std::optional<AdmitMessage> decode_admit_message(std::span<const uint8_t> b) {
  if (b.size() != kAdmitMessageBytes) return std::nullopt;
  AdmitMessage m;
  const uint8_t* p = b.data();
  m.version = *p++;
  std::memcpy(m.mesh_id.data(), p, 16);
  p += 16;
  m.epoch = uint32_t(get_be(p, 4));
  p += 4;
  m.token_expires = int64_t(get_be(p, 8));
  p += 8;
  std::memcpy(m.proof.data(), p, kProofBytes);
  return m;
}

AdmissionResult verify_admission(const MeshSecret& ours, const AdmitMessage& theirs,
                                 std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                 std::span<const uint8_t, 32> peer_node_id, uint8_t peer_role, int64_t now) {
  if (theirs.version != kAdmissionVersion)
    return refuse(AdmissionReason::version_unsupported,
                  "admission version " + std::to_string(theirs.version) + " (this node speaks " +
                      std::to_string(kAdmissionVersion) + ")");
  if (theirs.token_expires < 0) return refuse(AdmissionReason::malformed, "negative token expiry");
  // The mesh id is not secret; comparing it in the clear only tells a stranger "not this mesh".
  if (theirs.mesh_id != ours.mesh_id)
    return refuse(AdmissionReason::wrong_mesh, "peer mesh " + to_hex(theirs.mesh_id).substr(0, 8) +
                                                   "…, this mesh " + to_hex(ours.mesh_id).substr(0, 8) + "…");
  if (theirs.epoch < ours.epoch)
    return refuse(AdmissionReason::stale_epoch, "peer secret epoch " + std::to_string(theirs.epoch) +
                                                    ", this mesh is at epoch " + std::to_string(ours.epoch));
  if (theirs.epoch > ours.epoch)
    return refuse(AdmissionReason::newer_epoch, "peer secret epoch " + std::to_string(theirs.epoch) +
                                                    ", this node is at epoch " + std::to_string(ours.epoch));
  if (now == 0) now = unix_now();
  if (theirs.token_expires != 0 && now >= theirs.token_expires)
    return refuse(AdmissionReason::expired, "the peer's invite token expired on " + format_utc(theirs.token_expires));
  auto expected = admission_proof(ours, channel_binding, peer_node_id, peer_role);
  bool match = constant_time_equal(expected, theirs.proof);
  sodium_memzero(expected.data(), expected.size());
  if (!match) return refuse(AdmissionReason::wrong_secret, "admission proof does not verify");
  return {};
}

AdmissionResult verify_admission(const MeshSecret& ours, std::span<const uint8_t> admit_bytes,
                                 std::span<const uint8_t, kChannelBindingBytes> channel_binding,
                                 std::span<const uint8_t, 32> peer_node_id, uint8_t peer_role, int64_t now) {
  if (!admit_bytes.empty() && admit_bytes[0] != kAdmissionVersion)
    return refuse(AdmissionReason::version_unsupported,
                  "admission version " + std::to_string(admit_bytes[0]) + " (this node speaks " +
                      std::to_string(kAdmissionVersion) + ")");
  auto m = decode_admit_message(admit_bytes);
  if (!m)
    return refuse(AdmissionReason::malformed, "admission message of " + std::to_string(admit_bytes.size()) +
                                                  " bytes (expected " + std::to_string(kAdmitMessageBytes) + ")");
  return verify_admission(ours, *m, channel_binding, peer_node_id, peer_role, now);
}

}  // namespace llmesh::invite
