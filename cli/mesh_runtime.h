// The mesh side of `llmesh serve` and `llmesh client`: options, joining with an invite token
// (or through the peers saved by the last run), the gossip record of what this node serves and
// how busy it is, request routing to other nodes, serving their forwarded requests, and the
// node's local control file ($LLMESH_HOME/node.json) that `llmesh invite` and `llmesh status`
// read to find it.
#pragma once
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/lan_join.h"
#include "console/console_server.h"
#include "cli/mesh_discovery.h"
#include "gossip/node_state.h"
#include "node/mesh_node.h"
#include "routing/forward_server.h"
#include "routing/mesh_router.h"
#include "scheduler/scheduler.h"
#include "server/api_server.h"

namespace llmesh::cli {

struct MeshCliOptions {
  std::string join;            // invite token (also LLMESH_JOIN)
  bool no_mesh = false;
  int mesh_port = 7411;
  bool mesh_port_given = false;  // --mesh-port on the command line: no fallback when it is taken
  std::string mesh_listen = "0.0.0.0";
  std::string advertise;       // host or host:port others dial
  int join_timeout_s = 20;
  DiscoveryCliOptions discovery;  // nostr: --publish, --auto, --relay... (cli/mesh_discovery.h)
  LanCliOptions lan;              // --discovery lan, --lan-port, --lan-interval (cli/lan_join.h)
  // The web console (docs/console.md): --console-port, --console-listen, --no-console.
  int console_port = 3131;
  bool console_port_given = false;  // given: a port that is taken fails the start
  std::string console_listen;       // empty: the API's --listen address
  bool no_console = false;
};
void add_mesh_options(CLI::App* sub, MeshCliOptions& o, bool client);

// What this node contributes, for its gossip record.
struct LocalNode {
  gossip::Role role = gossip::Role::server;
  const api::ServedModel* model = nullptr;  // null: a client
  int threads = 1;
  std::string api_key;
  std::string api_host;  // where the API listens
  // A split model (cli/split_serving.h): edits the record after the usual fields are filled
  // (layer range held, entry and split flags, plan, free memory within --memory), takes the
  // stage streams, and adds its state to /mesh/status as "split".
  std::function<void(gossip::NodeState&)> describe;
  std::function<bool(std::shared_ptr<mesh::Stream>&)> take_stream;
  std::function<nlohmann::json()> split_status;
};

class MeshRuntime {
 public:
  // Loads or creates the identity and the mesh secret (a token's secret replaces the saved one),
  // starts the node. Joining happens in on_listening(), once the API is up.
  MeshRuntime(const MeshCliOptions& opt, LocalNode local, bool quiet);
  ~MeshRuntime();

  api::ModelRouter* router() { return router_.get(); }
  // Registers /mesh/status and /mesh/invite on the API server, and the mesh's series on its
  // /metrics.
  void add_endpoints(api::ApiServer& server);
  // The API is bound on `api_port`: start forwarding, the console, join, write node.json.
  // Returns fields for the listening line.
  nlohmann::json on_listening(int api_port);
  // Stop signal: announce the leave (routing to this node stops), keep connections for the drain.
  void on_stopping();

  mesh::MeshNode& node() { return *node_; }
  // What /mesh/status, `llmesh status`, the console and /metrics show: the node's status with
  // the mesh view (links, placement, totals; mesh/node/mesh_view.h).
  nlohmann::json status() const;

 private:
  void start_console(int api_port, nlohmann::json& out);
  void refresh_state_loop();
  // This node's round trips to its connected peers, for its gossip record (nearest first).
  std::vector<gossip::Link> measured_links() const;
  // --auto: discovers and ranks public meshes; returns the secret of the best (or of a new
  // public mesh for a server that found none).
  invite::MeshSecret resolve_auto();
  // --auto: joins the candidates in turn until one admits this node.
  void join_auto(nlohmann::json& out);
  nlohmann::json discovery_status() const;
  void stop_publisher();
  gossip::NodeState load_state() const;

  MeshCliOptions opt_;
  LocalNode local_;
  bool quiet_;
  std::filesystem::path home_;
  std::unique_ptr<mesh::MeshNode> node_;
  std::unique_ptr<mesh::MeshRouter> router_;
  std::unique_ptr<mesh::ForwardServer> forward_;
  std::string control_key_;
  std::vector<invite::InviteNode> seeds_;
  // --auto: the public meshes found, best first; on_listening joins the first that admits us.
  std::vector<std::string> relays_;  // --publish / --auto
  std::vector<mesh::discovery::FoundMesh> auto_candidates_;
  // Read by /mesh/status, which may run while on_listening is still joining: under discovery_mu_.
  mutable std::mutex discovery_mu_;
  nlohmann::json auto_status_;
  std::unique_ptr<ListingPublisher> publisher_;
  std::optional<mesh::PeerLimitOptions> peer_limits_;
  std::shared_ptr<mesh::PeerLimits> limiter_;
  std::unique_ptr<LanJoin> lan_;  // --discovery lan
  api::ApiServer* api_ = nullptr;  // set by add_endpoints
  // Set by on_listening while the API may already answer /mesh/status: read under console_mu_.
  mutable std::mutex console_mu_;
  int api_port_ = 0;
  std::string console_url_;
  std::unique_ptr<api::ConsoleServer> console_;
  std::atomic<bool> stopping_{false};
  std::thread refresher_;
};

// The running node of a home, from its node.json: {"api": "host:port", "control_key": ...}.
struct NodeControl {
  std::string host;
  int port = 0;
  std::string control_key;
  std::string node_id;
};
// Throws std::runtime_error with a hint when no node is running for that home.
NodeControl find_running_node(const std::filesystem::path& home);

}  // namespace llmesh::cli
