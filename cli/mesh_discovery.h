// Finding a mesh on nostr relays, for `serve`, `client` and `discover` (docs/discovery.md):
// the options (--publish, --mesh-name, --relay, --region, --want, --auto, per-peer limits), a
// discovery run (query the relays, check every listing, merge, probe, rank), and the publisher
// that keeps this node's signed listing of a public mesh fresh on the relays.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "discovery/mesh_listing.h"
#include "discovery/nostr_event.h"
#include "node/mesh_node.h"
#include "routing/peer_limits.h"

namespace llmesh::cli {

// Relays used when neither --relay nor LLMESH_RELAYS names any.
inline const std::vector<std::string> kDefaultRelays = {"wss://relay.damus.io", "wss://nos.lol",
                                                        "wss://relay.nostr.band"};

struct DiscoveryCliOptions {
  bool publish = false;
  std::string mesh_name;
  std::vector<std::string> relays;
  std::string region;
  std::vector<std::string> wants;
  bool auto_join = false;
  std::string auto_model;        // client --auto --model: the model to look for
  int publish_interval_s = 60;   // the listing expires after 3 intervals
  int discover_timeout_ms = 5000;
  double peer_rate = -1;         // requests per minute per peer (-1: the default for the mesh)
  double peer_burst = -1;
  int peer_concurrency = -1;
};
void add_discovery_options(CLI::App* sub, DiscoveryCliOptions& o, bool client);

// --relay, else LLMESH_RELAYS (comma separated), else kDefaultRelays. Throws
// std::invalid_argument naming a relay that is not a ws:// or wss:// URL.
std::vector<std::string> resolve_relays(const std::vector<std::string>& given);

// Per-peer limits for forwarded requests: a public mesh always has them (defaults 60 per
// minute, burst 20, 4 at once; the flags change them, 0 turns one off), a private mesh only
// when a flag asks.
std::optional<mesh::PeerLimitOptions> peer_limit_options(const DiscoveryCliOptions& o, bool public_mesh);

struct DiscoveryResult {
  std::vector<mesh::discovery::FoundMesh> meshes;  // ranked, best first
  nlohmann::json relays = nlohmann::json::array();   // per relay: url, ok, error, events, rejected
  nlohmann::json refused = nlohmann::json::array();  // listings refused: event, reason, error
  size_t joinable() const;
};
// Queries every relay at once, reads the listings, merges them per mesh, measures latency to
// the listed nodes (unless !probe) and ranks them for `prefs`.
DiscoveryResult discover_meshes(const std::vector<std::string>& relays, const mesh::discovery::MeshPreferences& prefs,
                                std::chrono::milliseconds timeout, bool probe = true);

// The listing of this node's mesh as its gossip shows it: live servers (this node first, at
// most 8) to connect to, models served and wanted, capacity.
mesh::discovery::MeshListing describe_mesh(const mesh::MeshNode& node, const DiscoveryCliOptions& o,
                                           const std::optional<mesh::PeerLimitOptions>& limits);

// Keeps the signed listing on the relays: every publish_interval_s, and within seconds of a
// change in what the mesh serves. Its key lives in $LLMESH_HOME/nostr.key.
class ListingPublisher {
 public:
  ListingPublisher(const DiscoveryCliOptions& o, std::vector<std::string> relays, mesh::MeshNode& node,
                   const std::filesystem::path& home, std::optional<mesh::PeerLimitOptions> limits,
                   std::function<void(const std::string&)> log);
  ~ListingPublisher();  // stop()
  void start();
  void stop();
  nlohmann::json status() const;
  const std::string& public_key() const { return pubkey_; }

 private:
  void loop();
  void publish_once(const mesh::discovery::MeshListing& l);

  DiscoveryCliOptions o_;
  std::vector<std::string> relays_;
  mesh::MeshNode& node_;
  mesh::discovery::NostrKey key_;
  std::string pubkey_;
  std::optional<mesh::PeerLimitOptions> limits_;
  std::function<void(const std::string&)> log_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
  nlohmann::json last_ = nlohmann::json::object();  // status of the last round
  std::map<std::string, std::string> relay_errors_;  // last error per relay (logged on change)
  uint64_t rounds_ = 0;
};

}  // namespace llmesh::cli
