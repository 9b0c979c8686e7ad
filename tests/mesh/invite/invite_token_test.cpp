#include "invite/invite_token.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <set>

using namespace llmesh::invite;

namespace {

constexpr int64_t kNow = 1'750'000'000;  // a fixed "now" so expiry tests are deterministic

Invite sample_invite(int nodes = 3) {
  Invite inv;
  inv.mesh = MeshSecret::create();
  inv.mesh.epoch = 4;
  for (int i = 0; i < nodes; ++i) {
    InviteNode n;
    n.address = "10.77.0." + std::to_string(10 + i) + ":" + std::to_string(7400 + i);
    for (size_t k = 0; k < n.node_id.size(); ++k) n.node_id[k] = uint8_t(i * 31 + k);
    inv.nodes.push_back(n);
  }
  inv.expires = kNow + 7 * 86400;
  inv.issued = kNow;
  return inv;
}

// Hand-built token from arbitrary bytes with a correct checksum (defined below).
std::string token_from_bytes(std::vector<uint8_t> bytes);

}  // namespace

TEST(InviteToken, RoundTrip) {
  Invite inv = sample_invite();
  std::string tok = encode_invite(inv);
  EXPECT_TRUE(tok.starts_with("llmesh1"));
  EXPECT_EQ(tok.find('='), std::string::npos);
  for (char c : tok.substr(7)) EXPECT_TRUE(std::isalnum((unsigned char)c) || c == '-' || c == '_') << c;
  auto r = decode_invite(tok, kNow);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(*r.invite, inv);
  // Whitespace from copy and paste is ignored.
  EXPECT_TRUE(decode_invite("  " + tok + "\n", kNow).ok());
}

TEST(InviteToken, RoundTripVariants) {
  for (int nodes : {0, 1, 5, 64}) {
    Invite inv = sample_invite(nodes);
    inv.expires = 0;  // never
    if (nodes == 1) inv.nodes[0].address = "[fd00::1]:7400";
    if (nodes == 5) inv.nodes[2].address = "node-3.home.arpa:65535";
    auto r = decode_invite(encode_invite(inv), kNow);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(*r.invite, inv);
  }
  Invite big = sample_invite(65);
  EXPECT_THROW(encode_invite(big), std::invalid_argument);
  Invite bad = sample_invite(1);
  bad.nodes[0].address = "no-port";
  EXPECT_THROW(encode_invite(bad), std::invalid_argument);
}

TEST(InviteToken, TokensAreCompact) {
  // Three nodes fit comfortably on one line of a chat message.
  EXPECT_LT(encode_invite(sample_invite(3)).size(), 400u);
}

TEST(InviteToken, Expiry) {
  Invite inv = sample_invite();
  inv.expires = kNow + 10;
  std::string tok = encode_invite(inv);
  EXPECT_TRUE(decode_invite(tok, kNow + 9).ok());
  auto r = decode_invite(tok, kNow + 10);
  EXPECT_EQ(r.code, InviteErrorCode::expired);
  EXPECT_FALSE(r.invite.has_value());
  EXPECT_NE(r.error.find("expired on " + format_utc(kNow + 10)), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("UTC"), std::string::npos);
  inv.expires = 0;
  EXPECT_TRUE(decode_invite(encode_invite(inv), INT64_MAX / 2).ok());
}

TEST(InviteToken, EverySingleCharacterChangeIsRefusedClearly) {
  std::string tok = encode_invite(sample_invite(2));
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. l";
  size_t tried = 0;
  std::set<InviteErrorCode> seen;
  for (size_t i = 0; i < tok.size(); ++i) {
    for (char c : alphabet) {
      if (c == tok[i]) continue;
      std::string t = tok;
      t[i] = c;
      auto r = decode_invite(t, kNow);
      ++tried;
      ASSERT_FALSE(r.ok()) << "accepted a token changed at " << i;
      EXPECT_FALSE(r.error.empty());
      EXPECT_EQ(r.error.find(tok.substr(7, 12)), std::string::npos) << "error echoes the token";
      seen.insert(r.code);
      if (i >= 7 && (std::isalnum((unsigned char)c) || c == '-' || c == '_')) {
        EXPECT_EQ(r.code, InviteErrorCode::damaged) << "at " << i << ": " << r.error;
      }
    }
  }
  EXPECT_GT(tried, 10000u);
  EXPECT_TRUE(seen.count(InviteErrorCode::bad_prefix));
  EXPECT_TRUE(seen.count(InviteErrorCode::bad_encoding));
  EXPECT_TRUE(seen.count(InviteErrorCode::damaged));
}

TEST(InviteToken, DamagedMessageSaysDamaged) {
  std::string tok = encode_invite(sample_invite());
  tok[20] = tok[20] == 'A' ? 'B' : 'A';
  auto r = decode_invite(tok, kNow);
  EXPECT_EQ(r.code, InviteErrorCode::damaged);
  EXPECT_NE(r.error.find("this token is damaged"), std::string::npos);
}

TEST(InviteToken, TruncationAndDeletionAndInsertion) {
  std::string tok = encode_invite(sample_invite(2));
  for (size_t n = 0; n < tok.size(); ++n) {
    auto r = decode_invite(tok.substr(0, n), kNow);
    ASSERT_FALSE(r.ok()) << "accepted a prefix of length " << n;
    EXPECT_FALSE(r.error.empty());
  }
  for (size_t i = 0; i < tok.size(); ++i) {
    std::string del = tok.substr(0, i) + tok.substr(i + 1);
    ASSERT_FALSE(decode_invite(del, kNow).ok()) << "deletion at " << i;
    std::string ins = tok.substr(0, i) + "x" + tok.substr(i);
    ASSERT_FALSE(decode_invite(ins, kNow).ok()) << "insertion at " << i;
  }
  // Swapped adjacent characters (a classic typo).
  for (size_t i = 7; i + 1 < tok.size(); ++i) {
    if (tok[i] == tok[i + 1]) continue;
    std::string t = tok;
    std::swap(t[i], t[i + 1]);
    ASSERT_FALSE(decode_invite(t, kNow).ok()) << "swap at " << i;
  }
}

TEST(InviteToken, PrefixAndEncodingErrors) {
  EXPECT_EQ(decode_invite("", kNow).code, InviteErrorCode::bad_prefix);
  EXPECT_EQ(decode_invite("hello", kNow).code, InviteErrorCode::bad_prefix);
  auto r = decode_invite("llmesh2AAAA", kNow);
  EXPECT_EQ(r.code, InviteErrorCode::bad_prefix);
  EXPECT_NE(r.error.find("newer llmesh"), std::string::npos);
  r = decode_invite("llmesh1AB$D", kNow);
  EXPECT_EQ(r.code, InviteErrorCode::bad_encoding);
  EXPECT_NE(r.error.find("character 10"), std::string::npos) << r.error;
  EXPECT_EQ(decode_invite("llmesh1A", kNow).code, InviteErrorCode::bad_encoding);  // impossible length
  EXPECT_EQ(decode_invite("llmesh1", kNow).code, InviteErrorCode::damaged);  // nothing after the prefix
}

TEST(InviteToken, TooLarge) {
  std::string huge = "llmesh1" + std::string(kMaxTokenChars, 'A');
  auto r = decode_invite(huge, kNow);
  EXPECT_EQ(r.code, InviteErrorCode::too_large);
  EXPECT_NE(r.error.find("too large"), std::string::npos);
}

namespace {

// An independent implementation of the documented format (prefix + base64url(msgpack map ||
// checksum)), so the content checks behind the checksum can be reached with any map.
std::string b64url(const std::vector<uint8_t>& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : in) {
    acc = acc << 8 | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += k[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += k[(acc << (6 - bits)) & 63];
  return out;
}

}  // namespace

#include <sodium.h>

namespace {
std::string token_from_bytes(std::vector<uint8_t> bytes) {
  static const uint8_t kKey[] = "llmesh-invite-checksum-v1";  // documented in docs/invites.md
  uint8_t sum[4];
  crypto_generichash(sum, 4, bytes.data(), bytes.size(), kKey, sizeof kKey - 1);
  bytes.insert(bytes.end(), sum, sum + 4);
  return "llmesh1" + b64url(bytes);
}
nlohmann::json sample_json() {
  Invite inv = sample_invite(1);
  return nlohmann::json{{"v", 1},
                        {"m", nlohmann::json::binary({inv.mesh.mesh_id.begin(), inv.mesh.mesh_id.end()})},
                        {"s", nlohmann::json::binary({inv.mesh.secret.begin(), inv.mesh.secret.end()})},
                        {"e", 3},
                        {"n", nlohmann::json::array({nlohmann::json::array(
                                  {"127.0.0.1:7400", nlohmann::json::binary(std::vector<uint8_t>(32, 7))})})},
                        {"x", 0}};
}
}  // namespace

TEST(InviteToken, HandBuiltTokenMatchesDocumentedFormat) {
  auto r = decode_invite(token_from_bytes(nlohmann::json::to_msgpack(sample_json())), kNow);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.invite->mesh.epoch, 3u);
  ASSERT_EQ(r.invite->nodes.size(), 1u);
  EXPECT_EQ(r.invite->nodes[0].address, "127.0.0.1:7400");
  EXPECT_EQ(r.invite->issued, 0);
}

TEST(InviteToken, UnknownKeysIgnored) {
  auto j = sample_json();
  j["zz"] = "from the future";
  j["n"][0].push_back("extra per-node field");
  EXPECT_TRUE(decode_invite(token_from_bytes(nlohmann::json::to_msgpack(j)), kNow).ok());
}

TEST(InviteToken, WrongTypesAndVersions) {
  auto check = [](nlohmann::json j, InviteErrorCode want) {
    auto r = decode_invite(token_from_bytes(nlohmann::json::to_msgpack(j)), kNow);
    EXPECT_EQ(r.code, want) << j.dump() << " -> " << r.error;
    EXPECT_FALSE(r.error.empty());
  };
  auto j = sample_json();
  j["v"] = 2;
  check(j, InviteErrorCode::unsupported_version);
  j = sample_json();
  j["v"] = "1";
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j.erase("s");
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["s"] = nlohmann::json::binary(std::vector<uint8_t>(31, 1));
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["m"] = "not binary";
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["e"] = 0;
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["e"] = -1;
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["e"] = 1.5;
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["x"] = -5;
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["n"] = "x";
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["n"][0][0] = "no port";
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["n"][0][1] = nlohmann::json::binary(std::vector<uint8_t>(16, 1));
  check(j, InviteErrorCode::wrong_types);
  j = sample_json();
  j["x"] = kNow - 1;
  check(j, InviteErrorCode::expired);
  check(nlohmann::json::array({1, 2}), InviteErrorCode::bad_format);
  // Not msgpack at all, behind a valid checksum.
  auto r = decode_invite(token_from_bytes({0xc1, 0xc1, 0xc1}), kNow);
  EXPECT_EQ(r.code, InviteErrorCode::bad_format);
  // Trailing bytes after the map.
  auto bytes = nlohmann::json::to_msgpack(sample_json());
  bytes.push_back(0x01);
  EXPECT_EQ(decode_invite(token_from_bytes(bytes), kNow).code, InviteErrorCode::bad_format);
}

TEST(InviteToken, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> bytes(rng() % 300);
    for (auto& b : bytes) b = uint8_t(rng());
    auto r = decode_invite(token_from_bytes(bytes), kNow);
    EXPECT_FALSE(r.ok() && r.invite->mesh.epoch == 0);
  }
}

TEST(InviteToken, RedactedFormNeverContainsTheSecret) {
  std::string tok = encode_invite(sample_invite());
  std::string red = redact_token(tok);
  EXPECT_TRUE(red.starts_with("llmesh1"));
  EXPECT_LT(red.size(), 48u);
  EXPECT_NE(red.find(std::to_string(tok.size()) + " chars"), std::string::npos);
  for (size_t i = 7; i + 6 <= tok.size(); ++i) ASSERT_EQ(red.find(tok.substr(i, 6)), std::string::npos);
  EXPECT_EQ(red, redact_token(tok));
  EXPECT_NE(red, redact_token(encode_invite(sample_invite())));
}

TEST(InviteToken, Addresses) {
  for (const char* a : {"127.0.0.1:1", "host:65535", "[::1]:7400", "a.b-c_d:80", "[fe80::1%2]:9"})
    EXPECT_TRUE(valid_address(a)) << a;
  for (const char* a : {"", ":80", "host:", "host:0", "host:65536", "host:8x", "ho st:80", "[::1:80", "[]:80",
                        "host:123456"})
    EXPECT_FALSE(valid_address(a)) << a;
}

TEST(Duration, Parse) {
  EXPECT_EQ(parse_duration("7d"), 7 * 86400);
  EXPECT_EQ(parse_duration("12h"), 12 * 3600);
  EXPECT_EQ(parse_duration("1d12h"), 86400 + 12 * 3600);
  EXPECT_EQ(parse_duration("90m"), 90 * 60);
  EXPECT_EQ(parse_duration("2w"), 14 * 86400);
  EXPECT_EQ(parse_duration("45s"), 45);
  EXPECT_EQ(parse_duration("never"), 0);
  std::string err;
  for (const char* bad : {"", "7", "d", "7x", "-1d", "1.5h", "0d", "11000d", "7d ", "9999999999s"}) {
    err.clear();
    EXPECT_FALSE(parse_duration(bad, &err).has_value()) << bad;
    EXPECT_FALSE(err.empty()) << bad;
  }
  EXPECT_EQ(expiry_after(0, kNow), 0);
  EXPECT_EQ(expiry_after(60, kNow), kNow + 60);
  EXPECT_EQ(format_utc(0), "1970-01-01 00:00:00 UTC");
}
