// ModelInfo.experts (a mixture-of-experts shard, docs/moe.md) on the gossip wire: the "ex" map
// round-trips, shows in `llmesh status --json` as "expert_shard", and hostile values (index out
// of range, no shards, too many, covers of the wrong length or over 1000 per mille, wrong types,
// no plan) are refused with WireError.
#include <gtest/gtest.h>

#include "gossip/codec.h"
#include "gossip/node_state.h"

namespace llmesh::gossip {
namespace {

using nlohmann::json;

NodeState shard_state() {
  NodeState s;
  s.role = Role::server;
  s.api_address = "10.0.0.2:8080";
  s.mesh_address = "10.0.0.2:7946";
  s.software_version = "0.1.0-dev";
  ModelInfo m;
  m.name = "stories260K-moe4x2";
  m.total_layers = 5;
  m.loaded = {0, 5};
  m.on_disk = {{0, 5}};
  m.context_length = 128;
  m.experts = {"79e43e76f12312f7", 1, 3, {500, 1000, 667}};
  ModelInfo dense;
  dense.name = "stories260K";
  dense.total_layers = 5;
  dense.loaded = {0, 5};
  s.models = {m, dense};
  s.load = {1, 0, 4, 12.5};
  s.state_version = 9;
  return s;
}

void refuse(const json& bad) {
  EXPECT_THROW(decode_node_state(json::to_msgpack(bad)), WireError) << bad.dump();
}

TEST(GossipExpertShard, RoundTripsAndShowsInStatusJson) {
  const NodeState s = shard_state();
  json wire = to_wire(s);
  ASSERT_TRUE(wire["md"][0].contains("ex"));
  EXPECT_EQ(wire["md"][0]["ex"], (json{{"p", "79e43e76f12312f7"}, {"i", 1}, {"n", 3}, {"c", {500, 1000, 667}}}));
  EXPECT_FALSE(wire["md"][1].contains("ex")) << "a model served whole carries no \"ex\"";
  const NodeState back = decode_node_state(encode_node_state(s));
  EXPECT_EQ(back, s);
  EXPECT_EQ(back.models[0].experts.covers, (std::vector<std::uint16_t>{500, 1000, 667}));
  EXPECT_TRUE(back.models[1].experts.plan.empty());

  json j = to_json(s);
  EXPECT_EQ(j["models"][0]["expert_shard"],
            (json{{"plan", "79e43e76f12312f7"}, {"index", 1}, {"count", 3}, {"covers_permille", {500, 1000, 667}}}));
  EXPECT_TRUE(j["models"][1]["expert_shard"].is_null());

  // The bounds themselves are accepted: the last of kMaxExpertShards shards, covers 0 and 1000.
  NodeState big = shard_state();
  big.models[0].experts.count = static_cast<std::uint32_t>(kMaxExpertShards);
  big.models[0].experts.index = static_cast<std::uint32_t>(kMaxExpertShards - 1);
  big.models[0].experts.covers.assign(kMaxExpertShards, 0);
  big.models[0].experts.covers.back() = 1000;
  EXPECT_EQ(decode_node_state(encode_node_state(big)), big);
  // One shard of one (the whole plan on one node) is a shard too.
  NodeState one = shard_state();
  one.models[0].experts = {"d", 0, 1, {1000}};
  EXPECT_EQ(decode_node_state(encode_node_state(one)), one);
}

TEST(GossipExpertShard, OlderRecordsAndUnknownKeys) {
  // A record from a node that predates expert shards: no "ex", decoded as served whole.
  json wire = to_wire(shard_state());
  wire["md"][0].erase("ex");
  NodeState old = decode_node_state(json::to_msgpack(wire));
  EXPECT_TRUE(old.models[0].experts.plan.empty());
  EXPECT_EQ(old.models[0].experts, ExpertShard{});
  // Newer keys inside "ex" are ignored.
  wire = to_wire(shard_state());
  wire["md"][0]["ex"]["future"] = json::array({1, 2});
  EXPECT_EQ(decode_node_state(json::to_msgpack(wire)), shard_state());
  // Covers left out: accepted, with none (the router then counts none of the home shard held).
  wire = to_wire(shard_state());
  wire["md"][0]["ex"].erase("c");
  EXPECT_TRUE(decode_node_state(json::to_msgpack(wire)).models[0].experts.covers.empty());
}

TEST(GossipExpertShard, HostileRecordsRefused) {
  const json good = to_wire(shard_state());
  auto with = [&](const char* key, json v) {
    json j = good;
    j["md"][0]["ex"][key] = std::move(v);
    return j;
  };
  auto without = [&](const char* key) {
    json j = good;
    j["md"][0]["ex"].erase(key);
    return j;
  };
  // The shard index must be below the count.
  refuse(with("i", 3));
  refuse(with("i", 4));
  refuse(with("i", 1ull << 40));
  refuse(with("i", -1));
  // No shards, or more than kMaxExpertShards.
  {
    json j = with("n", 0);
    j["md"][0]["ex"]["i"] = 0;
    j["md"][0]["ex"]["c"] = json::array();
    refuse(j);
  }
  {
    json j = with("n", kMaxExpertShards + 1);
    j["md"][0]["ex"]["c"] = json::array();
    for (std::size_t k = 0; k < kMaxExpertShards + 1; ++k) j["md"][0]["ex"]["c"].push_back(0);
    refuse(j);
  }
  refuse(with("n", UINT64_MAX));
  refuse(with("n", "3"));
  // One coverage per shard, each 0..1000 per mille, whole numbers.
  refuse(with("c", json::array({500, 1000})));
  refuse(with("c", json::array({500, 1000, 667, 0})));
  refuse(with("c", json::array()));
  refuse(with("c", json::array({500, 1001, 667})));
  refuse(with("c", json::array({500, 65536 + 500, 667})));  // not truncated to 16 bits
  refuse(with("c", json::array({500, -1, 667})));
  refuse(with("c", json::array({500, 1000.0, 667})));
  refuse(with("c", json::array({500, "1000", 667})));
  refuse(with("c", json::array({500, nullptr, 667})));
  refuse(with("c", 1000));
  refuse(with("c", json::object()));
  // "ex" must be a map.
  for (json v : {json(5), json("plan"), json::array({"p", 1, 3}), json(nullptr), json(true)}) {
    json j = good;
    j["md"][0]["ex"] = v;
    refuse(j);
  }
  // The plan digest, index and count are required; the digest is a short string.
  refuse(without("p"));
  refuse(without("i"));
  refuse(without("n"));
  refuse(with("p", ""));
  refuse(with("p", 7));
  refuse(with("p", std::string(kMaxStateString + 1, 'a')));
  // The good record still decodes (the lambdas copied it).
  EXPECT_EQ(decode_node_state(json::to_msgpack(good)), shard_state());
}

}  // namespace
}  // namespace llmesh::gossip
