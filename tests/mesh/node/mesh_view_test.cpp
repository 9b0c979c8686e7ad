// The mesh view (links, placement, totals) and its Prometheus text, from status JSON.
#include "node/mesh_view.h"

#include <gtest/gtest.h>

#include <set>

#include "gossip/node_state.h"

namespace llmesh::mesh {
namespace {

using nlohmann::json;

const std::string kA(64, 'a'), kB(64, 'b'), kC(64, 'c'), kD(64, 'd');

json member(const std::string& id, const char* status, gossip::NodeState st, bool self = false) {
  return {{"id", id}, {"status", status}, {"self", self}, {"state", gossip::to_json(st)}};
}

gossip::NodeState server(uint32_t first, uint32_t last, bool entry, double tps, uint64_t requests) {
  gossip::NodeState s;
  gossip::ModelInfo m;
  m.name = "stories";
  m.total_layers = 6;
  m.loaded = {first, last};
  m.entry = entry;
  s.models = {m};
  s.load = {1, 2, 4, tps, requests, requests * 10};
  return s;
}

json three_nodes() {
  auto a = server(0, 2, true, 10, 5);
  a.links = {{kB.substr(0, 16), 2000}};  // a measured a-b as 2 ms
  auto b = server(2, 4, false, 0, 0);
  b.links = {{kA.substr(0, 16), 4000}, {kC.substr(0, 16), 1000}, {std::string(16, 'e'), 9}};  // e: unknown
  auto c = gossip::NodeState{};
  c.role = gossip::Role::client;
  json s = {{"members", json::array({member(kA, "alive", a, /*self=*/true), member(kB, "alive", b),
                                     member(kC, "suspect", c), member(kD, "dead", server(4, 6, false, 99, 99))})},
            {"gossip", {{"bytes_sent", 100}, {"bytes_received", 200}, {"decode_errors", 0}}}};
  s["members"][2]["rtt_ms"] = 0.5;  // this node (a) measured c
  return s;
}

TEST(MeshView, LinksAreMeanOfBothSidesAmongLiveMembers) {
  json s = three_nodes();
  add_mesh_view(s);
  ASSERT_EQ(s["links"].size(), 3u) << s["links"].dump();
  EXPECT_EQ(s["links"][0], json({{"from", kA}, {"to", kB}, {"rtt_ms", 3.0}}));  // (2 + 4) / 2
  EXPECT_EQ(s["links"][1], json({{"from", kA}, {"to", kC}, {"rtt_ms", 0.5}}));  // this node's own ping
  EXPECT_EQ(s["links"][2], json({{"from", kB}, {"to", kC}, {"rtt_ms", 1.0}}));  // gossiped by b
  // Without this node's measurement of c, a-c is unknown; e (not a member) never appears.
  json s2 = three_nodes();
  s2["members"][2].erase("rtt_ms");
  add_mesh_view(s2);
  ASSERT_EQ(s2["links"].size(), 2u);
  EXPECT_EQ(s2["links"][1], json({{"from", kB}, {"to", kC}, {"rtt_ms", 1.0}}));
}

TEST(MeshView, PlacementShowsRangesGroupsAndMissingLayers) {
  json s = three_nodes();
  add_mesh_view(s);
  ASSERT_EQ(s["placement"].size(), 1u);
  const json& p = s["placement"][0];
  EXPECT_EQ(p["model"], "stories");
  EXPECT_EQ(p["total_layers"], 6);
  ASSERT_EQ(p["ranges"].size(), 2u);  // d is dead: its [4, 6) no longer counts
  EXPECT_EQ(p["ranges"][0], json({{"node", kA}, {"first", 0}, {"last", 2}, {"entry", true}}));
  EXPECT_EQ(p["ranges"][1], json({{"node", kB}, {"first", 2}, {"last", 4}, {"entry", false}}));
  EXPECT_EQ(p["missing"], json::parse("[[4, 6]]"));
  EXPECT_TRUE(p["expert_groups"].empty());

  // Expert shards are listed per node.
  gossip::NodeState e = server(0, 6, true, 0, 0);
  e.models[0].experts = {"plan1", 1, 2, {0, 1000}};
  json s2 = {{"members", json::array({member(kA, "alive", e, true)})}};
  add_mesh_view(s2);
  EXPECT_EQ(s2["placement"][0]["expert_groups"][0],
            json({{"node", kA}, {"index", 1}, {"count", 2}, {"plan", "plan1"}}));
  EXPECT_TRUE(s2["placement"][0]["missing"].empty());
}

TEST(MeshView, TotalsCountLiveMembersOnly) {
  json s = three_nodes();
  add_mesh_view(s);
  const json& t = s["totals"];
  EXPECT_EQ(t["nodes"], 3);
  EXPECT_EQ(t["servers"], 2);
  EXPECT_EQ(t["clients"], 1);
  EXPECT_DOUBLE_EQ(t["tokens_per_second"].get<double>(), 10.0);
  EXPECT_EQ(t["requests_total"], 5);
  EXPECT_EQ(t["generated_tokens_total"], 50);
  EXPECT_EQ(t["parallel_slots"], 8);  // the dead member's 4 are not counted
}

TEST(MeshView, OddRecordsNeverThrow) {
  const std::string a = "\"" + kA + "\"";
  const std::vector<std::string> odd = {
      R"("x")",
      R"([1, "y", {}, {"id": 5, "status": "alive"}])",
      "[{\"id\": " + a + R"(, "status": "alive", "state": {"models": 7, "load": "busy", "links": [{"peer": 3}]}}])",
      "[{\"id\": " + a + R"(, "status": "alive", "state": {"models": [{"name": "m", "layers_loaded": [9, 2],
          "total_layers": -4, "expert_shard": "x"}], "links": "no"}, "rtt_ms": "far"}])",
  };
  for (const std::string& text : odd) {
    json members = json::parse(text);
    json s = {{"members", members}};
    EXPECT_NO_THROW(add_mesh_view(s)) << members.dump();
    EXPECT_NO_THROW(mesh_metrics_text(s)) << members.dump();
  }
  json empty = json::object();
  EXPECT_NO_THROW(add_mesh_view(empty));
  EXPECT_EQ(empty["totals"]["nodes"], 0);
}

TEST(MeshView, MetricsText) {
  json s = three_nodes();
  s["members"][1]["state"]["models"][0]["name"] = "evil\"\n\\name";  // names come from the network
  add_mesh_view(s);
  std::string m = mesh_metrics_text(s);
  EXPECT_NE(m.find("llmesh_mesh_members{status=\"alive\"} 2\n"), std::string::npos) << m;
  EXPECT_NE(m.find("llmesh_mesh_members{status=\"dead\"} 1\n"), std::string::npos);
  EXPECT_NE(m.find("llmesh_node_tokens_per_second{node=\"aaaaaaaaaaaa\"} 10\n"), std::string::npos);
  EXPECT_NE(m.find("llmesh_node_requests_total{node=\"aaaaaaaaaaaa\"} 5\n"), std::string::npos);
  EXPECT_NE(m.find("llmesh_node_rtt_seconds{node=\"cccccccccccc\"} 0.0005\n"), std::string::npos);
  EXPECT_NE(m.find("llmesh_node_model_layers{node=\"aaaaaaaaaaaa\",model=\"stories\",first=\"0\",last=\"2\"} 2\n"),
            std::string::npos);
  EXPECT_NE(m.find("model=\"evil\\\"\\n\\\\name\""), std::string::npos);
  EXPECT_NE(m.find("llmesh_link_rtt_seconds{from=\"aaaaaaaaaaaa\",to=\"bbbbbbbbbbbb\"} 0.003\n"), std::string::npos);
  EXPECT_NE(m.find("llmesh_model_missing_layers{model=\"stories\"} 4\n"), std::string::npos);  // b's model renamed
  EXPECT_EQ(m.find("dddddddddddd"), std::string::npos);  // the dead member has no series
  // Every family is declared once, and its samples follow its declaration.
  std::string current;
  std::set<std::string> declared;
  size_t pos = 0;
  while (pos < m.size()) {
    size_t end = m.find('\n', pos);
    std::string line = m.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("# TYPE ", 0) == 0) {
      current = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(declared.insert(current).second) << current;
    } else if (line[0] != '#') {
      EXPECT_EQ(line.rfind(current, 0), 0u) << line << " under " << current;
    }
  }
}

}  // namespace
}  // namespace llmesh::mesh
