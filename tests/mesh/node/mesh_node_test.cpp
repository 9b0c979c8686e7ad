// Mesh nodes in one process on 127.0.0.1: joining with an invite, admission refusals with
// their reason codes on both sides, state spreading, secret rotation, graceful leave, and a
// restart that rejoins through the saved peers with the same identity.
#include "node/mesh_node.h"

#include <gtest/gtest.h>

#include "eventually.h"

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

using namespace llmesh;
using namespace llmesh::mesh;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct LogSink {
  std::mutex m;
  std::vector<std::string> lines;
  void add(const std::string& l) {
    if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "%s\n", l.c_str());
    std::lock_guard lk(m);
    lines.push_back(l);
  }
  bool has(const std::string& needle) {
    std::lock_guard lk(m);
    for (auto& l : lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
};

fs::path temp_home(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("mesh_node_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

struct TestNode {
  fs::path home;
  std::shared_ptr<LogSink> logs = std::make_shared<LogSink>();
  std::unique_ptr<MeshNode> node;

  TestNode(const std::string& name, invite::MeshSecret secret, gossip::Role role = gossip::Role::server)
      : home(temp_home(name)) {
    start(secret, role);
  }
  void start(invite::MeshSecret secret, gossip::Role role = gossip::Role::server) {
    MeshNodeOptions o;
    o.listen_host = "127.0.0.1";
    o.listen_port = 0;
    o.secret_path = home / "mesh.json";
    o.peers_path = home / "peers.json";
    o.transport.handshake_timeout = 2000ms;
    o.log = [l = logs](const std::string& line) { l->add(line); };
    gossip::NodeState s;
    s.role = role;
    s.software_version = "test";
    invite::save_mesh_secret(secret, o.secret_path);
    node = std::make_unique<MeshNode>(NodeIdentity::load_or_create(home), secret, o, s);
    node->start();
  }
  size_t alive() {
    size_t n = 0;
    for (auto& v : node->members())
      if (v.member.status == gossip::MemberStatus::alive) ++n;
    return n;
  }
  std::optional<gossip::MemberStatus> status_of(const NodeId& id) {
    for (auto& v : node->members())
      if (v.member.id == id.hex()) return v.member.status;
    return std::nullopt;
  }
};

using test::eventually;

std::vector<invite::InviteNode> seeds_of(const std::string& token) {
  auto d = invite::decode_invite(token);
  EXPECT_TRUE(d.ok()) << d.error;
  return d.ok() ? d.invite->nodes : std::vector<invite::InviteNode>{};
}

}  // namespace

TEST(MeshNode, JoinWithAnInviteAndSpreadState) {
  auto secret = invite::MeshSecret::create();
  TestNode a("a", secret), b("b", secret), c("c", secret, gossip::Role::client);
  std::string token = a.node->invite(0);
  auto r = b.node->join(seeds_of(token), 5000ms);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.reached, 1u);
  r = c.node->join(seeds_of(token), 5000ms);
  ASSERT_TRUE(r.ok) << r.error;
  for (auto* n : {&a, &b, &c}) EXPECT_TRUE(eventually([&] { return n->alive() == 3; })) << n->home;

  b.node->update_state([](gossip::NodeState& s) { s.load.active_requests = 3; });
  EXPECT_TRUE(eventually([&] {
    for (auto& v : c.node->members())
      if (v.member.id == b.node->id().hex() && v.member.state.load.active_requests == 3) return true;
    return false;
  }));
  auto st = a.node->status_json();
  EXPECT_EQ(st["mesh"]["alive"], 3);
  EXPECT_EQ(st["members"].size(), 3u);
  // An invite names live servers only: the client is not a seed.
  auto inv = invite::decode_invite(a.node->invite(0));
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(inv.invite->nodes.size(), 2u);
}

TEST(MeshNode, WrongSecretIsRefusedWithItsReasonOnBothSides) {
  auto secret = invite::MeshSecret::create();
  auto forged = secret;
  forged.secret[0] ^= 1;  // same mesh id and epoch, wrong secret
  TestNode a("ws_a", secret), x("ws_x", forged);
  auto r = x.node->join(seeds_of(a.node->invite(0)), 3000ms);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("wrong_secret (258)"), std::string::npos) << r.error;
  EXPECT_TRUE(eventually([&] { return a.logs->has("admission refused: peer " + x.node->id().short_hex()); }));
  EXPECT_TRUE(a.logs->has("wrong_secret (258)"));
  EXPECT_TRUE(x.logs->has("wrong_secret"));
  EXPECT_EQ(a.alive(), 1u);

  TestNode y("ws_y", invite::MeshSecret::create());  // another mesh altogether
  r = y.node->join(seeds_of(a.node->invite(0)), 3000ms);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("wrong_mesh"), std::string::npos) << r.error;
}

TEST(MeshNode, RotationReachesMembersAndRevokesOldTokens) {
  auto secret = invite::MeshSecret::create();
  TestNode a("rot_a", secret), b("rot_b", secret);
  std::string old_token = a.node->invite(0);
  ASSERT_TRUE(b.node->join(seeds_of(old_token), 5000ms).ok);
  uint32_t epoch = a.node->rotate_secret();
  EXPECT_EQ(epoch, 2u);
  EXPECT_TRUE(eventually([&] { return b.node->secret().epoch == 2; }));
  EXPECT_EQ(invite::load_mesh_secret(b.home / "mesh.json").epoch, 2u);  // saved for restarts

  auto old = invite::decode_invite(old_token);
  TestNode late("rot_late", old.invite->mesh);
  auto r = late.node->join(old.invite->nodes, 3000ms);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("newer_epoch"), std::string::npos) << r.error;  // its view: the mesh moved on
  EXPECT_TRUE(eventually([&] { return a.logs->has("stale_epoch"); }));

  auto fresh = invite::decode_invite(a.node->invite(0));
  TestNode ok("rot_ok", fresh.invite->mesh);
  EXPECT_TRUE(ok.node->join(fresh.invite->nodes, 5000ms).ok);
}

TEST(MeshNode, GracefulLeaveIsSeenAtOnce) {
  auto secret = invite::MeshSecret::create();
  TestNode a("gl_a", secret), b("gl_b", secret), c("gl_c", secret);
  auto seeds = seeds_of(a.node->invite(0));
  ASSERT_TRUE(b.node->join(seeds, 5000ms).ok);
  ASSERT_TRUE(c.node->join(seeds, 5000ms).ok);
  ASSERT_TRUE(eventually([&] { return a.alive() == 3 && b.alive() == 3; }));
  NodeId cid = c.node->id();
  auto t0 = std::chrono::steady_clock::now();
  c.node->leave(1000ms);
  EXPECT_TRUE(eventually([&] {
    return a.status_of(cid) == gossip::MemberStatus::left && b.status_of(cid) == gossip::MemberStatus::left;
  }, 3000ms));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms);
}

TEST(MeshNode, RestartRejoinsThroughSavedPeersWithTheSameIdentity) {
  auto secret = invite::MeshSecret::create();
  TestNode a("rs_a", secret), b("rs_b", secret);
  ASSERT_TRUE(b.node->join(seeds_of(a.node->invite(0)), 5000ms).ok);
  NodeId bid = b.node->id();
  ASSERT_TRUE(eventually([&] { return a.alive() == 2; }));
  b.node->leave(500ms);
  ASSERT_TRUE(eventually([&] { return a.status_of(bid) == gossip::MemberStatus::left; }));
  b.node.reset();
  ASSERT_TRUE(fs::exists(b.home / "peers.json"));

  b.start(invite::load_mesh_secret(b.home / "mesh.json"));
  EXPECT_EQ(b.node->id(), bid);  // the same key, from the same home
  auto saved = b.node->saved_peers();
  ASSERT_EQ(saved.size(), 1u);
  auto r = b.node->join(saved, 5000ms);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(eventually([&] { return a.status_of(bid) == gossip::MemberStatus::alive; }));
}

TEST(MeshNode, HostPortParsing) {
  EXPECT_EQ(split_host_port("10.0.0.1:7411"), std::make_pair(std::string("10.0.0.1"), uint16_t{7411}));
  EXPECT_EQ(split_host_port("[::1]:80"), std::make_pair(std::string("::1"), uint16_t{80}));
  EXPECT_FALSE(split_host_port("::1:80"));
  EXPECT_FALSE(split_host_port("host"));
  EXPECT_FALSE(split_host_port("host:0"));
  EXPECT_FALSE(split_host_port("host:70000"));
  EXPECT_FALSE(split_host_port(":80"));
  EXPECT_FALSE(split_host_port("h:8a"));
}
