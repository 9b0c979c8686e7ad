#include "invite/admission.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <set>

using namespace llmesh::invite;

namespace {

constexpr int64_t kNow = 1'750'000'000;

std::array<uint8_t, 32> filled(uint8_t v) {
  std::array<uint8_t, 32> a;
  a.fill(v);
  return a;
}

struct Pair {
  MeshSecret secret = MeshSecret::create();
  std::array<uint8_t, 32> binding = filled(0xcb);
  NodeId alice = filled(0xa1), bob = filled(0xb0);
};

AdmissionResult verify(const MeshSecret& ours, const AdmitMessage& m, const std::array<uint8_t, 32>& binding,
                       const NodeId& peer, AdmissionRole role) {
  return verify_admission(ours, m, binding, peer, uint8_t(role), kNow);
}

}  // namespace

TEST(Admission, BothSidesAdmitEachOther) {
  Pair p;
  // Alice dialled Bob: she is the initiator.
  AdmitMessage from_alice = make_admit_message(p.secret, p.binding, p.alice, AdmissionRole::initiator);
  AdmitMessage from_bob = make_admit_message(p.secret, p.binding, p.bob, AdmissionRole::responder);
  auto at_bob = verify(p.secret, from_alice, p.binding, p.alice, peer_role(AdmissionRole::responder));
  auto at_alice = verify(p.secret, from_bob, p.binding, p.bob, peer_role(AdmissionRole::initiator));
  EXPECT_TRUE(at_bob.ok()) << at_bob.detail;
  EXPECT_TRUE(at_alice.ok()) << at_alice.detail;
}

TEST(Admission, ProofIsDeterministicAndBindsEveryInput) {
  Pair p;
  auto base = admission_proof(p.secret, p.binding, p.alice, 1);
  EXPECT_EQ(base, admission_proof(p.secret, p.binding, p.alice, 1));
  std::set<std::array<uint8_t, 32>> all{base};
  all.insert(admission_proof(p.secret, filled(0xcc), p.alice, 1));
  all.insert(admission_proof(p.secret, p.binding, p.bob, 1));
  all.insert(admission_proof(p.secret, p.binding, p.alice, 2));
  MeshSecret other_id = p.secret;
  other_id.mesh_id[0] ^= 1;
  all.insert(admission_proof(other_id, p.binding, p.alice, 1));
  MeshSecret other_epoch = p.secret;
  other_epoch.epoch++;
  all.insert(admission_proof(other_epoch, p.binding, p.alice, 1));
  MeshSecret other_secret = p.secret;
  other_secret.secret[31] ^= 0x80;
  all.insert(admission_proof(other_secret, p.binding, p.alice, 1));
  EXPECT_EQ(all.size(), 7u);
  EXPECT_NE(admission_key(p.secret), admission_key(other_epoch));
}

TEST(Admission, WrongSecretRefused) {
  Pair p;
  MeshSecret impostor = p.secret;  // same mesh id and epoch (e.g. guessed from a log), other secret
  impostor.secret = MeshSecret::create().secret;
  auto m = make_admit_message(impostor, p.binding, p.alice, AdmissionRole::initiator);
  auto r = verify(p.secret, m, p.binding, p.alice, AdmissionRole::initiator);
  EXPECT_EQ(r.reason, AdmissionReason::wrong_secret);
  EXPECT_FALSE(r.ok());
}

TEST(Admission, WrongMeshRefused) {
  Pair p;
  auto m = make_admit_message(MeshSecret::create(), p.binding, p.alice, AdmissionRole::initiator);
  EXPECT_EQ(verify(p.secret, m, p.binding, p.alice, AdmissionRole::initiator).reason, AdmissionReason::wrong_mesh);
}

TEST(Admission, ReplayOnAnotherChannelFails) {
  Pair p;
  auto m = make_admit_message(p.secret, p.binding, p.alice, AdmissionRole::initiator);
  // An eavesdropper (or a malicious peer) presents Alice's proof on its own connection.
  for (uint8_t b : {0x00, 0xcc, 0xff}) {
    auto r = verify(p.secret, m, filled(b), p.alice, AdmissionRole::initiator);
    EXPECT_EQ(r.reason, AdmissionReason::wrong_secret);
  }
  // Differing in a single bit of the binding is enough.
  auto binding = p.binding;
  binding[17] ^= 0x04;
  EXPECT_EQ(verify(p.secret, m, binding, p.alice, AdmissionRole::initiator).reason, AdmissionReason::wrong_secret);
}

TEST(Admission, ProofBoundToNodeIdAndRole) {
  Pair p;
  auto m = make_admit_message(p.secret, p.binding, p.alice, AdmissionRole::initiator);
  // Bob's certificate with Alice's proof.
  EXPECT_EQ(verify(p.secret, m, p.binding, p.bob, AdmissionRole::initiator).reason, AdmissionReason::wrong_secret);
  // Reflection: Alice's own proof sent back to her as the responder's.
  EXPECT_EQ(verify(p.secret, m, p.binding, p.alice, AdmissionRole::responder).reason, AdmissionReason::wrong_secret);
  EXPECT_TRUE(verify(p.secret, m, p.binding, p.alice, AdmissionRole::initiator).ok());
}

TEST(Admission, RotationRefusesOldProofsWithStaleEpoch) {
  Pair p;
  MeshSecret old = p.secret;
  MeshSecret rotated = p.secret;
  rotated.rotate();
  auto m = make_admit_message(old, p.binding, p.alice, AdmissionRole::initiator);
  auto r = verify(rotated, m, p.binding, p.alice, AdmissionRole::initiator);
  EXPECT_EQ(r.reason, AdmissionReason::stale_epoch);
  EXPECT_NE(r.detail.find("epoch 1"), std::string::npos) << r.detail;
  // A forged epoch number does not help: the key depends on the secret.
  m.epoch = rotated.epoch;
  EXPECT_EQ(verify(rotated, m, p.binding, p.alice, AdmissionRole::initiator).reason, AdmissionReason::wrong_secret);
  // The old node sees the rotated peer as newer than itself.
  auto m2 = make_admit_message(rotated, p.binding, p.bob, AdmissionRole::responder);
  EXPECT_EQ(verify(old, m2, p.binding, p.bob, AdmissionRole::responder).reason, AdmissionReason::newer_epoch);
  // New proofs with the rotated secret are fine.
  auto m3 = make_admit_message(rotated, p.binding, p.alice, AdmissionRole::initiator);
  EXPECT_TRUE(verify(rotated, m3, p.binding, p.alice, AdmissionRole::initiator).ok());
}

TEST(Admission, ExpiredTokenRefused) {
  Pair p;
  auto m = make_admit_message(p.secret, p.binding, p.alice, AdmissionRole::initiator, kNow - 1);
  auto r = verify(p.secret, m, p.binding, p.alice, AdmissionRole::initiator);
  EXPECT_EQ(r.reason, AdmissionReason::expired);
  EXPECT_NE(r.detail.find("UTC"), std::string::npos);
  m = make_admit_message(p.secret, p.binding, p.alice, AdmissionRole::initiator, kNow + 100);
  EXPECT_TRUE(verify(p.secret, m, p.binding, p.alice, AdmissionRole::initiator).ok());
}

TEST(Admission, WireFormatRoundTripAndMalformed) {
  Pair p;
  auto m = make_admit_message(p.secret, p.binding, p.alice, AdmissionRole::initiator, kNow + 5);
  auto bytes = encode_admit_message(m);
  EXPECT_EQ(bytes.size(), kAdmitMessageBytes);
  EXPECT_EQ(bytes[0], kAdmissionVersion);
  auto back = decode_admit_message(bytes);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->mesh_id, m.mesh_id);
  EXPECT_EQ(back->epoch, m.epoch);
  EXPECT_EQ(back->token_expires, m.token_expires);
  EXPECT_EQ(back->proof, m.proof);
  auto ok = verify_admission(p.secret, std::span<const uint8_t>(bytes), p.binding, p.alice,
                             uint8_t(AdmissionRole::initiator), kNow);
  EXPECT_TRUE(ok.ok()) << ok.detail;

  std::vector<uint8_t> v(bytes.begin(), bytes.end());
  for (size_t n : {size_t(0), size_t(1), kAdmitMessageBytes - 1}) {
    auto r = verify_admission(p.secret, std::span<const uint8_t>(v.data(), n), p.binding, p.alice, 1, kNow);
    EXPECT_EQ(r.reason, AdmissionReason::malformed) << n;
  }
  v.push_back(0);
  EXPECT_EQ(verify_admission(p.secret, std::span<const uint8_t>(v), p.binding, p.alice, 1, kNow).reason,
            AdmissionReason::malformed);
  v.pop_back();
  v[0] = 2;
  EXPECT_EQ(verify_admission(p.secret, std::span<const uint8_t>(v), p.binding, p.alice, 1, kNow).reason,
            AdmissionReason::version_unsupported);
  // Every single-bit flip of a valid message is refused.
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto f = bytes;
      f[i] ^= uint8_t(1 << bit);
      auto r = verify_admission(p.secret, std::span<const uint8_t>(f), p.binding, p.alice, 1, kNow);
      // Flips in the expiry field are not covered by the proof; they can only make it expire.
      if (i >= 21 && i < 29 && (r.ok() || r.reason == AdmissionReason::expired || r.reason == AdmissionReason::malformed))
        continue;
      EXPECT_FALSE(r.ok()) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(Admission, ReasonCodesAreStable) {
  EXPECT_EQ(uint8_t(AdmissionReason::ok), 0);
  EXPECT_EQ(uint8_t(AdmissionReason::wrong_mesh), 1);
  EXPECT_EQ(uint8_t(AdmissionReason::wrong_secret), 2);
  EXPECT_EQ(uint8_t(AdmissionReason::stale_epoch), 3);
  EXPECT_EQ(uint8_t(AdmissionReason::expired), 4);
  EXPECT_EQ(uint8_t(AdmissionReason::malformed), 5);
  EXPECT_EQ(uint8_t(AdmissionReason::version_unsupported), 6);
  EXPECT_EQ(uint8_t(AdmissionReason::newer_epoch), 7);
  std::set<std::string> names;
  for (int c = 0; c <= 7; ++c) {
    auto r = admission_reason_from_code(uint8_t(c));
    ASSERT_TRUE(r.has_value());
    names.insert(admission_reason_name(*r));
    EXPECT_FALSE(admission_reason_text(*r).empty());
  }
  EXPECT_EQ(names.size(), 8u);
  EXPECT_FALSE(admission_reason_from_code(8).has_value());
  EXPECT_FALSE(admission_reason_from_code(255).has_value());
  EXPECT_STREQ(admission_reason_name(AdmissionReason::stale_epoch), "stale_epoch");
}

TEST(Admission, ConstantTimeCompare) {
  std::array<uint8_t, 32> a = filled(1), b = filled(1);
  EXPECT_TRUE(constant_time_equal(a, b));
  for (size_t i = 0; i < a.size(); ++i) {
    b = a;
    b[i] ^= 0x01;
    EXPECT_FALSE(constant_time_equal(a, b)) << i;
  }
  EXPECT_FALSE(constant_time_equal(std::span<const uint8_t>(a.data(), 31), a));
  EXPECT_TRUE(constant_time_equal(std::span<const uint8_t>(), std::span<const uint8_t>()));
}

TEST(Admission, ProofVerificationDoesNotShortCircuit) {
  // verify_admission compares with sodium_memcmp, whose running time does not depend on where
  // the first difference is. A coarse timing check (median of many runs) guards against an
  // accidental early-exit comparison creeping back in: a wrong first byte and a wrong last byte
  // must take about the same time. The bound is loose so the test never flakes under load.
  Pair p;
  auto m = make_admit_message(p.secret, p.binding, p.alice, AdmissionRole::initiator);
  auto first = m, last = m;
  first.proof[0] ^= 1;
  last.proof[31] ^= 1;
  // Interleaved, so a burst of load on the machine affects both sides alike.
  std::vector<double> ta, tb;
  auto once = [&](const AdmitMessage& x, std::vector<double>& out) {
    auto s = std::chrono::steady_clock::now();
    auto r = verify(p.secret, x, p.binding, p.alice, AdmissionRole::initiator);
    auto e = std::chrono::steady_clock::now();
    EXPECT_EQ(r.reason, AdmissionReason::wrong_secret);
    out.push_back(std::chrono::duration<double, std::micro>(e - s).count());
  };
  for (int i = 0; i < 401; ++i) {
    once(first, ta);
    once(last, tb);
  }
  auto median = [](std::vector<double>& t) {
    std::nth_element(t.begin(), t.begin() + std::ptrdiff_t(t.size() / 2), t.end());
    return t[t.size() / 2];
  };
  double a = median(ta), b = median(tb);
  EXPECT_LT(std::max(a, b) / std::min(a, b), 3.0) << a << " vs " << b;
}
