// The mesh's refusal lines carry their reason codes: a node holding the wrong secret is refused
// (each side refuses the other's proof) with "(reason wrong_secret)"; a node without a log callback writes them
// through llmesh_log, as JSON lines when so configured.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "eventually.h"
#include <nlohmann/json.hpp>

#include "log/event_log.h"
#include "node/mesh_node.h"

namespace llmesh {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct Lines {
  std::mutex m;
  std::vector<std::string> all;
  void add(const std::string& l) {
    std::lock_guard lk(m);
    all.push_back(l);
  }
  std::vector<std::string> with(const std::string& needle) {
    std::lock_guard lk(m);
    std::vector<std::string> out;
    for (const auto& l : all)
      if (l.find(needle) != std::string::npos) out.push_back(l);
    return out;
  }
};

fs::path temp_home(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("mesh_reasons_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A node on 127.0.0.1; `lines` null: no log callback (the library's default sink).
std::unique_ptr<mesh::MeshNode> start_node(const std::string& name, const invite::MeshSecret& secret,
                                           std::shared_ptr<Lines> lines) {
  const fs::path home = temp_home(name);
  mesh::MeshNodeOptions o;
  o.listen_host = "127.0.0.1";
  o.listen_port = 0;
  o.secret_path = home / "mesh.json";
  o.peers_path = home / "peers.json";
  o.transport.handshake_timeout = 2000ms;
  if (lines) o.log = [lines](const std::string& l) { lines->add(l); };
  gossip::NodeState s;
  s.role = gossip::Role::server;
  s.software_version = "test";
  invite::save_mesh_secret(secret, o.secret_path);
  auto node = std::make_unique<mesh::MeshNode>(mesh::NodeIdentity::load_or_create(home), secret, o, s);
  node->start();
  return node;
}

using test::eventually;

std::vector<invite::InviteNode> seeds_of(const std::string& token) {
  auto d = invite::decode_invite(token);
  EXPECT_TRUE(d.ok()) << d.error;
  return d.ok() ? d.invite->nodes : std::vector<invite::InviteNode>{};
}

TEST(MeshReasons, WrongSecretIsAReasonOnBothSides) {
  auto secret = invite::MeshSecret::create();
  auto forged = secret;
  forged.secret[0] ^= 1;
  auto a_lines = std::make_shared<Lines>(), x_lines = std::make_shared<Lines>();
  auto a = start_node("a", secret, a_lines);
  auto x = start_node("x", forged, x_lines);
  auto r = x->join(seeds_of(a->invite(0)), 3000ms);
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(eventually([&] { return !a_lines->with("admission refused: peer").empty(); }));
  // Each side checks the other's proof: both refuse.
  ASSERT_TRUE(eventually([&] { return !x_lines->with("admission refused").empty(); }));
  x.reset();
  a.reset();
  for (const auto& l : a_lines->with("admission refused: peer")) {
    auto e = logs::from_line("mesh", l);
    EXPECT_EQ(e.reason, "wrong_secret") << l;
    EXPECT_EQ(e.level, logs::Level::warn) << l;
  }
  for (const auto& l : x_lines->with("admission refused")) EXPECT_EQ(logs::from_line("mesh", l).reason, "wrong_secret") << l;
  // Every refusal or failure line of either node has a reason.
  for (auto* lines : {a_lines.get(), x_lines.get()})
    for (const auto& l : lines->with("refused")) EXPECT_NE(logs::from_line("mesh", l).reason, "") << l;
}

TEST(MeshReasons, DefaultSinkWritesJsonLines) {
  const std::string path = ::testing::TempDir() + "/mesh_reasons_stderr_" + std::to_string(::getpid());
  std::fflush(stderr);
  const int saved = dup(2);
  {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
  }
  logs::configure(logs::Format::json, logs::Level::info);
  {
    auto secret = invite::MeshSecret::create();
    auto forged = secret;
    forged.secret[0] ^= 1;
    auto a = start_node("ja", secret, nullptr);  // logs through llmesh_log
    auto x = start_node("jx", forged, std::make_shared<Lines>());
    auto r = x->join(seeds_of(a->invite(0)), 3000ms);
    EXPECT_FALSE(r.ok);
    EXPECT_TRUE(eventually([&] {
      std::ifstream in(path);
      return std::string(std::istreambuf_iterator<char>(in), {}).find("admission refused: peer") != std::string::npos;
    }));
  }
  logs::configure(logs::Format::text, logs::Level::info);
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::ifstream in(path);
  std::vector<nlohmann::json> refusals;
  for (std::string l; std::getline(in, l);) {
    auto j = nlohmann::json::parse(l, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not a JSON line: " << l;
    EXPECT_EQ(j["component"], "mesh") << l;
    if (j["msg"].get<std::string>().find("admission refused: peer") != std::string::npos) refusals.push_back(j);
  }
  std::remove(path.c_str());
  ASSERT_FALSE(refusals.empty());
  EXPECT_EQ(refusals[0]["reason"], "wrong_secret");
  EXPECT_EQ(refusals[0]["level"], "warn");
  EXPECT_EQ(refusals[0]["msg"].get<std::string>().find("(reason"), std::string::npos);
}

}  // namespace
}  // namespace llmesh
