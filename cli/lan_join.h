// `--discovery lan` for `llmesh serve` and `llmesh client`: announce this node on the LAN
// (mesh/discovery/lan_discovery.h) and join the mesh through the nodes of the same mesh heard
// there, so a node that holds the mesh secret (a token, or mesh.json in its home) needs no
// reachable address (docs/lan-discovery.md).
#pragma once
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "discovery/lan_discovery.h"
#include "node/mesh_node.h"

namespace llmesh::cli {

// --discovery METHOD[,METHOD...] and the LAN's settings (MeshCliOptions::lan).
struct LanCliOptions {
  std::vector<std::string> discovery;  // --discovery, validated: kDiscoveryMethods
  int lan_port = 7412;
  double lan_interval_s = 5;
  bool lan() const;
};
inline const std::vector<std::string> kDiscoveryMethods = {"lan"};
void add_lan_options(CLI::App* sub, LanCliOptions& o);

// Held by MeshRuntime; thread-safe.
class LanJoin {
 public:
  LanJoin(mesh::MeshNode& node, const LanCliOptions& opt, bool quiet);
  ~LanJoin();  // stop(), and waits for a join in progress (at most a few seconds)

  // Starts announcing and listening (after the node is up). `waiting`: the node has no
  // reachable seed, say that it waits for the LAN.
  void start(bool waiting);
  // Stops announcing and joining; returns at once (a join in progress finishes in the background).
  void stop();
  // For /mesh/status "lan": the discovery's state, plus "joins" (tried, ok) and "enabled".
  nlohmann::json status_json() const;

 private:
  mesh::discovery::LanAnnouncement describe() const;
  void on_peer(const mesh::discovery::LanPeer& p);
  void worker();
  bool is_alive_member(const invite::NodeId& id) const;
  void log(const std::string& line, bool important = false) const;

  struct Backoff {
    int failures = 0;
    std::chrono::steady_clock::time_point next{};
  };

  mesh::MeshNode& node_;
  LanCliOptions opt_;
  bool quiet_;
  std::unique_ptr<mesh::discovery::LanDiscovery> lan_;
  invite::MeshSecret secret_;  // whose fingerprint is announced (re-derived on rotation)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<invite::NodeId, mesh::discovery::LanPeer> pending_;  // heard, not yet looked at
  std::map<invite::NodeId, Backoff> backoff_;
  uint64_t joins_tried_ = 0, joins_ok_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace llmesh::cli
