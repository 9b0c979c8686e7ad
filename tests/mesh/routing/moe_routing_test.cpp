// The router's policy for mixture-of-experts shards (docs/moe.md, "Sessions and failover"),
// without transports: the session's home shard by rendezvous hashing of (session, plan, index),
// then the home shard's replicas, whole-model nodes, the other shards of the plan by coverage of
// the home shard's experts, other plans; the same order from every entry node; overload; the
// plan most nodes follow; order_targets delegating to it only for models served as shards.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "routing/mesh_router.h"

namespace llmesh::mesh {
namespace {

using routing::home_shard;
using routing::order_shards;
using routing::order_targets;

NodeId moe_node(int n) {
  NodeId id;
  std::mt19937_64 rng(static_cast<uint64_t>(n) * 104729 + 17);
  for (auto& b : id.bytes) b = static_cast<uint8_t>(rng());
  return id;
}

// A node serving `model` whole (every layer, every expert).
RouteTarget whole(int n, const std::string& model = "moe", uint32_t active = 0, uint32_t queued = 0,
                  uint32_t slots = 4, int rtt_us = 1000) {
  RouteTarget t;
  t.id = moe_node(n);
  t.state.role = gossip::Role::server;
  gossip::ModelInfo mi;
  mi.name = model;
  mi.total_layers = 5;
  mi.loaded = {0, 5};
  t.state.models = {mi};
  t.state.load = {active, queued, slots, 0};
  t.rtt = std::chrono::microseconds(rtt_us);
  return t;
}

// A node serving shard `index` of `count` of plan `plan`; covers[j] per mille (1000 for itself).
RouteTarget shard(int n, const std::string& plan, uint32_t index, uint32_t count, std::vector<uint16_t> covers = {},
                  const std::string& model = "moe") {
  RouteTarget t = whole(n, model);
  if (covers.empty()) covers.assign(count, 0);
  if (index < covers.size()) covers[index] = 1000;
  t.state.models[0].experts = {plan, index, count, std::move(covers)};
  return t;
}

void overload(RouteTarget& t) { t.state.load = {6, 3, 4, 0}; }  // (6 + 3) / 4 >= 1.5 with a queue

std::vector<NodeId> ids(const std::vector<RouteTarget>& v) {
  std::vector<NodeId> out;
  for (const auto& t : v) out.push_back(t.id);
  return out;
}

std::vector<NodeId> ids(std::initializer_list<int> ns) {
  std::vector<NodeId> out;
  for (int n : ns) out.push_back(moe_node(n));
  return out;
}

// Nodes a and b in the rendezvous order of (key, node): the higher weight first.
std::vector<NodeId> by_weight(const std::string& key, int a, int b) {
  const bool a_first = routing::rendezvous_weight(key, moe_node(a)) > routing::rendezvous_weight(key, moe_node(b));
  return a_first ? ids({a, b}) : ids({b, a});
}

std::vector<NodeId> concat(std::vector<NodeId> a, const std::vector<NodeId>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The covers row of a shard that holds `of_home` per mille of shard `home`'s experts.
std::vector<uint16_t> covering(uint32_t count, uint32_t home, uint16_t of_home) {
  std::vector<uint16_t> c(count, 250);
  c[home] = of_home;
  return c;
}

TEST(MoeRouting, HomeShardIsDeterministicAndSpreadsKeys) {
  EXPECT_EQ(home_shard("user:alice", "plan-a", 1), 0u);
  EXPECT_EQ(home_shard("user:alice", "plan-a", 0), 0u);  // no shards: 0, never out of the loop
  const uint32_t h = home_shard("user:alice", "plan-a", 3);
  EXPECT_LT(h, 3u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(home_shard("user:alice", "plan-a", 3), h);

  std::map<uint32_t, int> per_shard;
  int same_under_other_plan = 0;
  const int keys = 3000;
  for (int i = 0; i < keys; ++i) {
    const std::string key = "prefix:" + std::to_string(i);
    const uint32_t s = home_shard(key, "plan-a", 3);
    ASSERT_LT(s, 3u);
    ++per_shard[s];
    if (home_shard(key, "plan-b", 3) == s) ++same_under_other_plan;
  }
  ASSERT_EQ(per_shard.size(), 3u);
  for (const auto& [s, n] : per_shard) {
    EXPECT_GE(n, keys * 25 / 100) << "shard " << s << " gets too few sessions";
    EXPECT_LE(n, keys * 42 / 100) << "shard " << s << " gets too many sessions";
  }
  // The plan digest is part of the hashed item: another plan deals the sessions out anew (about
  // a third keep their index by chance).
  EXPECT_GT(same_under_other_plan, keys / 5);
  EXPECT_LT(same_under_other_plan, keys / 2);

  // Adding a shard moves only the sessions the new shard wins (rendezvous hashing): the others
  // keep their home.
  int moved_elsewhere = 0;
  for (int i = 0; i < keys; ++i) {
    const std::string key = "prefix:" + std::to_string(i);
    const uint32_t s3 = home_shard(key, "plan-a", 3), s4 = home_shard(key, "plan-a", 4);
    if (s4 != s3 && s4 != 3) ++moved_elsewhere;
  }
  EXPECT_EQ(moved_elsewhere, 0);
}

TEST(MoeRouting, HomeReplicasThenWholeThenOtherShardsByCoverageThenOtherPlans) {
  MeshRouterOptions opt;
  for (const std::string key : {"user:alice", "user:bob", "prefix:0123456789abcdef", "session:42"}) {
    const uint32_t home = home_shard(key, "P", 3), s1 = (home + 1) % 3, s2 = (home + 2) % 3;
    std::vector<RouteTarget> t = {
        shard(5, "P", s2, 3, covering(3, home, 300)),
        shard(6, "Q", home, 3, covering(3, home, 900)),  // another plan (a minority): last
        whole(3),
        shard(1, "P", home, 3),
        shard(4, "P", s1, 3, covering(3, home, 600)),
        shard(2, "P", home, 3),
    };
    auto want = concat(by_weight(key, 1, 2), ids({3, 4, 5, 6}));
    EXPECT_EQ(ids(order_shards(t, "moe", key, opt)), want) << key;
    // order_targets sees an expert shard among the servers of "moe" and orders the same way.
    EXPECT_EQ(ids(order_targets(t, "moe", key, opt)), want) << key;

    // Without replicas of the home shard (its nodes died), the whole model comes first, then
    // the shard holding the most of the lost shard's experts.
    std::vector<RouteTarget> lost;
    for (const auto& x : t)
      if (x.id != moe_node(1) && x.id != moe_node(2)) lost.push_back(x);
    EXPECT_EQ(ids(order_targets(lost, "moe", key, opt)), ids({3, 4, 5, 6})) << key;
    std::erase_if(lost, [](const RouteTarget& x) { return x.id == moe_node(3); });
    EXPECT_EQ(ids(order_targets(lost, "moe", key, opt)), ids({4, 5, 6})) << key;
  }
}

TEST(MoeRouting, CoverageTiesGoByRendezvousWeightAndMissingCoversCountAsNone) {
  MeshRouterOptions opt;
  const std::string key = "user:carol";
  const uint32_t home = home_shard(key, "P", 4), a = (home + 1) % 4, b = (home + 2) % 4, c = (home + 3) % 4;
  std::vector<RouteTarget> t = {shard(1, "P", a, 4, covering(4, home, 500)),
                                shard(2, "P", b, 4, covering(4, home, 500)),
                                shard(3, "P", c, 4)};
  t[2].state.models[0].experts.covers.clear();  // covers left out
  EXPECT_EQ(ids(order_targets(t, "moe", key, opt)), concat(by_weight(key, 1, 2), ids({3})));
}

TEST(MoeRouting, TheSameOrderFromEveryEntryNode) {
  MeshRouterOptions opt;
  std::vector<RouteTarget> all = {shard(1, "P", 0, 3), shard(2, "P", 0, 3), shard(3, "P", 1, 3, {400, 1000, 600}),
                                  shard(4, "P", 1, 3, {400, 1000, 600}), shard(5, "P", 2, 3, {700, 300, 1000}),
                                  shard(6, "P", 2, 3, {700, 300, 1000}), whole(7), shard(8, "Q", 0, 2, {1000, 0})};
  std::mt19937 rng(7);
  std::set<uint32_t> homes;
  for (int k = 0; k < 40; ++k) {
    const std::string key = "prefix:" + std::to_string(k * 7919);
    homes.insert(home_shard(key, "P", 3));
    const auto want = ids(order_targets(all, "moe", key, opt));
    ASSERT_EQ(want.size(), all.size());
    // The first two are the home shard's replicas, whichever shard that is.
    for (int i = 0; i < 2; ++i) {
      auto it = std::find_if(all.begin(), all.end(), [&](const RouteTarget& x) { return x.id == want[i]; });
      EXPECT_EQ(it->state.models[0].experts.index, home_shard(key, "P", 3)) << key;
    }
    EXPECT_EQ(want[2], moe_node(7)) << key;
    EXPECT_EQ(want.back(), moe_node(8)) << key;
    // Every node as the entry: it sees the others in its own order, with its own round trips,
    // and itself (as MeshRouter::shard_candidates adds it) last with no round trip.
    for (size_t entry = 0; entry < all.size(); ++entry) {
      std::vector<RouteTarget> view;
      for (size_t i = 0; i < all.size(); ++i)
        if (i != entry) {
          view.push_back(all[i]);
          view.back().rtt = std::chrono::microseconds(std::uniform_int_distribution<int>(100, 200000)(rng));
        }
      std::shuffle(view.begin(), view.end(), rng);
      RouteTarget self = all[entry];
      self.rtt = std::chrono::microseconds(0);
      view.push_back(self);
      EXPECT_EQ(ids(order_targets(view, "moe", key, opt)), want) << key << " from entry " << entry;
      EXPECT_EQ(ids(order_shards(view, "moe", key, opt)), want) << key << " from entry " << entry;
    }
  }
  EXPECT_EQ(homes.size(), 3u) << "40 sessions should land on every shard";
}

TEST(MoeRouting, OverloadedNodesGoAfterTheOthers) {
  MeshRouterOptions opt;
  const std::string key = "user:dave";
  const uint32_t home = home_shard(key, "P", 3), other = (home + 1) % 3;
  std::vector<RouteTarget> t = {shard(1, "P", home, 3), shard(2, "P", home, 3), whole(3),
                                shard(4, "P", other, 3, covering(3, home, 800)), shard(5, "Q", 0, 1)};
  overload(t[0]);
  EXPECT_EQ(ids(order_targets(t, "moe", key, opt)), ids({2, 3, 4, 5, 1}));
  overload(t[1]);
  EXPECT_EQ(ids(order_targets(t, "moe", key, opt)), concat(ids({3, 4, 5}), by_weight(key, 1, 2)));
  overload(t[2]);
  overload(t[3]);
  // Among the overloaded, the same classes as before.
  EXPECT_EQ(ids(order_targets(t, "moe", key, opt)), concat(concat(ids({5}), by_weight(key, 1, 2)), ids({3, 4})));
  // A queue alone is not overload: the ratio must reach overload_ratio too.
  t[0].state.load = {1, 1, 4, 0};
  EXPECT_EQ(ids(order_targets(t, "moe", key, opt)).front(), moe_node(1));
}

TEST(MoeRouting, ThePlanMostNodesFollowWins) {
  MeshRouterOptions opt;
  for (int k = 0; k < 20; ++k) {
    const std::string key = "session:" + std::to_string(k);
    // Plan "B" (2 shards, 3 nodes) against plan "A" (3 shards, 2 nodes): "B" decides the home
    // shard, although "A" sorts first.
    std::vector<RouteTarget> t = {shard(1, "A", 0, 3, {1000, 500, 500}), shard(2, "A", 1, 3, {500, 1000, 500}),
                                  shard(3, "B", 0, 2, {1000, 300}), shard(4, "B", 1, 2, {300, 1000}),
                                  shard(5, "B", 1, 2, {300, 1000})};
    const uint32_t home = home_shard(key, "B", 2);
    auto order = ids(order_targets(t, "moe", key, opt));
    std::vector<NodeId> want = home == 0 ? ids({3}) : by_weight(key, 4, 5);
    want = concat(want, home == 0 ? by_weight(key, 4, 5) : ids({3}));
    want = concat(want, by_weight(key, 1, 2));
    EXPECT_EQ(order, want) << key;

    // A tie (two nodes each): the smaller digest ("A") is followed.
    t.pop_back();
    const uint32_t home_a = home_shard(key, "A", 3);
    order = ids(order_targets(t, "moe", key, opt));
    ASSERT_EQ(order.size(), 4u);
    if (home_a < 2) {
      EXPECT_EQ(order[0], moe_node(static_cast<int>(home_a) + 1)) << key;
    } else {
      // Nobody holds A's home shard 2: the other shard of A with the most of it (both 500, by
      // weight), then B.
      EXPECT_EQ(std::vector<NodeId>(order.begin(), order.begin() + 2), by_weight(key, 1, 2)) << key;
    }
    EXPECT_EQ(std::set<NodeId>(order.begin() + 2, order.end()), std::set<NodeId>({moe_node(3), moe_node(4)})) << key;
  }
}

TEST(MoeRouting, SelfIsExcludedAndOnlyServersOfTheWholeModelCount) {
  MeshRouterOptions opt;
  const std::string key = "user:erin";
  const uint32_t home = home_shard(key, "P", 2), other = 1 - home;
  std::vector<RouteTarget> t = {shard(1, "P", home, 2), shard(2, "P", home, 2), shard(3, "P", other, 2, {600, 600}),
                                whole(4)};
  const auto full = ids(order_targets(t, "moe", key, opt));
  for (int self = 1; self <= 4; ++self) {
    auto want = full;
    std::erase(want, moe_node(self));
    EXPECT_EQ(ids(order_targets(t, "moe", key, opt, moe_node(self))), want) << "self " << self;
  }
  // Clients, layer stages, other models and duplicates are never candidates.
  RouteTarget client = shard(5, "P", home, 2);
  client.state.role = gossip::Role::client;
  RouteTarget stage = shard(6, "P", home, 2);
  stage.state.models[0].loaded = {0, 3};
  RouteTarget other_model = shard(7, "P", home, 2, {}, "another-moe");
  t.push_back(client);
  t.push_back(stage);
  t.push_back(other_model);
  t.push_back(t[0]);
  EXPECT_EQ(ids(order_targets(t, "moe", key, opt)), full);
  // An alias reaches the same shards.
  for (auto& x : t)
    if (x.state.models[0].name == "moe") x.state.models[0].aliases = {"moe-alias"};
  EXPECT_EQ(ids(order_targets(t, "moe-alias", key, opt)), full);
}

TEST(MoeRouting, DenseModelsKeepTheStickyScoreOrder) {
  MeshRouterOptions opt;
  // Node 1..4 serve the dense model "m" whole; node 3 also serves "moe" as an expert shard,
  // which must not change how "m" is routed.
  std::vector<RouteTarget> t = {whole(1, "m", 0, 0, 4, 90000), whole(2, "m", 0, 0, 4, 1000),
                                whole(3, "m", 0, 0, 4, 30000), whole(4, "m", 0, 0, 4, 60000)};
  gossip::ModelInfo moe = t[2].state.models[0];
  moe.name = "moe";
  moe.experts = {"P", 0, 2, {1000, 400}};
  t[2].state.models.push_back(moe);
  for (int k = 0; k < 20; ++k) {
    const std::string key = "user:" + std::to_string(k);
    auto order = order_targets(t, "m", key, opt);
    ASSERT_EQ(order.size(), 4u);
    // First: the highest rendezvous weight (sticky); the rest by score (here: round trip).
    int sticky = 1;
    for (int n = 2; n <= 4; ++n)
      if (routing::rendezvous_weight(key, moe_node(n)) > routing::rendezvous_weight(key, moe_node(sticky))) sticky = n;
    EXPECT_EQ(order[0].id, moe_node(sticky)) << key;
    for (size_t i = 2; i < order.size(); ++i) EXPECT_LE(order[i - 1].rtt->count(), order[i].rtt->count()) << key;
  }
  // And "moe" from the same list: only node 3 serves it.
  EXPECT_EQ(ids(order_targets(t, "moe", "k", opt)), ids({3}));
}

}  // namespace
}  // namespace llmesh::mesh
