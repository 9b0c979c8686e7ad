// The mesh router's policy without transports: who serves a model, the sticky rendezvous
// choice, overload, the score order, /v1/models; and the stream request format's codec.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "routing/mesh_router.h"
#include "routing/request_format.h"

namespace llmesh::mesh {
namespace {

using nlohmann::json;
using routing::order_targets;

NodeId node(int n) {
  NodeId id;
  std::mt19937_64 rng(static_cast<uint64_t>(n) * 7919 + 1);
  for (auto& b : id.bytes) b = static_cast<uint8_t>(rng());
  return id;
}

RouteTarget target(int n, const std::string& model = "m", uint32_t active = 0, uint32_t queued = 0,
                   uint32_t slots = 4, int rtt_us = 1000) {
  RouteTarget t;
  t.id = node(n);
  gossip::ModelInfo mi;
  mi.name = model;
  mi.total_layers = 32;
  mi.loaded = {0, 32};
  t.state.models = {mi};
  t.state.load = {active, queued, slots, 0};
  t.rtt = std::chrono::microseconds(rtt_us);
  return t;
}

std::vector<NodeId> ids(const std::vector<RouteTarget>& v) {
  std::vector<NodeId> out;
  for (const auto& t : v) out.push_back(t.id);
  return out;
}

NodeId first(const std::vector<RouteTarget>& targets, const std::string& key, const std::string& model = "m") {
  auto o = order_targets(targets, model, key, MeshRouterOptions{});
  return o.empty() ? NodeId{} : o.front().id;
}

TEST(MeshRoutingOrder, EmptyWhenNobodyServesTheModelWhole) {
  MeshRouterOptions opt;
  EXPECT_TRUE(order_targets({}, "m", "k", opt).empty());
  std::vector<RouteTarget> t = {target(1, "other"), target(2, "m"), target(3, "m")};
  t[1].state.models[0].loaded = {0, 16};   // half the layers: a pipeline stage, not a server of m
  t[2].state.role = gossip::Role::client;  // clients serve nothing
  EXPECT_TRUE(order_targets(t, "m", "k", opt).empty());
  // total_layers 0: the model is not split into layers, so it is served whole.
  t[1].state.models[0].total_layers = 0;
  t[1].state.models[0].loaded = {0, 0};
  EXPECT_EQ(ids(order_targets(t, "m", "k", opt)), std::vector<NodeId>{node(2)});
  // The local node is never a candidate.
  EXPECT_TRUE(order_targets(t, "m", "k", opt, node(2)).empty());
}

TEST(MeshRoutingOrder, AliasesAndDuplicatesAndDeterminism) {
  std::vector<RouteTarget> t = {target(1), target(2), target(3)};
  t[0].state.models[0].aliases = {"m-alias"};
  MeshRouterOptions opt;
  EXPECT_EQ(ids(order_targets(t, "m-alias", "k", opt)), std::vector<NodeId>{node(1)});
  t.push_back(target(2));  // the same node listed twice counts once
  auto a = ids(order_targets(t, "m", "key", opt));
  EXPECT_EQ(a.size(), 3u);
  std::mt19937 rng(5);
  for (int i = 0; i < 10; ++i) {
    std::shuffle(t.begin(), t.end(), rng);
    EXPECT_EQ(ids(order_targets(t, "m", "key", opt)), a) << "the order depends on the input order";
  }
}

TEST(MeshRoutingOrder, StickyChoiceIsTheRendezvousWinner) {
  std::vector<RouteTarget> t;
  for (int i = 0; i < 5; ++i) t.push_back(target(i, "m", static_cast<uint32_t>(i % 3)));
  std::map<NodeId, int> wins;
  for (int k = 0; k < 500; ++k) {
    std::string key = "user:" + std::to_string(k);
    NodeId best{};
    uint64_t w = 0;
    for (const auto& x : t)
      if (auto ww = routing::rendezvous_weight(key, x.id); ww >= w) w = ww, best = x.id;
    EXPECT_EQ(first(t, key), best);
    wins[best]++;
  }
  // Keys spread over every node (each gets about 100 of 500), whatever their load.
  ASSERT_EQ(wins.size(), 5u);
  for (auto& [id, n] : wins) EXPECT_GT(n, 50) << id.short_hex();
}

TEST(MeshRoutingOrder, StickinessSurvivesJoinsAndOtherDeaths) {
  std::vector<RouteTarget> t = {target(1), target(2), target(3)};
  int moved_on_join = 0;
  for (int k = 0; k < 400; ++k) {
    const std::string key = "prefix:" + std::to_string(k * 31);
    const NodeId chosen = first(t, key);
    // Nodes serving other models, or only part of this one, change nothing.
    auto more = t;
    more.push_back(target(10, "other"));
    more.push_back(target(11, "m"));
    more.back().state.models[0].loaded = {0, 8};
    EXPECT_EQ(first(more, key), chosen);
    // A new server of the model takes the key only when it wins the hash itself.
    more.push_back(target(12));
    NodeId now = first(more, key);
    EXPECT_TRUE(now == chosen || now == node(12));
    moved_on_join += now == node(12);
    // Another node dying changes nothing; the chosen one dying moves the key.
    std::vector<RouteTarget> fewer, without;
    bool dropped = false;
    for (auto& x : t) {
      if (x.id != chosen && !dropped) {
        dropped = true;
        continue;
      }
      fewer.push_back(x);
    }
    EXPECT_EQ(first(fewer, key), chosen);
    for (auto& x : t)
      if (x.id != chosen) without.push_back(x);
    EXPECT_NE(first(without, key), chosen);
  }
  // About a quarter of the keys move to the fourth node, not more.
  EXPECT_GT(moved_on_join, 50);
  EXPECT_LT(moved_on_join, 150);
}

TEST(MeshRoutingOrder, OverloadedStickyNodeIsSkipped) {
  std::vector<RouteTarget> t = {target(1), target(2), target(3)};
  const std::string key = "user:alice";
  const NodeId chosen = first(t, key);
  for (auto& x : t)
    if (x.id == chosen) x.state.load = {4, 3, 4, 0};  // 7 / 4 slots, 3 queued: overloaded
  auto o = ids(order_targets(t, "m", key, MeshRouterOptions{}));
  ASSERT_EQ(o.size(), 3u);
  EXPECT_NE(o[0], chosen);
  EXPECT_EQ(o[2], chosen);  // still tried, last
  // Busy but not queueing is not overloaded: the key stays.
  for (auto& x : t)
    if (x.id == chosen) x.state.load = {4, 0, 4, 0};
  EXPECT_EQ(first(t, key), chosen);
  // Queued but under the ratio (1 active + 1 queued of 4 slots) is not overloaded either.
  for (auto& x : t)
    if (x.id == chosen) x.state.load = {1, 1, 4, 0};
  EXPECT_EQ(first(t, key), chosen);
  // Everyone overloaded: no sticky node, the least loaded first.
  t[0].state.load = {4, 8, 4, 0};
  t[1].state.load = {4, 4, 4, 0};
  t[2].state.load = {4, 12, 4, 0};
  EXPECT_EQ(ids(order_targets(t, "m", key, MeshRouterOptions{})), (std::vector<NodeId>{node(2), node(1), node(3)}));
}

TEST(MeshRoutingOrder, TheRestByLoadAndLatency) {
  // Node 1 is the sticky choice for this key; the others follow by load ratio + rtt/100 ms.
  std::vector<RouteTarget> t = {target(1), target(2, "m", 2, 0, 4, 1000), target(3, "m", 0, 0, 4, 1000),
                                target(4, "m", 0, 0, 4, 80000), target(5, "m", 1, 0, 4, 1000)};
  std::string key;
  for (int k = 0;; ++k) {
    key = "k" + std::to_string(k);
    if (first(t, key) == node(1)) break;
  }
  // scores: n3 0.01, n5 0.26, n2 0.51, n4 0.80
  EXPECT_EQ(ids(order_targets(t, "m", key, MeshRouterOptions{})),
            (std::vector<NodeId>{node(1), node(3), node(5), node(2), node(4)}));
  // Unknown rtt counts as 50 ms.
  t[2].rtt.reset();  // n3: 0.5
  EXPECT_EQ(ids(order_targets(t, "m", key, MeshRouterOptions{})),
            (std::vector<NodeId>{node(1), node(5), node(3), node(2), node(4)}));
}

TEST(MeshRoutingOrder, MeshModelsDedupedWithCounts) {
  std::vector<RouteTarget> t = {target(1, "a"), target(2, "a"), target(3, "b"), target(4, "c")};
  t[0].state.models[0].context_length = 4096;
  t[1].state.models[0].context_length = 2048;
  t[1].state.models[0].created = 1700000000;
  t[1].state.models[0].aliases = {"a-latest"};
  t[3].state.models[0].loaded = {8, 32};  // a stage: not listed
  auto m = routing::mesh_models(t);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].id, "a");
  EXPECT_EQ(m[0].nodes, 2);
  EXPECT_EQ(m[0].context_length, 2048);
  EXPECT_EQ(m[0].created, 1700000000);
  EXPECT_EQ(m[1].id, "a-latest");
  EXPECT_EQ(m[1].nodes, 1);
  EXPECT_EQ(m[2].id, "b");
  EXPECT_TRUE(routing::mesh_models(t, node(3)).size() == 2);  // the local node's own model is not "remote"
}

// ---- the stream request format ----

TEST(MeshRoutingFormat, RoundTripAndDroppedHeaders) {
  routing::RequestHead h;
  h.method = "POST";
  h.path = "/v1/messages";
  h.content_type = "application/json";
  h.headers = {{"anthropic-version", "2023-06-01"}, {"Authorization", "Bearer x"}, {"x-llmesh-forwarded", "y"}};
  h.body_length = 1234;
  h.origin = std::string(64, 'a');
  auto bytes = routing::encode_request_head(h);
  EXPECT_LT(bytes.size(), 200u);
  EXPECT_EQ(routing::stream_type(bytes), "http");
  auto d = routing::decode_request_head(bytes);
  EXPECT_EQ(d.method, "POST");
  EXPECT_EQ(d.path, "/v1/messages");
  EXPECT_EQ(d.content_type, "application/json");
  EXPECT_EQ(d.body_length, 1234u);
  EXPECT_EQ(d.origin, h.origin);
  EXPECT_EQ(d.headers, (std::map<std::string, std::string>{{"anthropic-version", "2023-06-01"}}));
  // Unknown keys are ignored; a newer version is accepted.
  json j = json::from_msgpack(bytes);
  j["future"] = {{"x", 1}};
  j["v"] = 7;
  EXPECT_EQ(routing::decode_request_head(json::to_msgpack(j)).version, 7u);

  auto head = routing::decode_response_head(routing::encode_response_head({200, "text/event-stream"}));
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.content_type, "text/event-stream");
  EXPECT_TRUE(routing::decode_response_head(routing::encode_response_head({102, ""})).interim());
}

TEST(MeshRoutingFormat, HostileHeadsRefused) {
  const json good = {{"t", "http"}, {"v", 1}, {"m", "POST"}, {"p", "/v1/chat/completions"}, {"n", 10}};
  auto refuse = [](const json& j, uint64_t max_body = 1u << 20) {
    EXPECT_THROW(routing::decode_request_head(json::to_msgpack(j), max_body), routing::FormatError) << j.dump();
  };
  EXPECT_NO_THROW(routing::decode_request_head(json::to_msgpack(good)));
  json j;
  for (const char* k : {"t", "v", "m", "p", "n"}) {
    j = good; j.erase(k); refuse(j);
    j = good; j[k] = json::array({1}); refuse(j);
  }
  j = good; j["t"] = "pipeline"; refuse(j);
  j = good; j["v"] = 0; refuse(j);
  j = good; j["v"] = -1; refuse(j);
  j = good; j["n"] = -5; refuse(j);
  j = good; j["n"] = 1.5; refuse(j);
  j = good; j["n"] = (2u << 20); refuse(j);           // over the node's body limit
  j = good; j["n"] = UINT64_MAX; refuse(j);
  j = good; j["m"] = "PO ST"; refuse(j);
  j = good; j["m"] = std::string(100, 'P'); refuse(j);
  j = good; j["p"] = "v1/chat"; refuse(j);
  j = good; j["p"] = "/v1/x\r\nHost: evil"; refuse(j);
  j = good; j["p"] = "/" + std::string(5000, 'a'); refuse(j);
  j = good; j["ct"] = 5; refuse(j);
  j = good; j["h"] = "x"; refuse(j);
  j = good; j["h"] = {{"bad name", "v"}}; refuse(j);
  j = good; j["h"] = {{"x-ok", 5}}; refuse(j);
  j = good; j["h"] = {{"x-ok", "a\r\nb"}}; refuse(j);
  j = good; j["h"] = {{"x-ok", std::string(5000, 'a')}}; refuse(j);
  j = good; j["h"] = json::object(); for (int i = 0; i < 40; ++i) j["h"]["x-" + std::to_string(i)] = "v"; refuse(j);
  j = good; j["o"] = std::string(300, 'a'); refuse(j);
  refuse(json::array({1, 2}));
  refuse(json("http"));
  // Deep nesting, huge strings, truncation and random bytes.
  json deep = 1;
  for (int i = 0; i < 50; ++i) deep = json::array({deep});
  j = good; j["zz"] = deep; refuse(j);
  j = good; j["zz"] = std::string(100000, 'x'); refuse(j);
  auto bytes = json::to_msgpack(good);
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    EXPECT_THROW(routing::decode_request_head(std::span(bytes.data(), cut)), routing::FormatError);
  std::mt19937 rng(1);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> r(rng() % 64);
    for (auto& b : r) b = static_cast<uint8_t>(rng());
    try {
      routing::decode_request_head(r);
    } catch (const routing::FormatError&) {
    }
    EXPECT_EQ(routing::stream_type(r).size() <= 64, true);
  }
  EXPECT_EQ(routing::stream_type({}), "");
  // Answer heads.
  EXPECT_THROW(routing::decode_response_head(json::to_msgpack(json{{"s", 99}})), routing::FormatError);
  EXPECT_THROW(routing::decode_response_head(json::to_msgpack(json{{"s", 600}})), routing::FormatError);
  EXPECT_THROW(routing::decode_response_head(json::to_msgpack(json{{"ct", "x"}})), routing::FormatError);
  EXPECT_THROW(routing::decode_response_head(json::to_msgpack(json{{"s", 200}, {"ct", std::string(1000, 'x')}})),
               routing::FormatError);
}

}  // namespace
}  // namespace llmesh::mesh
