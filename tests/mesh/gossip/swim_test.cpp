// SWIM membership over a simulated network with virtual time: joins, convergence, state spread,
// kill -9 detection, graceful leave, refutation under loss and latency, partitions, restarts and
// bandwidth. Lines starting with [figure] are the measured numbers quoted in docs/gossip.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "sim_network.h"

namespace llmesh::gossip {
namespace {

using namespace sim;
using std::chrono::seconds;

// A WAN-like mesh: 50-150 ms one-way latency (jittered per message), 5% loss each way.
const LinkProfile kWan{milliseconds(50), milliseconds(150), 0.05};

void figure(const char* name, double value, const char* unit) {
  std::printf("[figure] %s: %.3f %s\n", name, value, unit);
  ::testing::Test::RecordProperty(name, std::to_string(value));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int count_events(const SimNetwork& net, MemberEvent::Kind kind) {
  return static_cast<int>(std::count_if(net.events.begin(), net.events.end(),
                                        [&](const auto& e) { return e.second.kind == kind; }));
}

TEST(Swim, TwoNodesJoin) {
  SimNetwork net(1);
  auto a = node_id(0), b = node_id(1);
  net.add(a, sample_state(0));
  net.add(b, sample_state(1));
  net.node(a).join({}, net.now());
  net.node(b).join({a}, net.now());
  auto t = net.run_until([&] { return net.converged(); }, seconds(5));
  ASSERT_TRUE(t);
  EXPECT_LT(*t, milliseconds(100));
  EXPECT_EQ(net.node(a).find(b)->state, net.node(b).self_state());
  EXPECT_EQ(net.node(b).find(a)->state, net.node(a).self_state());
  net.run_for(seconds(30));
  EXPECT_EQ(count_events(net, MemberEvent::Kind::suspect), 0);
  EXPECT_TRUE(net.converged());
}

TEST(Swim, JoinRetriesUntilSeedAnswers) {
  SimNetwork net(2);
  auto a = node_id(0), b = node_id(1);
  net.add(a, sample_state(0));
  net.add(b, sample_state(1));
  net.kill(a);
  net.node(b).join({a}, net.now());
  net.run_for(seconds(3));
  EXPECT_EQ(net.node(b).alive_count(), 1u);
  net.add(a, sample_state(0)).join({}, net.now());
  auto t = net.run_until([&] { return net.converged(); }, seconds(5));
  ASSERT_TRUE(t);
  EXPECT_LE(*t, milliseconds(1100));
}

TEST(Swim, TwentyNodesConvergeFromOneSeed) {
  std::vector<double> lan, wan;
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    for (bool w : {false, true}) {
      SimNetwork net(seed, w ? kWan : LinkProfile{});
      start_mesh(net, 20);
      auto t = net.run_until([&] { return net.converged(); }, seconds(30));
      ASSERT_TRUE(t) << "seed " << seed << (w ? " wan" : " lan");
      (w ? wan : lan).push_back(seconds_of(*t));
    }
  }
  figure("converge_20_lan_median_s", median(lan), "s");
  figure("converge_20_lan_max_s", *std::max_element(lan.begin(), lan.end()), "s");
  figure("converge_20_wan_median_s", median(wan), "s");
  figure("converge_20_wan_max_s", *std::max_element(wan.begin(), wan.end()), "s");
  EXPECT_LT(*std::max_element(lan.begin(), lan.end()), 5.0);
}

TEST(Swim, StateUpdatesReachEveryone) {
  SimNetwork net(3, kWan);
  auto ids = start_mesh(net, 20);
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(30)));
  NodeState s = net.node(ids[7]).self_state();
  s.load.active_requests = 9;
  s.models.push_back({"new-model", "sha256:ff", 80, {40, 80}, {{0, 80}}});
  net.node(ids[7]).update_self(s, net.now());
  std::uint64_t v = net.node(ids[7]).self_state().state_version;
  auto t = net.run_until(
      [&] {
        for (const auto& id : ids) {
          if (id == ids[7]) continue;
          const Member* m = net.node(id).find(ids[7]);
          if (!m || m->state.state_version != v) return false;
        }
        return true;
      },
      seconds(10));
  ASSERT_TRUE(t);
  figure("state_update_spread_20_wan_s", seconds_of(*t), "s");
  EXPECT_EQ(net.node(ids[0]).find(ids[7])->state.models.back().name, "new-model");
  EXPECT_LT(*t, seconds(3));
}

// kill -9 of one node in a converged 20-node mesh: how long until every node marks it dead?
std::vector<double> detection_times(LinkProfile profile, int runs) {
  std::vector<double> out;
  for (int seed = 1; seed <= runs; ++seed) {
    SimNetwork net(static_cast<std::uint64_t>(seed) * 7919, profile);
    auto ids = start_mesh(net, 20);
    EXPECT_TRUE(net.run_until([&] { return net.converged(); }, seconds(30)));
    net.run_for(seconds(5) + milliseconds(37 * seed));
    MemberId victim = ids[1 + seed % 19];
    net.kill(victim);
    auto t = net.run_until([&] { return net.all_see(victim, MemberStatus::dead); }, seconds(30));
    EXPECT_TRUE(t) << "seed " << seed;
    if (t) out.push_back(seconds_of(*t));
    // Nobody else was declared dead on the way.
    for (const auto& [who, e] : net.events) {
      if (e.kind == MemberEvent::Kind::dead) {
        EXPECT_EQ(e.id, victim);
      }
    }
  }
  return out;
}

TEST(Swim, KillDetectedByEveryNode) {
  auto lan = detection_times({}, 10);
  auto wan = detection_times(kWan, 10);
  ASSERT_EQ(lan.size(), 10u);
  ASSERT_EQ(wan.size(), 10u);
  figure("kill_detect_all_20_lan_median_s", median(lan), "s");
  figure("kill_detect_all_20_lan_max_s", *std::max_element(lan.begin(), lan.end()), "s");
  figure("kill_detect_all_20_wan_median_s", median(wan), "s");
  figure("kill_detect_all_20_wan_max_s", *std::max_element(wan.begin(), wan.end()), "s");
  EXPECT_LT(median(lan), 4.0);
  EXPECT_LT(*std::max_element(lan.begin(), lan.end()), 5.0);
  EXPECT_LT(median(wan), 4.0);
  EXPECT_LT(*std::max_element(wan.begin(), wan.end()), 5.5);
}

TEST(Swim, GracefulLeaveSeenQuickly) {
  SimNetwork net(5, kWan);
  auto ids = start_mesh(net, 20);
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(30)));
  MemberId leaver = ids[4];
  net.node(leaver).leave(net.now());
  auto done = net.run_until([&] { return net.node(leaver).leave_done(); }, seconds(5));
  ASSERT_TRUE(done);
  net.stop(leaver);
  auto t = net.run_until([&] { return net.all_see(leaver, MemberStatus::left); }, seconds(10));
  ASSERT_TRUE(t);
  figure("leave_seen_by_all_20_wan_s", seconds_of(*done + *t), "s");
  EXPECT_LT(*done + *t, seconds(2));
  // Left, not dead: nobody suspects or declares it.
  net.run_for(seconds(20));
  for (const auto& [who, e] : net.events) {
    EXPECT_NE(e.kind, MemberEvent::Kind::dead);
    if (e.id == leaver) {
      EXPECT_NE(e.kind, MemberEvent::Kind::suspect);
    }
  }
}

TEST(Swim, SuspectedNodeRefutes) {
  SimNetwork net(6);
  auto ids = start_mesh(net, 8);
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(10)));
  MemberId x = ids[3];
  // X's network stalls long enough for probes of it to fail, then comes back.
  net.isolate(x, true);
  ASSERT_TRUE(net.run_until(
      [&] {
        for (const auto& [who, e] : net.events)
          if (e.kind == MemberEvent::Kind::suspect && e.id == x) return true;
        return false;
      },
      seconds(20)));
  net.isolate(x, false);
  auto t = net.run_until([&] { return net.all_see(x, MemberStatus::alive); }, seconds(10));
  ASSERT_TRUE(t);
  EXPECT_GE(net.node(x).incarnation(), 1u);
  EXPECT_GE(net.node(x).stats().refutations, 1u);
  EXPECT_EQ(count_events(net, MemberEvent::Kind::dead), 0);
  EXPECT_GE(count_events(net, MemberEvent::Kind::alive), 1);
}

TEST(Swim, NoFalseDeathsUnderLossAndLatency) {
  int false_deaths = 0, suspicions = 0;
  std::uint64_t refutations = 0;
  for (std::uint64_t seed : {11, 12, 13}) {
    SimNetwork net(seed, kWan);
    auto ids = start_mesh(net, 20);
    ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(30)));
    net.run_for(std::chrono::minutes(5));
    false_deaths += count_events(net, MemberEvent::Kind::dead);
    suspicions += count_events(net, MemberEvent::Kind::suspect);
    for (const auto& id : ids) refutations += net.node(id).stats().refutations;
    EXPECT_TRUE(net.converged());
  }
  figure("false_deaths_20_wan_15min", false_deaths, "deaths");
  figure("suspicions_20_wan_15min", suspicions, "suspect events");
  figure("refutations_20_wan_15min", static_cast<double>(refutations), "refutations");
  EXPECT_EQ(false_deaths, 0);
}

TEST(Swim, PartitionThenHeal) {
  SimNetwork net(8, LinkProfile{milliseconds(5), milliseconds(20), 0.01});
  auto ids = start_mesh(net, 20);
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(30)));
  std::set<MemberId> a(ids.begin(), ids.begin() + 10), b(ids.begin() + 10, ids.end());
  net.partition(a, b);
  // Each side declares the other dead.
  ASSERT_TRUE(net.run_until(
      [&] {
        for (const auto& x : a)
          for (const auto& y : b)
            if (net.node(x).find(y)->status != MemberStatus::dead ||
                net.node(y).find(x)->status != MemberStatus::dead)
              return false;
        return true;
      },
      seconds(30)));
  net.run_for(seconds(10));
  net.heal();
  auto t = net.run_until([&] { return net.converged(); }, seconds(60));
  ASSERT_TRUE(t);
  figure("partition_heal_20_s", seconds_of(*t), "s");
  EXPECT_LT(*t, seconds(25));
}

TEST(Swim, RestartedNodeRejoinsWithHigherIncarnation) {
  SimNetwork net(9, kWan);
  auto ids = start_mesh(net, 10);
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(30)));
  MemberId x = ids[5];
  std::uint64_t old_inc = net.node(ids[0]).find(x)->incarnation;
  net.kill(x);
  ASSERT_TRUE(net.run_until([&] { return net.all_see(x, MemberStatus::dead); }, seconds(30)));
  // Same identity, fresh process: incarnation and state version start over.
  NodeState fresh = sample_state(5);
  fresh.api_address = "10.0.0.55:9090";
  net.add(x, fresh).join({ids[0]}, net.now());
  auto t = net.run_until([&] { return net.converged(); }, seconds(10));
  ASSERT_TRUE(t);
  figure("restart_rejoin_10_wan_s", seconds_of(*t), "s");
  for (const auto& id : ids) {
    if (id == x) continue;
    const Member* m = net.node(id).find(x);
    EXPECT_GT(m->incarnation, old_inc);
    EXPECT_EQ(m->state.api_address, "10.0.0.55:9090");
  }
  // A restart faster than detection: the others still think x is alive at a higher incarnation.
  MemberId y = ids[6];
  net.kill(y);
  net.add(y, sample_state(6)).join({ids[0]}, net.now());
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(10)));
  net.run_for(seconds(10));
  EXPECT_TRUE(net.all_see(y, MemberStatus::alive));
}

TEST(Swim, DeadMembersAreReaped) {
  SwimConfig cfg;
  cfg.dead_reap_after = seconds(20);
  SimNetwork net(10);
  auto ids = start_mesh(net, 5, cfg);
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(10)));
  net.kill(ids[2]);
  ASSERT_TRUE(net.run_until([&] { return net.all_see(ids[2], MemberStatus::dead); }, seconds(30)));
  net.run_for(seconds(25));
  for (const auto& id : ids) {
    if (id != ids[2]) {
      EXPECT_EQ(net.node(id).find(ids[2]), nullptr);
    }
  }
  EXPECT_EQ(count_events(net, MemberEvent::Kind::reaped), 4);
}

TEST(Swim, SteadyStateBandwidth) {
  SimNetwork net(12, kWan);
  auto ids = start_mesh(net, 20);
  ASSERT_TRUE(net.run_until([&] { return net.converged(); }, seconds(30)));
  net.run_for(seconds(30));
  std::vector<GossipStats> before;
  for (const auto& id : ids) before.push_back(net.node(id).stats());
  const double window = 120;
  net.run_for(seconds(120));
  double sent = 0;
  double by_kind[kMsgKinds] = {};
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto& s = net.node(ids[i]).stats();
    sent += static_cast<double>(s.bytes_sent() - before[i].bytes_sent());
    for (std::size_t k = 1; k < kMsgKinds; ++k)
      by_kind[k] += static_cast<double>(s.by_kind[k].bytes_sent - before[i].by_kind[k].bytes_sent);
  }
  double per_node = sent / window / static_cast<double>(ids.size());
  figure("gossip_bytes_per_s_per_node_20", per_node, "B/s sent");
  for (std::size_t k = 1; k < kMsgKinds; ++k)
    std::printf("[figure]   %-10s %8.1f B/s per node\n", msg_kind_name(static_cast<MsgKind>(k)),
                by_kind[k] / window / static_cast<double>(ids.size()));
  EXPECT_LT(per_node, 1000.0);
}

}  // namespace
}  // namespace llmesh::gossip
