// The placement planner: fewest stages that fit, proportional contiguous splits, determinism
// under permuted inputs, clear failures, manual pins, sticky re-planning with epochs, RTT-aware
// stage order, and hostile encoded plans refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include <fmt/format.h>

#include "gossip/codec.h"
#include "planner/planner.h"

namespace llmesh::mesh::planner {
namespace {

using nlohmann::json;
constexpr std::uint64_t GiB = 1ull << 30;

std::string id(int n) { return fmt::format("{:064x}", n); }

// 32 layers of 1 GiB, 0.5 GiB embeddings and head: 33 GiB in all, no KV.
ModelShape shape(int n_layer = 32) {
  ModelShape s;
  s.model = "test-model";
  s.n_layer = n_layer;
  s.layer_bytes.assign(static_cast<std::size_t>(n_layer), GiB);
  s.embed_bytes = GiB / 2;
  s.output_bytes = GiB / 2;
  return s;
}

PlanOptions exact() {
  PlanOptions o;
  o.memory_headroom_fraction = 0;
  o.memory_headroom_bytes = 0;
  return o;
}

NodeCapacity node(int n, std::uint64_t free_bytes, double gflops = 100) {
  return NodeCapacity{id(n), free_bytes, gflops, std::nullopt};
}

// Stages cover [0, n) contiguously, each within its node's memory.
void expect_covers(const Plan& p, std::uint32_t n, const std::vector<NodeCapacity>& nodes) {
  ASSERT_FALSE(p.stages.empty());
  std::uint32_t at = 0;
  for (const auto& s : p.stages) {
    EXPECT_EQ(s.layers.first, at);
    EXPECT_LT(s.layers.first, s.layers.last);
    at = s.layers.last;
    auto it = std::find_if(nodes.begin(), nodes.end(), [&](const NodeCapacity& c) { return c.id == s.node; });
    ASSERT_NE(it, nodes.end());
    EXPECT_LE(s.bytes, it->free_bytes);
  }
  EXPECT_EQ(at, n);
  EXPECT_NO_THROW(validate_plan(p));
}

std::uint32_t layers_of(const Plan& p, const std::string& node) {
  for (const auto& s : p.stages)
    if (s.node == node) return s.layers.last - s.layers.first;
  return 0;
}

TEST(Planner, OneNodeFitsOneStage) {
  std::vector<NodeCapacity> nodes = {node(1, 100 * GiB), node(2, 40 * GiB)};
  auto r = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(r) << r.error;
  ASSERT_EQ(r.plan->stages.size(), 1u);
  EXPECT_EQ(r.plan->stages[0].node, id(1));
  EXPECT_EQ(r.plan->stages[0].layers, (LayerRange{0, 32}));
  EXPECT_EQ(r.plan->stages[0].bytes, 33 * GiB);
  EXPECT_EQ(r.plan->epoch, 1u);
  EXPECT_EQ(r.plan->digest.size(), 64u);
  EXPECT_EQ(r.plan->digest, plan_digest(*r.plan));
}

TEST(Planner, TwoNodesOfSixtyPercentSplitInHalves) {
  const std::uint64_t cap = 33 * GiB * 6 / 10;
  std::vector<NodeCapacity> nodes = {node(1, cap), node(2, cap)};
  auto r = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(r) << r.error;
  ASSERT_EQ(r.plan->stages.size(), 2u);
  expect_covers(*r.plan, 32, nodes);
  EXPECT_EQ(layers_of(*r.plan, id(1)), 16u);
  EXPECT_EQ(layers_of(*r.plan, id(2)), 16u);
}

TEST(Planner, MemorySkewedSplitFollowsMemory) {
  // 24 GiB and 12 GiB, same speed: min(memory, speed share) = 1/2 and 1/3 -> 3/5 and 2/5.
  std::vector<NodeCapacity> nodes = {node(1, 12 * GiB), node(2, 24 * GiB)};
  auto r = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(r) << r.error;
  ASSERT_EQ(r.plan->stages.size(), 2u);
  expect_covers(*r.plan, 32, nodes);
  EXPECT_EQ(r.plan->stages[0].node, id(2));  // most memory first
  EXPECT_GT(layers_of(*r.plan, id(2)), layers_of(*r.plan, id(1)));
}

TEST(Planner, SpeedSkewedSplit) {
  // Equal memory (80% of the model each), speeds 300 and 100: shares min(1/2, 3/4) and
  // min(1/2, 1/4) -> 2/3 and 1/3 of the layers.
  const std::uint64_t cap = 33 * GiB * 8 / 10;
  std::vector<NodeCapacity> nodes = {node(1, cap, 100), node(2, cap, 300)};
  auto r = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(r) << r.error;
  ASSERT_EQ(r.plan->stages.size(), 2u);
  expect_covers(*r.plan, 32, nodes);
  EXPECT_EQ(r.plan->stages[0].node, id(2));  // equal memory: fastest first
  EXPECT_EQ(layers_of(*r.plan, id(2)), 21u);
  EXPECT_EQ(layers_of(*r.plan, id(1)), 11u);
}

TEST(Planner, PermutedInputsGiveTheSamePlanAndDigest) {
  std::vector<NodeCapacity> nodes = {node(1, 9 * GiB, 50), node(2, 8 * GiB, 200), node(3, 9 * GiB, 50),
                                     node(4, 7 * GiB, 120), node(5, 6 * GiB, 80)};
  std::vector<std::tuple<int, int, double>> links = {{1, 2, 5}, {2, 3, 1}, {3, 4, 9}, {1, 4, 2},
                                                     {4, 5, 3}, {1, 5, 30}, {2, 5, 7}};
  auto rtt_from = [&](std::vector<std::tuple<int, int, double>> l) {
    RttMatrix m;
    for (auto [a, b, ms] : l) m.set(id(a), id(b), ms);
    return m;
  };
  auto ref = plan(shape(), nodes, rtt_from(links), exact());
  ASSERT_TRUE(ref) << ref.error;
  EXPECT_GE(ref.plan->stages.size(), 4u);
  expect_covers(*ref.plan, 32, nodes);
  std::sort(nodes.begin(), nodes.end(), [](auto& a, auto& b) { return a.id < b.id; });
  std::mt19937 rng(7);
  int perms = 0;
  do {
    auto l = links;
    std::shuffle(l.begin(), l.end(), rng);
    for (auto& [a, b, ms] : l)
      if (rng() & 1) std::swap(a, b);
    auto r = plan(shape(), nodes, rtt_from(l), exact());
    ASSERT_TRUE(r) << r.error;
    EXPECT_EQ(*r.plan, *ref.plan);
    EXPECT_EQ(r.plan->digest, ref.plan->digest);
    ++perms;
  } while (std::next_permutation(nodes.begin(), nodes.end(),
                                 [](auto& a, auto& b) { return a.id < b.id; }));
  EXPECT_EQ(perms, 120);
}

TEST(Planner, InfeasibleSaysWhatItNeedsAndWhatTheMeshHas) {
  std::vector<NodeCapacity> nodes = {node(1, 10 * GiB), node(2, 10 * GiB)};
  auto r = plan(shape(), nodes, {}, exact());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.needed_bytes, 33 * GiB);
  EXPECT_EQ(r.available_bytes, 20 * GiB);
  EXPECT_NE(r.error.find("does not fit"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("33.0 GiB"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("20.0 GiB"), std::string::npos) << r.error;

  auto none = plan(shape(), std::vector<NodeCapacity>{}, {}, exact());
  ASSERT_FALSE(none);
  EXPECT_NE(none.error.find("does not fit"), std::string::npos) << none.error;

  // Enough memory in total, but max_stages caps how many nodes may share it.
  std::vector<NodeCapacity> many;
  for (int i = 1; i <= 8; ++i) many.push_back(node(i, 5 * GiB));
  PlanOptions o = exact();
  o.max_stages = 4;
  auto capped = plan(shape(), many, {}, o);
  ASSERT_FALSE(capped);
  EXPECT_NE(capped.error.find("40.0 GiB"), std::string::npos) << capped.error;
  o.max_stages = 8;
  ASSERT_TRUE(plan(shape(), many, {}, o));
}

TEST(Planner, MemoryAndKvHeadroom) {
  // 10 GiB free keeps 10% + 512 MiB: 8.5 GiB usable.
  PlanOptions o;
  std::vector<NodeCapacity> nodes = {node(1, 10 * GiB)};
  ASSERT_TRUE(plan(shape(7), nodes, {}, o));    // 8 GiB
  auto r = plan(shape(8), nodes, {}, o);         // 9 GiB
  ASSERT_FALSE(r);
  EXPECT_EQ(r.available_bytes, 10 * GiB - GiB - GiB / 2);
  // KV: 64 KiB per token per layer x 4096 tokens x 2 sessions = 512 MiB per layer.
  ModelShape s = shape(4);
  s.kv_bytes_per_token_per_layer = 64 * 1024;
  s.ctx_tokens = 4096;
  s.sessions = 2;
  auto kv = plan(s, nodes, {}, o);  // 5 GiB weights + 2 GiB KV
  ASSERT_TRUE(kv) << kv.error;
  EXPECT_EQ(kv.plan->stages[0].kv_bytes, 2 * GiB);
  EXPECT_EQ(kv.plan->stages[0].bytes, 7 * GiB);
  s.sessions = 4;  // 5 + 4 GiB: no longer fits
  EXPECT_FALSE(plan(s, nodes, {}, o));
}

TEST(Planner, PinnedRangesAreRespected) {
  std::vector<NodeCapacity> nodes = {node(1, 30 * GiB), node(2, 30 * GiB), node(3, 30 * GiB)};
  nodes[2].pinned = LayerRange{10, 20};
  auto r = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(r) << r.error;
  expect_covers(*r.plan, 32, nodes);
  ASSERT_EQ(r.plan->stages.size(), 3u);
  EXPECT_EQ(r.plan->stages[1].node, id(3));
  EXPECT_EQ(r.plan->stages[1].layers, (LayerRange{10, 20}));

  // A pin covering the whole model leaves the other nodes out.
  nodes[2].pinned = LayerRange{0, 32};
  auto whole = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(whole) << whole.error;
  ASSERT_EQ(whole.plan->stages.size(), 1u);
  EXPECT_EQ(whole.plan->stages[0].node, id(3));

  // A pin beyond the node's memory is the operator's call: kept, with a warning.
  nodes = {node(1, 30 * GiB), node(2, 5 * GiB)};
  nodes[1].pinned = LayerRange{0, 10};
  auto over = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(over) << over.error;
  EXPECT_EQ(over.plan->stages[0].node, id(2));
  ASSERT_FALSE(over.plan->warnings.empty());
  EXPECT_NE(over.plan->warnings[0].find(id(2).substr(0, 12)), std::string::npos);
}

TEST(Planner, BadPinsAreRefusedNamingTheNodes) {
  std::vector<NodeCapacity> nodes = {node(1, 30 * GiB), node(2, 30 * GiB), node(3, 30 * GiB)};
  nodes[0].pinned = LayerRange{0, 12};
  nodes[1].pinned = LayerRange{10, 20};
  auto r = plan(shape(), nodes, {}, exact());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error.find("overlap"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find(id(1).substr(0, 12)), std::string::npos) << r.error;
  EXPECT_NE(r.error.find(id(2).substr(0, 12)), std::string::npos) << r.error;

  nodes[1].pinned = LayerRange{20, 40};
  r = plan(shape(), nodes, {}, exact());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error.find("inside 0..32"), std::string::npos) << r.error;

  nodes[1].pinned = LayerRange{5, 5};
  EXPECT_FALSE(plan(shape(), nodes, {}, exact()));

  // A gap nobody can fill: named by the pinned nodes around it.
  nodes = {node(1, 30 * GiB), node(2, 30 * GiB)};
  nodes[0].pinned = LayerRange{0, 10};
  nodes[1].pinned = LayerRange{20, 32};
  r = plan(shape(), nodes, {}, exact());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error.find("layers 10..20"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find(id(1).substr(0, 12)), std::string::npos) << r.error;
  EXPECT_NE(r.error.find(id(2).substr(0, 12)), std::string::npos) << r.error;
}

TEST(Planner, BadInputsAreRefused) {
  std::vector<NodeCapacity> dup = {node(1, 40 * GiB), node(1, 40 * GiB)};
  EXPECT_NE(plan(shape(), dup, {}, exact()).error.find("twice"), std::string::npos);
  ModelShape s = shape();
  s.layer_bytes.pop_back();
  EXPECT_FALSE(plan(s, std::vector<NodeCapacity>{node(1, 40 * GiB)}, {}, exact()));
  s = shape();
  s.layer_bytes[3] = ~0ull;
  EXPECT_FALSE(plan(s, std::vector<NodeCapacity>{node(1, 40 * GiB)}, {}, exact()));
  std::vector<NodeCapacity> nan = {node(1, 40 * GiB, std::nan(""))};
  EXPECT_FALSE(plan(shape(), nan, {}, exact()));
}

TEST(Planner, SpreadWhenFewerStagesAreNotPreferred) {
  std::vector<NodeCapacity> nodes = {node(1, 40 * GiB), node(2, 40 * GiB), node(3, 40 * GiB)};
  PlanOptions o = exact();
  o.prefer_fewer_stages = false;
  auto r = plan(shape(), nodes, {}, o);
  ASSERT_TRUE(r) << r.error;
  EXPECT_EQ(r.plan->stages.size(), 3u);
  expect_covers(*r.plan, 32, nodes);
  o.max_stages = 2;
  EXPECT_EQ(plan(shape(), nodes, {}, o).plan->stages.size(), 2u);
}

TEST(Planner, RttOrderPicksLowLatencyNeighbours) {
  // Three equal nodes, each ~42% of the model: three stages. 1 is first (ties: node id); 1-3
  // and 3-2 are near, 1-2 far: the chain is 1, 3, 2.
  std::vector<NodeCapacity> nodes = {node(1, 14 * GiB), node(2, 14 * GiB), node(3, 14 * GiB)};
  auto plain = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(plain) << plain.error;
  ASSERT_EQ(plain.plan->stages.size(), 3u);
  EXPECT_EQ(plain.plan->stages[1].node, id(2));
  RttMatrix rtt;
  rtt.set(id(1), id(3), 1);
  rtt.set(id(3), id(2), 1.5);
  rtt.set(id(1), id(2), 100);
  auto near = plan(shape(), nodes, rtt, exact());
  ASSERT_TRUE(near) << near.error;
  ASSERT_EQ(near.plan->stages.size(), 3u);
  EXPECT_EQ(near.plan->stages[0].node, id(1));
  EXPECT_EQ(near.plan->stages[1].node, id(3));
  EXPECT_EQ(near.plan->stages[2].node, id(2));
  EXPECT_NE(near.plan->digest, plain.plan->digest);
  // The smaller measurement of a pair wins, whatever the order.
  RttMatrix m;
  m.set(id(1), id(2), 9);
  m.set(id(2), id(1), 4);
  m.set(id(1), id(2), 6);
  EXPECT_EQ(m.get(id(1), id(2)), 4.0);
  EXPECT_EQ(m.between(id(1), id(9), 50), 50.0);
}

TEST(Planner, RandomMeshesGiveValidDeterministicPlans) {
  // Random shapes and meshes: every plan covers the model within each node's memory, never uses
  // more than max_stages, and a shuffled input gives the same plan.
  std::mt19937 rng(3);
  int planned = 0;
  for (int iter = 0; iter < 300; ++iter) {
    ModelShape s = shape(1 + static_cast<int>(rng() % 120));
    for (auto& b : s.layer_bytes) b = (1 + rng() % 64) * (GiB / 64);
    s.embed_bytes = rng() % GiB;
    s.output_bytes = rng() % GiB;
    s.kv_bytes_per_token_per_layer = rng() % 4096;
    s.ctx_tokens = static_cast<int>(rng() % 8192);
    std::vector<NodeCapacity> nodes;
    const int n_nodes = static_cast<int>(rng() % 12);
    for (int i = 0; i < n_nodes; ++i)
      nodes.push_back(node(static_cast<int>(rng() % 1000) * 16 + i, (rng() % 48) * GiB / 2,
                           static_cast<double>(rng() % 4) * 50));
    PlanOptions o;
    o.max_stages = 1 + static_cast<int>(rng() % 8);
    o.prefer_fewer_stages = rng() % 4 != 0;
    RttMatrix rtt;
    for (int i = 0; i + 1 < n_nodes; ++i) rtt.set(nodes[i].id, nodes[i + 1].id, rng() % 100);
    auto r = plan(s, nodes, rtt, o);
    std::shuffle(nodes.begin(), nodes.end(), rng);
    auto again = plan(s, nodes, rtt, o);
    ASSERT_EQ(r.plan, again.plan);
    EXPECT_EQ(r.error, again.error);
    if (!r) {
      EXPECT_FALSE(r.error.empty());
      continue;
    }
    ++planned;
    EXPECT_LE(r.plan->stages.size(), static_cast<std::size_t>(o.max_stages));
    std::uint32_t at = 0;
    for (const auto& st : r.plan->stages) {
      EXPECT_EQ(st.layers.first, at);
      at = st.layers.last;
      auto it = std::find_if(nodes.begin(), nodes.end(), [&](auto& c) { return c.id == st.node; });
      ASSERT_NE(it, nodes.end());
      // Usable memory: free minus 10% minus 512 MiB.
      EXPECT_LE(st.bytes, it->free_bytes - it->free_bytes / 10 - (GiB / 2));
    }
    EXPECT_EQ(at, static_cast<std::uint32_t>(s.n_layer));
    EXPECT_EQ(decode_plan(encode_plan(*r.plan)), *r.plan);
  }
  EXPECT_GT(planned, 50);
}

TEST(Planner, LargeModelOnManyNodesIsFast) {
  ModelShape s = shape(20000);
  std::vector<NodeCapacity> nodes;
  for (int i = 0; i < 64; ++i) nodes.push_back(node(i + 1, (300 + 17 * (i % 7)) * GiB, 100 + i));
  PlanOptions o = exact();
  o.max_stages = 64;
  auto r = plan(s, nodes, {}, o);
  ASSERT_TRUE(r) << r.error;
  EXPECT_GE(r.plan->stages.size(), 50u);
  expect_covers(*r.plan, 20000, nodes);
}

TEST(Planner, CandidatesFromGossipMembers) {
  auto member = [](int n, gossip::MemberStatus st, gossip::Role role, bool has_state) {
    gossip::Member m;
    m.id = id(n);
    m.status = st;
    m.has_state = has_state;
    m.state.role = role;
    m.state.hardware.free_ram_bytes = static_cast<std::uint64_t>(n) * GiB;
    m.state.hardware.matmul_gflops = n == 5 ? std::nan("") : 10.0 * n;
    return m;
  };
  using S = gossip::MemberStatus;
  using R = gossip::Role;
  std::vector<gossip::Member> ms = {member(5, S::alive, R::server, true), member(2, S::alive, R::client, true),
                                    member(3, S::suspect, R::server, true), member(4, S::alive, R::server, false),
                                    member(1, S::alive, R::server, true), member(6, S::dead, R::server, true)};
  auto c = candidates_from(ms);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, id(1));
  EXPECT_EQ(c[0].free_bytes, GiB);
  EXPECT_EQ(c[0].gflops, 10.0);
  EXPECT_EQ(c[1].id, id(5));
  EXPECT_EQ(c[1].gflops, 0.0);  // NaN measurement: unknown
  EXPECT_TRUE(plan(shape(2), c, {}, exact()));
}

TEST(Replan, UnchangedMeshKeepsPlanAndEpoch) {
  const std::uint64_t cap = 33 * GiB * 6 / 10;
  std::vector<NodeCapacity> nodes = {node(1, cap), node(2, cap)};
  auto p1 = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(p1);
  auto same = replan(*p1.plan, shape(), nodes, {}, exact());
  ASSERT_TRUE(same) << same.error;
  EXPECT_EQ(*same.plan, *p1.plan);
  // A small node joins: nothing to gain, nothing moves, same epoch and digest.
  nodes.push_back(node(3, 4 * GiB));
  auto small = replan(*p1.plan, shape(), nodes, {}, exact());
  ASSERT_TRUE(small) << small.error;
  EXPECT_EQ(small.plan->epoch, 1u);
  EXPECT_EQ(small.plan->digest, p1.plan->digest);
  EXPECT_TRUE(diff(*p1.plan, *small.plan).empty());
}

TEST(Replan, JoinOfABiggerNodeMovesToFewerStages) {
  const std::uint64_t cap = 33 * GiB * 6 / 10;
  std::vector<NodeCapacity> nodes = {node(1, cap), node(2, cap)};
  auto p1 = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(p1);
  nodes.push_back(node(3, 64 * GiB));
  auto p2 = replan(*p1.plan, shape(), nodes, {}, exact());
  ASSERT_TRUE(p2) << p2.error;
  EXPECT_EQ(p2.plan->epoch, 2u);
  ASSERT_EQ(p2.plan->stages.size(), 1u);
  EXPECT_EQ(p2.plan->stages[0].node, id(3));
  EXPECT_NE(p2.plan->digest, p1.plan->digest);
  auto moves = diff(*p1.plan, *p2.plan);
  ASSERT_EQ(moves.size(), 3u);
  EXPECT_EQ(moves[0].node, id(1));
  EXPECT_TRUE(moves[0].fetch.empty());
  EXPECT_EQ(moves[0].drop, (std::vector<LayerRange>{p1.plan->stages[0].layers}));
  EXPECT_EQ(moves[2].node, id(3));
  EXPECT_EQ(moves[2].fetch, (std::vector<LayerRange>{{0, 32}}));
  EXPECT_TRUE(moves[2].drop.empty());
}

TEST(Replan, LeaveOfAMiddleStageMovesOnlyItsLayers) {
  // 1, 2, 3 hold ~a third each; 4 (smaller) waits. 2 (the middle stage) leaves: 4 takes exactly
  // its layers, 1 and 3 keep theirs.
  std::vector<NodeCapacity> nodes = {node(1, 14 * GiB), node(2, 14 * GiB), node(3, 14 * GiB),
                                     node(4, 12 * GiB)};
  auto p1 = plan(shape(), nodes, {}, exact());
  ASSERT_TRUE(p1) << p1.error;
  ASSERT_EQ(p1.plan->stages.size(), 3u);
  ASSERT_EQ(p1.plan->stages[1].node, id(2));
  const LayerRange middle = p1.plan->stages[1].layers;
  nodes.erase(nodes.begin() + 1);
  auto p2 = replan(*p1.plan, shape(), nodes, {}, exact());
  ASSERT_TRUE(p2) << p2.error;
  EXPECT_EQ(p2.plan->epoch, 2u);
  expect_covers(*p2.plan, 32, nodes);
  ASSERT_EQ(p2.plan->stages.size(), 3u);
  EXPECT_EQ(p2.plan->stages[0], p1.plan->stages[0]);
  EXPECT_EQ(p2.plan->stages[2], p1.plan->stages[2]);
  EXPECT_EQ(p2.plan->stages[1].node, id(4));
  EXPECT_EQ(p2.plan->stages[1].layers, middle);
  auto moves = diff(*p1.plan, *p2.plan);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[0].node, id(2));
  EXPECT_EQ(moves[0].drop, (std::vector<LayerRange>{middle}));
  EXPECT_EQ(moves[1].node, id(4));
  EXPECT_EQ(moves[1].fetch, (std::vector<LayerRange>{middle}));

  // Without a spare node the rest cannot hold the model: a clear failure.
  nodes.pop_back();
  auto fail = replan(*p1.plan, shape(), nodes, {}, exact());
  ASSERT_FALSE(fail);
  EXPECT_NE(fail.error.find("does not fit"), std::string::npos) << fail.error;
  EXPECT_NE(fail.error.find("28.0 GiB"), std::string::npos) << fail.error;
}

TEST(Replan, LeaveReshufflesWhenTheRestCanHoldIt) {
  // Middle stage leaves, no spare: the two others are big enough for a fresh two-stage split.
  std::vector<NodeCapacity> nodes = {node(1, 20 * GiB), node(2, 20 * GiB), node(3, 20 * GiB)};
  PlanOptions o = exact();
  o.prefer_fewer_stages = false;
  auto p1 = plan(shape(), nodes, {}, o);
  ASSERT_TRUE(p1) << p1.error;
  ASSERT_EQ(p1.plan->stages.size(), 3u);
  const std::string mid = p1.plan->stages[1].node;
  nodes.erase(std::find_if(nodes.begin(), nodes.end(), [&](auto& c) { return c.id == mid; }));
  auto p2 = replan(*p1.plan, shape(), nodes, {}, o);
  ASSERT_TRUE(p2) << p2.error;
  EXPECT_EQ(p2.plan->epoch, 2u);
  EXPECT_EQ(p2.plan->stages.size(), 2u);
  expect_covers(*p2.plan, 32, nodes);
}

TEST(Replan, MalformedCurrentPlanStillGivesAValidPlan) {
  std::vector<NodeCapacity> nodes = {node(1, 20 * GiB), node(2, 20 * GiB), node(3, 20 * GiB)};
  Plan bad;
  bad.epoch = 4;
  bad.model = "test-model";
  bad.n_layer = 32;
  bad.stages = {{id(1), {0, 20}, 0, 0}, {id(2), {10, 25}, 0, 0}, {id(3), {30, 99}, 0, 0}};
  auto r = replan(bad, shape(), nodes, {}, exact());
  ASSERT_TRUE(r) << r.error;
  EXPECT_EQ(r.plan->epoch, 5u);
  expect_covers(*r.plan, 32, nodes);
}

TEST(Replan, DiffOfPartialOverlap) {
  Plan a, b;
  a.model = b.model = "m";
  a.n_layer = b.n_layer = 10;
  a.stages = {{id(1), {0, 6}, 0, 0}, {id(2), {6, 10}, 0, 0}};
  b.stages = {{id(1), {0, 4}, 0, 0}, {id(2), {4, 10}, 0, 0}};
  auto m = diff(a, b);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].drop, (std::vector<LayerRange>{{4, 6}}));
  EXPECT_TRUE(m[0].fetch.empty());
  EXPECT_EQ(m[1].fetch, (std::vector<LayerRange>{{4, 6}}));
  EXPECT_TRUE(m[1].drop.empty());
}

// ---- wire form ----

Plan sample() {
  std::vector<NodeCapacity> nodes = {node(1, 14 * GiB), node(2, 14 * GiB), node(3, 14 * GiB)};
  return *plan(shape(), nodes, {}, exact(), 7).plan;
}

std::vector<std::uint8_t> reencode(const std::function<void(json&)>& edit) {
  json j = json::from_msgpack(encode_plan(sample()));
  edit(j);
  return json::to_msgpack(j);
}

TEST(PlanWire, RoundTripAndJson) {
  Plan p = sample();
  p.warnings = {"a warning"};
  auto bytes = encode_plan(p);
  EXPECT_EQ(decode_plan(bytes), p);
  EXPECT_LT(bytes.size(), 512u);
  json j = to_json(p);
  EXPECT_EQ(j["epoch"], 7);
  EXPECT_EQ(j["model"], "test-model");
  EXPECT_EQ(j["n_layer"], 32);
  ASSERT_EQ(j["stages"].size(), 3u);
  EXPECT_EQ(j["stages"][0]["node"], id(1));
  EXPECT_EQ(j["stages"][0]["first"], 0);
  EXPECT_EQ(j["stages"][2]["last"], 32);
  EXPECT_EQ(j["digest"], p.digest);
}

TEST(PlanWire, HostilePlansAreRefused) {
  auto refused = [](const std::vector<std::uint8_t>& b) {
    EXPECT_THROW(decode_plan(b), PlanError);
  };
  // Digest that does not match (a node could lie about its plan).
  refused(reencode([](json& j) { j["d"] = std::string(64, '0'); }));
  refused(reencode([](json& j) { j["e"] = 8; }));  // epoch changed, digest not
  // Gap, overlap, out of range, empty, duplicate node.
  refused(reencode([](json& j) { j["s"][1]["f"] = j["s"][1]["f"].get<int>() + 1; }));
  refused(reencode([](json& j) { j["s"][1]["f"] = j["s"][1]["f"].get<int>() - 1; }));
  refused(reencode([](json& j) { j["s"][2]["l"] = 33; }));
  refused(reencode([](json& j) { j["s"] = json::array(); }));
  refused(reencode([](json& j) { j["s"][1]["id"] = j["s"][0]["id"]; }));
  refused(reencode([](json& j) { j["s"][0]["l"] = 0; }));
  // Wrong types and missing fields.
  refused(reencode([](json& j) { j["n"] = "32"; }));
  refused(reencode([](json& j) { j["n"] = -1; }));
  refused(reencode([](json& j) { j["n"] = 1u << 30; }));
  refused(reencode([](json& j) { j.erase("m"); }));
  refused(reencode([](json& j) { j["v"] = 2; }));
  refused(reencode([](json& j) { j["s"][0] = 5; }));
  refused(reencode([](json& j) { j["s"][0]["id"] = json::binary({1, 2, 3}); }));
  refused(reencode([](json& j) { j["w"] = json::array({1}); }));
  refused(reencode([](json& j) { j["m"] = std::string(300, 'x'); }));
  refused(reencode([](json& j) { j["s"][0]["k"] = j["s"][0]["b"].get<std::uint64_t>() + 1; }));
  // Too many stages and warnings; deep nesting; not a map.
  refused(reencode([](json& j) {
    for (int i = 0; i < 1100; ++i) j["s"].push_back(j["s"][0]);
  }));
  refused(reencode([](json& j) { j["w"] = json::array(); for (int i = 0; i < 40; ++i) j["w"].push_back("w"); }));
  refused(reencode([](json& j) {
    json deep = 1;
    for (int i = 0; i < 50; ++i) deep = json::array({deep});
    j["x"] = deep;
  }));
  refused(json::to_msgpack(json::array({1, 2})));
  refused({});
  // Truncations of a valid plan, and random bytes.
  auto good = encode_plan(sample());
  for (std::size_t n = 0; n < good.size(); ++n)
    refused(std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)));
  std::mt19937 rng(11);
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::uint8_t> junk(rng() % 200);
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    refused(junk);
  }
  // Single-byte flips of a valid plan never decode to something invalid.
  for (std::size_t i = 0; i < good.size(); ++i) {
    auto b = good;
    b[i] ^= 0x5a;
    try {
      Plan p = decode_plan(b);
      EXPECT_NO_THROW(validate_plan(p));
    } catch (const PlanError&) {
    }
  }
}

}  // namespace
}  // namespace llmesh::mesh::planner
