// A mesh node: the node's identity, its transport with admission by the mesh secret, and SWIM
// gossip driven by a clock thread, glued into one object that the `serve` and `client`
// commands run (docs/mesh-node.md).
//
//   MeshNode node(NodeIdentity::load_or_create(home), secret, opt, initial_state);
//   node.start();                                   // listens, starts gossip
//   auto r = node.join(invite.nodes, 10s);           // dial the seeds, push-pull, wait for the view
//   node.update_state([&](NodeState& s) { s.load = ...; });   // spread when it changed
//   node.members();  node.status_json();  node.invite(expires);  node.rotate_secret();
//   node.leave(1s);                                  // graceful: the mesh hears it at once
//
// Threads: the transport's I/O thread runs the callbacks (gossip messages go straight into the
// state machine under the node's lock, never blocking), one clock thread ticks gossip every
// `tick`. Every public method is thread-safe.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "gossip/swim.h"
#include "identity/node_identity.h"
#include "invite/admission.h"
#include "invite/invite_token.h"
#include "invite/mesh_secret.h"
#include "transport/transport.h"

namespace llmesh::mesh {

// MSG kinds above the transport (kAdmitKind = 1 is the transport's own).
inline constexpr uint16_t kGossipKind = 2;
inline constexpr uint16_t kControlKind = 3;

struct MeshNodeOptions {
  std::string listen_host = "0.0.0.0";
  uint16_t listen_port = 7411;  // 0: any free port
  // What other nodes dial: "host" or "host:port". Empty: the listen host, or (listening on a
  // wildcard) this machine's first non-loopback IPv4 address, with the bound port.
  std::string advertise;
  // Where the mesh secret lives (saved again when a rotation arrives); empty: not saved.
  std::filesystem::path secret_path;
  // Where the addresses of recently seen members are kept, so a restarted node rejoins
  // without a token; empty: not kept.
  std::filesystem::path peers_path;
  int64_t token_expires = 0;  // expiry of the invite this node joined with (declared in ADMIT)
  gossip::SwimConfig swim;
  TransportOptions transport;
  std::chrono::milliseconds tick{20};
  uint64_t seed = 0;  // gossip randomness; 0: random
  std::function<void(const std::string&)> log;  // default: stderr
};

struct JoinResult {
  bool ok = false;
  size_t reached = 0;     // seeds that admitted us
  size_t members = 0;     // members known when join() returned
  std::chrono::milliseconds took{0};
  std::string error;      // why not: each seed's failure (admission reason codes included)
};

// One row of the mesh as this node sees it.
struct MemberView {
  gossip::Member member;
  std::optional<NodeId> id;
  bool self = false;
  bool connected = false;
  std::optional<std::chrono::microseconds> rtt;
};

class MeshNode {
 public:
  MeshNode(NodeIdentity identity, invite::MeshSecret secret, MeshNodeOptions opt, gossip::NodeState self);
  ~MeshNode();  // stop()
  MeshNode(const MeshNode&) = delete;
  MeshNode& operator=(const MeshNode&) = delete;

  // Binds the transport (throws std::runtime_error naming the address), starts gossip.
  void start();
  // Dials the seeds (pinned by node id), joins through those that admit us, and waits until
  // one has sent its view of the mesh or `timeout` passed. Seeds that are this node are skipped.
  JoinResult join(const std::vector<invite::InviteNode>& seeds, std::chrono::milliseconds timeout);
  // The seeds saved in peers_path by an earlier run (empty when none).
  std::vector<invite::InviteNode> saved_peers() const;

  // Edits this node's state record; spread through gossip when it changed.
  void update_state(const std::function<void(gossip::NodeState&)>& edit);
  gossip::NodeState state() const;

  // A handler for streams opened by admitted peers (runs on the I/O thread: must not block).
  void set_stream_handler(std::function<void(std::shared_ptr<Stream>)> handler);

  std::vector<MemberView> members() const;
  nlohmann::json status_json() const;
  // An invite token: this mesh's secret and up to max_nodes live server nodes (this one first).
  std::string invite(int64_t expires, size_t max_nodes = 8) const;
  // Draws a new secret (epoch + 1), saves it, and hands it to every admitted peer over its
  // authenticated channel, so the mesh keeps running while every older token stops working.
  // Returns the new epoch.
  uint32_t rotate_secret();
  invite::MeshSecret secret() const;
  // Another mesh for a node that has no member yet (a join that failed everywhere): takes
  // `secret`, forgets the seeds and gossip state of the old mesh and closes its connections.
  // Used by `--auto` to fall back to the next mesh found. Throws std::logic_error when a member
  // is alive.
  void switch_mesh(const invite::MeshSecret& secret);

  // Graceful leave: announce it, let it spread (at most `max`), then stop.
  void leave(std::chrono::milliseconds max = std::chrono::milliseconds(1000));
  // Announces the leave and keeps the connections (running forwarded requests finish); call
  // stop() once they have. Returns when the announcement has spread or after `max`.
  void begin_leave(std::chrono::milliseconds max = std::chrono::milliseconds(1000));
  void stop();

  Transport& transport() { return *transport_; }
  const NodeId& id() const { return id_; }
  std::string mesh_address() const;  // the advertised host:port
  uint16_t port() const;
  gossip::GossipStats gossip_stats() const;

 private:
  struct Dial {
    bool in_progress = false;
    int refusals = 0;  // admission refusals in a row: the next dial waits 2^n s (at most 5 min)
    gossip::TimePoint retry_after{};
    std::vector<std::vector<uint8_t>> queued;
  };

  void log(const std::string& line) const;
  std::vector<uint8_t> make_admit(const PeerInfo& peer) const;
  std::optional<std::pair<uint32_t, std::string>> verify_admit(const PeerInfo& peer,
                                                               std::span<const uint8_t> admit) const;
  void on_message(const NodeId& from, uint16_t kind, std::vector<uint8_t> body);
  void on_control(const NodeId& from, const std::vector<uint8_t>& body);
  void clock_loop();
  // Under mu_: sends the state machine's output, dialing members that are not connected.
  void flush_locked(gossip::TimePoint now);
  void send_locked(const gossip::MemberId& to, std::vector<uint8_t> bytes, gossip::TimePoint now);
  std::optional<std::string> address_of_locked(const gossip::MemberId& id) const;
  void handle_events_locked(gossip::TimePoint now);
  void save_peers_locked();
  void push_secret_locked();

  const NodeId id_;
  const std::string id_hex_;
  MeshNodeOptions opt_;
  std::unique_ptr<Transport> transport_;

  mutable std::mutex mu_;
  invite::MeshSecret secret_;
  std::unique_ptr<gossip::Swim> swim_;
  std::map<gossip::MemberId, std::string> seed_addresses_;  // from invites and saved peers
  std::map<gossip::MemberId, Dial> dials_;
  std::function<void(std::shared_ptr<Stream>)> stream_handler_;
  std::string advertised_;
  std::deque<nlohmann::json> recent_events_;
  gossip::TimePoint started_at_{};
  gossip::TimePoint peers_saved_at_{};
  bool peers_dirty_ = false;

  std::mutex clock_mu_;
  std::condition_variable clock_cv_;
  bool stopping_ = false;
  bool started_ = false;
  bool stopped_ = false;
  std::thread clock_;
};

// "host:port" → (host, port); IPv6 in brackets. nullopt when malformed.
std::optional<std::pair<std::string, uint16_t>> split_host_port(const std::string& address);
// This machine's first non-loopback IPv4 address that is up, or "127.0.0.1".
std::string primary_ipv4();

}  // namespace llmesh::mesh
