// The gossip wire format: round trips, additive evolution (unknown keys ignored) and hostile
// bytes (random, truncated, oversized, deeply nested, wrong types) refused with WireError.
#include <gtest/gtest.h>

#include <random>

#include "gossip/codec.h"
#include "gossip/dissemination.h"
#include "gossip/node_state.h"
#include "gossip/swim.h"
#include "gossip/wire.h"
#include "sim_network.h"

namespace llmesh::gossip {
namespace {

using nlohmann::json;

NodeState full_state() {
  NodeState s;
  s.role = Role::server;
  s.api_address = "192.168.1.20:8080";
  s.mesh_address = "192.168.1.20:7946";
  s.software_version = "0.1.0-dev";
  s.protocol_version = 3;
  s.hardware = {32, 128ull << 30, 97ull << 30, 1234.75, "NVIDIA RTX 4090"};
  s.models = {{"Qwen3-32B-Q4_K_M", "sha256:abcd", 64, {0, 32}, {{0, 32}, {32, 64}}},
              {"Llama-3.1-8B", "", 32, {0, 0}, {}}};
  s.load = {3, 2, 8, 57.5};
  s.state_version = 42;
  return s;
}

TEST(GossipEncoding, NodeStateRoundTrip) {
  NodeState s = full_state();
  auto bytes = encode_node_state(s);
  EXPECT_EQ(decode_node_state(bytes), s);
  NodeState client;
  client.role = Role::client;
  client.state_version = 1;
  EXPECT_EQ(decode_node_state(encode_node_state(client)), client);
  RecordProperty("node_state_bytes", static_cast<int>(bytes.size()));
  std::printf("[figure] full NodeState record (2 models): %zu bytes\n", bytes.size());
  EXPECT_LT(bytes.size(), 256u);
}

TEST(GossipEncoding, NodeStateUnknownKeysIgnored) {
  json j = to_wire(full_state());
  j["zz"] = json::array({1, 2, 3});
  j["hw"]["npu"] = "future";
  j["md"][0]["quant"] = {{"x", 1}};
  auto bytes = json::to_msgpack(j);
  EXPECT_EQ(decode_node_state(bytes), full_state());
}

TEST(GossipEncoding, ModelAliasesContextAndCreated) {
  NodeState s = full_state();
  s.models[0].aliases = {"qwen3-32b", "qwen-big"};
  s.models[0].context_length = 32768;
  s.models[0].created = 1700000000;
  s.models[1].created = -5;  // before 1970: kept as given
  json j = to_wire(s);
  EXPECT_EQ(j["md"][0]["al"], json::array({"qwen3-32b", "qwen-big"}));
  EXPECT_EQ(j["md"][0]["cx"], 32768);
  EXPECT_EQ(j["md"][0]["cr"], 1700000000);
  EXPECT_FALSE(j["md"][1].contains("al"));  // empty and zero fields are left out
  EXPECT_FALSE(j["md"][1].contains("cx"));
  EXPECT_EQ(decode_node_state(encode_node_state(s)), s);
  EXPECT_EQ(to_json(s)["models"][0]["aliases"], json::array({"qwen3-32b", "qwen-big"}));
  EXPECT_EQ(to_json(s)["models"][0]["context_length"], 32768);
  // Older records (without the keys) decode with the fields empty.
  json old = to_wire(full_state());
  EXPECT_EQ(decode_node_state(json::to_msgpack(old)).models[0].aliases.size(), 0u);

  auto refuse = [](json bad) {
    EXPECT_THROW(decode_node_state(json::to_msgpack(bad)), WireError) << bad.dump();
  };
  json b = j; b["md"][0]["al"] = "qwen"; refuse(b);
  b = j; b["md"][0]["al"] = json::array({1}); refuse(b);
  b = j; b["md"][0]["al"] = json::array({std::string(300, 'x')}); refuse(b);
  b = j; b["md"][0]["al"] = json::array(); for (int i = 0; i < 17; ++i) b["md"][0]["al"].push_back("a"); refuse(b);
  b = j; b["md"][0]["cx"] = -1; refuse(b);
  b = j; b["md"][0]["cx"] = 1ull << 32; refuse(b);
  b = j; b["md"][0]["cr"] = "yesterday"; refuse(b);
  b = j; b["md"][0]["cr"] = 1.5; refuse(b);
  b = j; b["md"][0]["cr"] = UINT64_MAX; refuse(b);
}

TEST(GossipEncoding, WantedModels) {
  NodeState s = full_state();
  s.wanted = {"qwen3-8b", "llama-3-70b"};
  json j = to_wire(s);
  EXPECT_EQ(j["wm"], json::array({"qwen3-8b", "llama-3-70b"}));
  EXPECT_FALSE(to_wire(full_state()).contains("wm"));  // left out when empty: older nodes never see it
  EXPECT_EQ(decode_node_state(encode_node_state(s)), s);
  EXPECT_EQ(to_json(s)["wanted"], json::array({"qwen3-8b", "llama-3-70b"}));
  auto refuse = [](json bad) {
    EXPECT_THROW(decode_node_state(json::to_msgpack(bad)), WireError) << bad.dump();
  };
  json b = j; b["wm"] = "qwen"; refuse(b);
  b = j; b["wm"] = json::array({7}); refuse(b);
  b = j; b["wm"] = json::array({std::string(300, 'x')}); refuse(b);
  b = j; b["wm"] = json::array(); for (int i = 0; i < 17; ++i) b["wm"].push_back("m"); refuse(b);
}

TEST(GossipEncoding, LinksAndCounters) {
  NodeState s = full_state();
  s.load.requests_total = 12;
  s.load.generated_tokens_total = 3456;
  s.links = {{"0123456789abcdef", 420}, {"fedcba9876543210", 15000}};
  json j = to_wire(s);
  EXPECT_EQ(j["lk"], json::parse(R"([["0123456789abcdef", 420], ["fedcba9876543210", 15000]])"));
  EXPECT_EQ(j["lo"]["n"], 12);
  EXPECT_EQ(j["lo"]["g"], 3456);
  json plain = to_wire(full_state());  // left out when empty or zero: older nodes never see them
  EXPECT_FALSE(plain.contains("lk"));
  EXPECT_FALSE(plain["lo"].contains("n"));
  EXPECT_EQ(decode_node_state(encode_node_state(s)), s);
  json v = to_json(s);
  EXPECT_EQ(v["load"]["requests_total"], 12);
  EXPECT_EQ(v["load"]["generated_tokens_total"], 3456);
  EXPECT_EQ(v["links"][1]["peer"], "fedcba9876543210");
  EXPECT_DOUBLE_EQ(v["links"][1]["rtt_ms"].get<double>(), 15.0);
  auto refuse = [](json bad) {
    EXPECT_THROW(decode_node_state(json::to_msgpack(bad)), WireError) << bad.dump();
  };
  json b = j; b["lk"] = "x"; refuse(b);
  b = j; b["lk"][0] = json::array({"0123456789abcdef"}); refuse(b);
  b = j; b["lk"][0] = json::array({"0123456789ABCDEF", 1}); refuse(b);       // not lowercase hex
  b = j; b["lk"][0] = json::array({"0123456789abcde", 1}); refuse(b);        // 15 characters
  b = j; b["lk"][0] = json::array({"0123456789abcdef", -1}); refuse(b);
  b = j; b["lk"][0] = json::array({"0123456789abcdef", 1ull << 33}); refuse(b);
  b = j; b["lk"] = json::array(); for (int i = 0; i < 33; ++i) b["lk"].push_back(json::array({"0123456789abcdef", 1})); refuse(b);
  b = j; b["lo"]["n"] = "many"; refuse(b);
}

TEST(GossipEncoding, NodeStateWrongTypesRefused) {
  auto refuse = [](json j) {
    auto bytes = json::to_msgpack(j);
    EXPECT_THROW(decode_node_state(bytes), WireError) << j.dump();
  };
  json good = to_wire(full_state());
  json j = good; j["v"] = "42"; refuse(j);
  j = good; j["v"] = -1; refuse(j);
  j = good; j.erase("v"); refuse(j);
  j = good; j["hw"] = 5; refuse(j);
  j = good; j["hw"]["gf"] = "fast"; refuse(j);
  j = good; j["a"] = std::string(1000, 'x'); refuse(j);
  j = good; j["md"] = json::object(); refuse(j);
  j = good; j["md"][0]["ld"] = json::array({5, 2}); refuse(j);
  j = good; j["md"][0]["dk"] = json::array({json::array({1})}); refuse(j);
  j = good; j["md"][0].erase("n"); refuse(j);
  j = good; j["md"] = json::array(); for (int i = 0; i < 65; ++i) j["md"].push_back(good["md"][0]); refuse(j);
  refuse(json::array({1, 2}));
  refuse(json("state"));
}

TEST(GossipEncoding, MessageRoundTrips) {
  MemberId a = sim::node_id(1), b = sim::node_id(2);
  Message m;
  m.kind = MsgKind::ping_req;
  m.seq = 77;
  m.target = b;
  m.updates.push_back({UpdateKind::suspect, b, 9, a, std::nullopt});
  m.updates.push_back({UpdateKind::alive, a, 3, a, std::nullopt});
  m.updates.push_back({UpdateKind::state, a, 0, a, full_state()});
  Message d = decode_message(encode_message(m), 1 << 20);
  EXPECT_EQ(d.kind, MsgKind::ping_req);
  EXPECT_EQ(d.seq, 77u);
  EXPECT_EQ(d.target, b);
  ASSERT_EQ(d.updates.size(), 3u);
  EXPECT_EQ(d.updates[0].kind, UpdateKind::suspect);
  EXPECT_EQ(d.updates[0].id, b);
  EXPECT_EQ(d.updates[0].from, a);
  EXPECT_EQ(d.updates[0].incarnation, 9u);
  EXPECT_EQ(d.updates[1].from, a);  // from omitted on the wire when it is the member itself
  ASSERT_TRUE(d.updates[2].state);
  EXPECT_EQ(*d.updates[2].state, full_state());

  Message sync;
  sync.kind = MsgKind::sync_reply;
  sync.entries.push_back({a, 5, MemberStatus::suspect, 42, full_state()});
  sync.entries.push_back({"short-test-id", 1, MemberStatus::left, 0, std::nullopt});
  Message ds = decode_message(encode_message(sync), 1 << 20);
  ASSERT_EQ(ds.entries.size(), 2u);
  EXPECT_EQ(ds.entries[0].id, a);
  EXPECT_EQ(ds.entries[0].status, MemberStatus::suspect);
  EXPECT_EQ(ds.entries[0].state_version, 42u);
  EXPECT_EQ(*ds.entries[0].state, full_state());
  EXPECT_EQ(ds.entries[1].id, "short-test-id");
  EXPECT_EQ(ds.entries[1].status, MemberStatus::left);
  EXPECT_FALSE(ds.entries[1].state);
}

TEST(GossipEncoding, MessagesAreSmall) {
  Message ping;
  ping.kind = MsgKind::ping;
  ping.seq = 123456;
  auto bytes = encode_message(ping);
  EXPECT_LE(bytes.size(), 16u);
  Update alive{UpdateKind::alive, sim::node_id(3), 7, sim::node_id(3), std::nullopt};
  auto u = json::to_msgpack(update_to_wire(alive));
  EXPECT_LE(u.size(), 48u);  // a 32-byte key plus a few bytes
  std::printf("[figure] ping %zu bytes, alive update %zu bytes\n", bytes.size(), u.size());
}

TEST(GossipEncoding, UnknownKeysAndUpdateKindsIgnored) {
  json j = message_to_wire([] {
    Message m;
    m.kind = MsgKind::ack;
    m.seq = 5;
    return m;
  }());
  j["future"] = {{"x", 1}};
  j["v"] = 2;  // a newer protocol version is accepted: additions are additive
  j["g"] = json::array({json{{"k", 99}, {"i", "someone"}, {"zz", 1}},
                        json{{"k", 1}, {"i", "n1"}, {"n", 4}, {"new", true}}});
  Message d = decode_message(json::to_msgpack(j), 1 << 20);
  EXPECT_EQ(d.kind, MsgKind::ack);
  EXPECT_EQ(d.seq, 5u);
  ASSERT_EQ(d.updates.size(), 1u);
  EXPECT_EQ(d.updates[0].id, "n1");
}

TEST(GossipEncoding, HostileBytesRefused) {
  auto refuse = [](std::vector<std::uint8_t> bytes, const char* why) {
    try {
      decode_message(bytes, 1 << 16);
      ADD_FAILURE() << "accepted: " << why;
    } catch (const WireError& e) {
      EXPECT_GT(std::string(e.what()).size(), 0u);
    }
  };
  refuse({}, "empty");
  refuse({0xc1}, "reserved byte");
  refuse({0xdd, 0xff, 0xff, 0xff, 0xff}, "array of 4G elements");
  refuse({0xdf, 0xff, 0xff, 0xff, 0xff}, "map of 4G pairs");
  refuse({0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, "4 GB string");
  refuse(std::vector<std::uint8_t>(100000, 0x91), "deep nesting");
  refuse(std::vector<std::uint8_t>(70000, 0xc0), "over the size limit");
  refuse(json::to_msgpack(json::array({1, 2})), "not a map");
  refuse(json::to_msgpack(json{{"t", 1}, {"s", 1}}), "no version");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", 42}}), "unknown kind");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", "ping"}, {"s", 1}}), "kind as string");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", 1}, {"s", -3}}), "negative seq");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", 1}}), "ping without seq");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", 3}, {"s", 1}, {"i", json::binary({1, 2, 3})}}), "short binary id");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", 4}, {"g", "x"}}), "piggyback not an array");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", 4}, {"g", json::array({json{{"k", 1}}})}}), "update without id");
  refuse(json::to_msgpack(json{{"v", 1}, {"t", 5}, {"m", json::array({json{{"i", "a"}, {"n", 1}, {"st", 9}}})}}), "bad status");

  // Every truncation of a valid message is refused.
  Message m;
  m.kind = MsgKind::sync;
  m.entries.push_back({sim::node_id(1), 5, MemberStatus::alive, 42, full_state()});
  auto good = encode_message(m);
  for (std::size_t len = 0; len < good.size(); ++len)
    refuse(std::vector<std::uint8_t>(good.begin(), good.begin() + len), "truncated");
}

TEST(GossipEncoding, RandomAndMutatedBytesNeverCrash) {
  std::mt19937_64 rng(1234);
  Message m;
  m.kind = MsgKind::sync_reply;
  for (int i = 0; i < 3; ++i) m.entries.push_back({sim::node_id(i), 5, MemberStatus::alive, 42, full_state()});
  m.updates.push_back({UpdateKind::suspect, sim::node_id(2), 9, sim::node_id(1), std::nullopt});
  auto good = encode_message(m);
  int accepted = 0, refused = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<std::uint8_t> bytes;
    if (iter % 2) {
      bytes.resize(rng() % 200);
      for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
    } else {
      bytes = good;
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<std::uint8_t>(rng());
    }
    try {
      decode_message(bytes, 1 << 16);
      ++accepted;
    } catch (const WireError&) {
      ++refused;
    }
  }
  EXPECT_EQ(accepted + refused, 20000);
  EXPECT_GT(refused, 10000);

  // The state machine counts garbage and carries on.
  Swim swim(sim::node_id(0), sim::sample_state(0), {}, 1);
  swim.on_message(sim::node_id(1), std::vector<std::uint8_t>{0xdd, 0xff, 0xff, 0xff, 0xff}, TimePoint{});
  EXPECT_EQ(swim.stats().decode_errors, 1u);
  EXPECT_FALSE(swim.stats().last_decode_error.empty());
  EXPECT_EQ(swim.members().size(), 1u);
}

TEST(GossipDissemination, RetransmitLimitAndBudget) {
  EXPECT_EQ(retransmit_limit(4, 1), 4);
  EXPECT_EQ(retransmit_limit(4, 9), 4);
  EXPECT_EQ(retransmit_limit(4, 20), 8);
  EXPECT_EQ(retransmit_limit(4, 100), 12);

  BroadcastQueue q;
  for (int i = 0; i < 10; ++i)
    q.push(sim::node_id(i), BroadcastQueue::membership,
           update_to_wire({UpdateKind::alive, sim::node_id(i), 1, sim::node_id(i), std::nullopt}));
  q.push(sim::node_id(0), BroadcastQueue::membership,
         update_to_wire({UpdateKind::dead, sim::node_id(0), 1, sim::node_id(1), std::nullopt}));
  EXPECT_EQ(q.size(), 10u);  // the newer update about node 0 replaced the older
  json g = json::array();
  std::size_t used = q.fill(g, 200, 2, false);
  EXPECT_LE(used, 200u);
  EXPECT_GE(g.size(), 3u);
  EXPECT_EQ(g[0]["k"], 3);  // newest first
  // Two transmissions each drain the queue.
  for (int i = 0; i < 20 && !q.empty(); ++i) {
    json h = json::array();
    q.fill(h, 200, 2, false);
  }
  EXPECT_TRUE(q.empty());
}

}  // namespace
}  // namespace llmesh::gossip
