#include "discovery/nostr_event.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <set>

#include "temp_dir.h"

using namespace llmesh::mesh::discovery;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Events made by nostr-tools 2.25.2 (finalizeEvent, generateSecretKey; tests/node), pasted as
// printed by JSON.stringify with non-ASCII written as \u escapes: quotes, backslashes, the two-letter
// escapes, every control character, U+007F, U+2028/U+2029, accents, CJK, emoji, an empty content.
const char* const kNostrToolsEvents[] = {
    R"json({"kind":30078,"created_at":1700000000,"tags":[["d","listing-0"],["t","llmesh"],["x","tag with \"quote\"\n and \ud83d\ude80 \u0000\u0001\u0002"]],"content":"plain ascii","pubkey":"9ba4cf864cdc5116e350e57da5d37f7d8229b5293b5d18cf367b38a14e2df2c1","id":"a53cf96e531a263605adc1215d834df79478f5caed3fe596f0b06b915ccff378","sig":"acc1688836e52e7a2869160f4a3b10068489ebe535fad4e2b9baf78d77978295e8a913136436f65e6dfb12c2d678f2024e727806135f49c55d1d5604a44a8885"})json",
    R"json({"kind":30079,"created_at":1700000001,"tags":[["d","listing-1"],["t","llmesh"],["x","tag with \"quote\"\n and \ud83d\ude80 \u0000\u0001\u0002"]],"content":"quotes \"x\" and \\backslash\\ newline\n tab\t cr\r bs\b ff\f","pubkey":"9ba4cf864cdc5116e350e57da5d37f7d8229b5293b5d18cf367b38a14e2df2c1","id":"f8835193ed31ddc27b336a2918b89b4ac82460f038ab49165be979e35680de1b","sig":"954ea52275e6998ec0da18285ee00ce5604d4819cd208cdbc4001f326d15990751b08338ac51af6ce966b1d73b914ddef94c9a038198ba8dedf27c902bae8fb4"})json",
    R"json({"kind":30080,"created_at":1700000002,"tags":[["d","listing-2"],["t","llmesh"],["x","tag with \"quote\"\n and \ud83d\ude80 \u0000\u0001\u0002"]],"content":"unicode: h\u00e9llo w\u00f6rld \u65e5\u672c\u8a9e \u2713 emoji \ud83d\ude00\ud83d\ude80 del\u007f ls\u2028 ps\u2029 nbsp\u00a0","pubkey":"9ba4cf864cdc5116e350e57da5d37f7d8229b5293b5d18cf367b38a14e2df2c1","id":"f422e37df2860034d9c45edbd2d35200263ece4ec4e661c8d8f20214785d8ac0","sig":"0422d8ce126456320dfbc47f6b407762224a9ea14f404f142b70f41d466d0b21734e825be8e22c5a8aff0bfea2da43be777d08b60b75550c770e45225ac7c682"})json",
    R"json({"kind":30081,"created_at":1700000003,"tags":[["d","listing-3"],["t","llmesh"],["x","tag with \"quote\"\n and \ud83d\ude80 \u0000\u0001\u0002"]],"content":"all control chars: \u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f end","pubkey":"9ba4cf864cdc5116e350e57da5d37f7d8229b5293b5d18cf367b38a14e2df2c1","id":"5df3e5fc5cb7fda79bd4be20f8f8c008d57ccae3ba002f7e2d2a3d930b06fde3","sig":"fe235a7d09a40512e15fa1b4196c4783315cb7cddc2d0d292c5f3cc80d348cc7e13203d44f0be32ba788c16fae22bf5225f54b8658be10b4c8bb552161ff8a97"})json",
    R"json({"kind":30082,"created_at":1700000004,"tags":[["d","listing-4"],["t","llmesh"],["x","tag with \"quote\"\n and \ud83d\ude80 \u0000\u0001\u0002"]],"content":"","pubkey":"9ba4cf864cdc5116e350e57da5d37f7d8229b5293b5d18cf367b38a14e2df2c1","id":"10527bfebf0e3cfa5bd08b7207170dde54008e0a73c325ea7a52d9590386186d","sig":"f3539100a5ab8aaff02d8590eb9c847968d860baf5ecceb9d6a6a086c85005cb2b5885cf20c2b7be676ed129413146335e16efdc3d86fea04abb0416e401e9db"})json",
};
// serializeEvent() of kNostrToolsEvents[2] (the non-ASCII one), byte for byte.
const std::string kNostrToolsSerialization2 =
    "[0,\"9ba4cf864cdc5116e350e57da5d37f7d8229b5293b5d18cf367b38a14e2df2c1\",1700000002,30080,[[\"d\",\"listing-2\"],[\"t\",\"llmesh\"],[\"x\",\"tag with \\\"quote\\\"\\n and \xf0""\x9f""\x9a""\x80"" \\u0000\\u0001\\u0002\"]],\"unicode: h\xc3""\xa9""llo w\xc3""\xb6""rld \xe6""\x97""\xa5""\xe6""\x9c""\xac""\xe8""\xaa""\x9e"" \xe2""\x9c""\x93"" emoji \xf0""\x9f""\x98""\x80""\xf0""\x9f""\x9a""\x80"" del\x7f"" ls\xe2""\x80""\xa8"" ps\xe2""\x80""\xa9"" nbsp\xc2""\xa0""\"]";

NostrEvent tools_event(size_t i) {
  std::string error;
  auto e = parse_event(json::parse(kNostrToolsEvents[i]), &error);
  EXPECT_TRUE(e) << error;
  return e.value_or(NostrEvent{});
}

NostrEvent signed_event(const NostrKey& key, std::string content = "hello") {
  NostrEvent e;
  e.created_at = 1'750'000'000;
  e.kind = 30078;
  e.tags = {{"d", "mesh-1"}, {"t", "llmesh"}};
  e.content = std::move(content);
  key.sign(e);
  return e;
}

std::string refusal(json j) {
  std::string error;
  auto e = parse_event(j, &error);
  EXPECT_FALSE(e) << j.dump();
  return error;
}

using llmesh::test::TempDir;

// A row of bip-0340/test-vectors.csv (bitcoin/bips, the final vectors: all 15 rows).
struct Bip340Row {
  const char* secret;  // empty: a verify-only row
  const char* pubkey;
  const char* aux;
  const char* msg;
  const char* sig;
  bool valid;
};
const Bip340Row kBip340[] = {
    // 0
    {"0000000000000000000000000000000000000000000000000000000000000003", "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9",
     "0000000000000000000000000000000000000000000000000000000000000000", "0000000000000000000000000000000000000000000000000000000000000000",
     "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA821525F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0", true},
    // 1
    {"B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "0000000000000000000000000000000000000000000000000000000000000001", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE33418906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A", true},
    // 2
    {"C90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B14E5C9", "DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8",
     "C87AA53824B4D7AE2EB035A2B5BBBCCC080E76CDC6D1692C4B0B62D798E6D906", "7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C",
     "5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1BAB745879A5AD954A72C45A91C3A51D3C7ADEA98D82F8481E0E1E03674A6F3FB7", true},
    // 3: test fails if msg is reduced modulo p or n
    {"0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710", "25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     "7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC97582B9CB13DB3933705B32BA982AF5AF25FD78881EBB32771FC5922EFC66EA3", true},
    // 4
    {"", "D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9",
     "", "4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703",
     "00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C6376AFB1548AF603B3EB45C9F8207DEE1060CB71C04E80F593060B07D28308D7F4", true},
    // 5: public key not on the curve
    {"", "EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false},
    // 6: has_even_y(R) is false
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A14602975563CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2", false},
    // 7: negated message
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD", false},
    // 8: negated s value
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6", false},
    // 9: sG - eP is infinite (x(inf) as 0)
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "0000000000000000000000000000000000000000000000000000000000000000123DDA8328AF9C23A94C1FEECFD123BA4FB73476F0D594DCB65C6425BD186051", false},
    // 10: sG - eP is infinite (x(inf) as 1)
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "00000000000000000000000000000000000000000000000000000000000000017615FBAF5AE28864013C099742DEADB4DBA87F11AC6754F93780D5A1837CF197", false},
    // 11: sig[0:32] is not an X coordinate on the curve
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "4A298DACAE57395A15D0795DDBFD1DCB564DA82B0F269BC70A74F8220429BA1D69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false},
    // 12: sig[0:32] is equal to field size
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false},
    // 13: sig[32:64] is equal to curve order
    {"", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", false},
    // 14: public key exceeds the field size
    {"", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30",
     "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false},
};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

TEST(Bip340, OfficialVectorsSignAndVerify) {
  for (const auto& row : kBip340) {
    SCOPED_TRACE(row.sig);
    EXPECT_EQ(schnorr_verify(row.pubkey, row.msg, row.sig), row.valid);
    if (*row.secret) {
      auto key = NostrKey::from_secret_hex(row.secret);
      EXPECT_EQ(key.public_hex(), lower(row.pubkey));
      EXPECT_EQ(key.sign_digest(row.msg, row.aux), lower(row.sig));
    }
  }
}

TEST(Bip340, MalformedInputsAreFalseNotErrors) {
  const auto& r = kBip340[1];
  EXPECT_TRUE(schnorr_verify(r.pubkey, r.msg, r.sig));
  EXPECT_FALSE(schnorr_verify("", r.msg, r.sig));
  EXPECT_FALSE(schnorr_verify(r.pubkey, "zz", r.sig));
  EXPECT_FALSE(schnorr_verify(r.pubkey, r.msg, std::string(r.sig).substr(2)));
  EXPECT_THROW(NostrKey::from_secret_hex("00"), std::invalid_argument);
  EXPECT_THROW(NostrKey::from_secret_hex(std::string(64, '0')), std::invalid_argument);  // zero
  EXPECT_THROW(NostrKey::from_secret_hex(std::string(64, 'f')), std::invalid_argument);  // above the order
  EXPECT_THROW(NostrKey::from_secret_hex(std::string(64, 'g')), std::invalid_argument);
}

TEST(NostrEvent, NostrToolsEventsVerifyAndHashAlike) {
  for (size_t i = 0; i < std::size(kNostrToolsEvents); ++i) {
    SCOPED_TRACE(i);
    NostrEvent e = tools_event(i);
    EXPECT_EQ(compute_id(e), e.id);
    EXPECT_EQ(verify_event(e), EventCheck::ok);
  }
  EXPECT_EQ(serialize_for_id(tools_event(2)), kNostrToolsSerialization2);
}

TEST(NostrEvent, SerializationEscapesLikeJsonStringify) {
  NostrEvent e;
  e.pubkey = std::string(64, 'a');
  e.created_at = 5;
  e.kind = 1;
  e.tags = {{"t", "x\"y"}};
  e.content = std::string("q\" b\\ n\n r\r t\t b\b f\f nul") + '\0' + "\x01\x1f del\x7f ls\xe2\x80\xa8 \xc3\xa9 /";
  EXPECT_EQ(serialize_for_id(e),
            "[0,\"" + std::string(64, 'a') +
                "\",5,1,[[\"t\",\"x\\\"y\"]],\"q\\\" b\\\\ n\\n r\\r t\\t b\\b f\\f nul\\u0000\\u0001\\u001f "
                "del\x7f ls\xe2\x80\xa8 \xc3\xa9 /\"]");
  e.content = "bad \xff utf-8";
  EXPECT_THROW(serialize_for_id(e), std::invalid_argument);
  e.content = "ok";
  e.tags = {{"t", "\xc3"}};
  EXPECT_THROW(compute_id(e), std::invalid_argument);
  EXPECT_EQ(verify_event(e), EventCheck::malformed);
}

TEST(NostrEvent, SignedEventsVerifyAndTamperingIsCaught) {
  NostrKey key = NostrKey::generate();
  NostrEvent e = signed_event(key, "a listing \xf0\x9f\x9a\x80\n");
  EXPECT_EQ(e.pubkey, key.public_hex());
  EXPECT_EQ(e.id, compute_id(e));
  EXPECT_EQ(verify_event(e), EventCheck::ok);
  // Through JSON and back (what a relay hands us).
  auto back = parse_event(json::parse(e.to_json().dump()));
  ASSERT_TRUE(back);
  EXPECT_EQ(verify_event(*back), EventCheck::ok);

  NostrEvent flipped = e;
  flipped.content[0] = 'A';
  EXPECT_EQ(verify_event(flipped), EventCheck::bad_id);
  NostrEvent resealed = flipped;  // id recomputed after tampering, old signature
  resealed.id = compute_id(resealed);
  EXPECT_EQ(verify_event(resealed), EventCheck::bad_signature);
  NostrEvent bad_sig = e;
  bad_sig.sig[5] = bad_sig.sig[5] == '0' ? '1' : '0';
  EXPECT_EQ(verify_event(bad_sig), EventCheck::bad_signature);
  NostrEvent other_key = e;  // someone else's key claimed
  other_key.pubkey = NostrKey::generate().public_hex();
  other_key.id = compute_id(other_key);
  EXPECT_EQ(verify_event(other_key), EventCheck::bad_signature);
  NostrEvent upper = e;
  upper.id[0] = 'A';
  EXPECT_EQ(verify_event(upper), EventCheck::malformed);
  EXPECT_STREQ(event_check_name(EventCheck::bad_signature), "bad_signature");

  // Fresh aux randomness: the same event signs differently each time, both valid.
  NostrEvent again = e;
  key.sign(again);
  EXPECT_EQ(again.id, e.id);
  EXPECT_NE(again.sig, e.sig);
  EXPECT_EQ(verify_event(again), EventCheck::ok);
}

TEST(NostrEvent, TagValue) {
  NostrEvent e;
  e.tags = {{"x"}, {"d", "first"}, {"d", "second"}, {"expiration", "1700000000", "extra"}};
  EXPECT_EQ(e.tag_value("d"), "first");
  EXPECT_EQ(e.tag_value("expiration"), "1700000000");
  EXPECT_EQ(e.tag_value("x"), std::nullopt);  // a tag without a value
  EXPECT_EQ(e.tag_value("t"), std::nullopt);
}

TEST(NostrEvent, ParseRefusesWithReasons) {
  json good = signed_event(NostrKey::generate()).to_json();
  ASSERT_TRUE(parse_event(good));
  auto with = [&](const char* field, json v) {
    json j = good;
    j[field] = std::move(v);
    return refusal(j);
  };
  auto without = [&](const char* field) {
    json j = good;
    j.erase(field);
    return refusal(j);
  };
  EXPECT_EQ(refusal(json::array()), "event: not a JSON object");
  EXPECT_EQ(without("sig"), "sig: missing");
  EXPECT_EQ(without("tags"), "tags: missing");
  EXPECT_EQ(with("id", 5), "id: not a string");
  EXPECT_EQ(with("id", std::string(63, 'a')), "id: not 64 lower-case hex digits");
  EXPECT_EQ(with("pubkey", std::string(64, 'A')), "pubkey: not 64 lower-case hex digits");
  EXPECT_EQ(with("sig", std::string(128, 'x')), "sig: not 128 lower-case hex digits");
  EXPECT_EQ(with("created_at", "1700000000"), "created_at: not an integer");
  EXPECT_EQ(with("created_at", 1.5), "created_at: not an integer");
  EXPECT_EQ(with("created_at", -1), "created_at: out of range 0..1099511627776");
  EXPECT_EQ(with("created_at", (int64_t{1} << 40) + 1), "created_at: out of range 0..1099511627776");
  EXPECT_EQ(with("kind", 65536), "kind: out of range 0..65535");
  EXPECT_EQ(with("kind", nullptr), "kind: not an integer");
  EXPECT_EQ(with("content", json::object()), "content: not a string");
  EXPECT_EQ(with("content", std::string(64 * 1024 + 1, 'c')), "content: 65537 bytes, more than 65536");
  EXPECT_EQ(with("tags", "d"), "tags: not an array");
  EXPECT_EQ(with("tags", json::array({json::array({"d", "x"}), "t"})), "tags[1]: not an array");
  EXPECT_EQ(with("tags", json::array({json::array()})), "tags[0]: empty");
  EXPECT_EQ(with("tags", json::array({json::array({"d", 5})})), "tags[0]: an item is not a string");
  EXPECT_EQ(with("tags", json::array({std::vector<std::string>(17, "x")})), "tags[0]: more than 16 items");
  EXPECT_EQ(with("tags", json::array({json::array({"d", std::string(1025, 'x')})})),
            "tags[0]: an item is longer than 1024 bytes");
  EXPECT_EQ(with("tags", std::vector<std::vector<std::string>>(201, {"t", "x"})), "tags: 201 tags, more than 200");
  // At the bounds: accepted (the id no longer matches, which verify_event reports, not parse_event).
  json edge = good;
  edge["tags"] = std::vector<std::vector<std::string>>(200, std::vector<std::string>(16, std::string(1024, 'x')));
  edge["content"] = std::string(64 * 1024, 'c');
  edge["kind"] = 65535;
  edge["created_at"] = int64_t{1} << 40;
  auto e = parse_event(edge);
  ASSERT_TRUE(e);
  EXPECT_EQ(verify_event(*e), EventCheck::bad_id);
}

TEST(NostrKey, FileCreatedPrivateAndReloaded) {
  TempDir dir;
  fs::path file = dir.path / "home" / "nostr.key";
  NostrKey k1 = NostrKey::load_or_create(file);
  ASSERT_TRUE(fs::exists(file));
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(fs::status(file.parent_path()).permissions() & fs::perms::all, fs::perms::owner_all);
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, k1.secret_hex() + "\n");
  NostrKey k2 = NostrKey::load_or_create(file);
  EXPECT_EQ(k2.public_hex(), k1.public_hex());
  EXPECT_EQ(k2.secret_hex(), k1.secret_hex());
  EXPECT_NE(NostrKey::generate().public_hex(), k1.public_hex());
}

TEST(NostrKey, OpenOrDamagedFilesAreRefused) {
  TempDir dir;
  fs::path file = dir.path / "nostr.key";
  auto refused = [&](const char* needle) {
    try {
      NostrKey::load_or_create(file);
      ADD_FAILURE() << "accepted " << file;
    } catch (const NostrKeyError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  NostrKey k = NostrKey::load_or_create(file);
  ::chmod(file.c_str(), 0640);
  refused("are too open");
  refused("chmod 600");
  ::chmod(file.c_str(), 0600);
  EXPECT_EQ(NostrKey::load_or_create(file).public_hex(), k.public_hex());
  {
    std::ofstream(file, std::ios::trunc) << "not a key\n";
  }
  refused("is damaged");
  {
    std::ofstream(file, std::ios::trunc) << std::string(64, '0') << "\n";  // zero is not a key
  }
  refused("is damaged");
  fs::remove(file);
  fs::create_directory(file);
  refused("is not a regular file");
}
