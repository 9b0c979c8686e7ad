// LAN discovery: nodes of one mesh find each other on a local network without typing addresses
// (docs/lan-discovery.md). Each node multicasts a small UDP announcement every few seconds on
// every multicast-capable IPv4 interface: a keyed fingerprint of the mesh secret (nothing
// secret), its node id, its mesh port, its role and a capacity summary. A node that hears an
// announcement with its own mesh's fingerprint dials sourceIP:port, pinning the node id, and
// the usual admission decides.
//
//   LanDiscoveryOptions o;
//   o.fingerprint = lan_fingerprint(secret);
//   o.describe = [&] { LanAnnouncement a; a.node_id = ...; a.mesh_port = ...; return a; };
//   o.on_peer = [&](const LanPeer& p) { /* join p.address() from another thread */ };
//   LanDiscovery lan(o);  lan.start();  ...  lan.peers();  lan.stats();  lan.stop();
//
// One thread owns the sockets; on_peer, describe and log run on it (they must not block).
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "gossip/node_state.h"
#include "invite/mesh_secret.h"

namespace llmesh::mesh::discovery {

using LanFingerprint = std::array<uint8_t, 16>;

// BLAKE2b-128 keyed by the mesh secret over "llmesh-lan-v1" || mesh id || epoch (u32 BE).
// Equal for the nodes of one mesh at one epoch; changes on rotation; reveals nothing about the
// secret.
LanFingerprint lan_fingerprint(const invite::MeshSecret& secret);

// ---------------------------------------------------------------------------------------------
// Wire format (all integers big-endian), docs/lan-discovery.md:
//
//   off size field
//   0   4    magic "LMLD"
//   4   1    version, 1 (changes only for incompatible layouts; fields are added at the end)
//   5   1    type: 1 announce, 2 query (a starting node asks for announcements now)
//   6   1    role: 0 server, 1 client
//   7   1    reserved, 0 (ignored)
//   8   16   fingerprint
//   24  32   node id (Ed25519 public key; the joiner pins it)
//   56  2    mesh port (TCP, 1..65535)
//   58  2    members alive (as this node sees the mesh, itself included)
//   60  2    servers alive
//   62  2    slots, total (parallel request slots of the alive servers)
//   64  2    slots, free
//   66  2    models served (distinct names)
//   68  4    tokens per second, tenths (sum of the alive servers' recent throughput)
//   72       end of version 1; longer datagrams are read and the rest ignored
inline constexpr std::array<uint8_t, 4> kLanMagic = {'L', 'M', 'L', 'D'};
inline constexpr uint8_t kLanVersion = 1;
inline constexpr size_t kLanMessageSize = 72;
inline constexpr size_t kLanMaxDatagram = 1024;  // read at most this much of a datagram

enum class LanMessageType : uint8_t { announce = 1, query = 2 };

// Summary of the mesh as the announcing node sees it; every count saturates at 65535.
struct LanCapacity {
  uint16_t members_alive = 0;
  uint16_t servers = 0;
  uint16_t slots_total = 0;
  uint16_t slots_free = 0;
  uint16_t models = 0;
  uint32_t tokens_per_second_x10 = 0;
  bool operator==(const LanCapacity&) const = default;
};

struct LanAnnouncement {
  LanMessageType type = LanMessageType::announce;
  LanFingerprint fingerprint{};
  invite::NodeId node_id{};
  uint16_t mesh_port = 0;
  gossip::Role role = gossip::Role::server;
  LanCapacity capacity;
  bool operator==(const LanAnnouncement&) const = default;
};

// Why a datagram was refused (stable names: they appear in logs and status counters).
enum class LanRefusal : uint8_t { none = 0, too_short, bad_magic, bad_version, bad_type, bad_role, bad_port };
const char* lan_refusal_name(LanRefusal r);

std::vector<uint8_t> encode_lan_message(const LanAnnouncement& a);
// Never throws: untrusted network input. `refusal` is none exactly when a message is returned.
struct LanDecoded {
  std::optional<LanAnnouncement> message;
  LanRefusal refusal = LanRefusal::none;
};
LanDecoded decode_lan_message(std::span<const uint8_t> bytes);

// ---------------------------------------------------------------------------------------------
// A node of this mesh heard on the LAN.
struct LanPeer {
  invite::NodeId node_id{};
  std::string host;  // the datagram's IPv4 source address
  uint16_t mesh_port = 0;
  gossip::Role role = gossip::Role::server;
  LanCapacity capacity;
  std::string interface;  // where it was heard
  std::chrono::steady_clock::time_point last_seen{};
  std::string address() const { return host + ":" + std::to_string(mesh_port); }
};

struct LanStats {
  uint64_t sent = 0;         // datagrams sent (one per interface per message)
  uint64_t received = 0;     // datagrams read, all of them
  uint64_t matched = 0;      // from another node of this mesh
  uint64_t other_mesh = 0;   // well-formed, another fingerprint (another mesh or epoch)
  uint64_t refused = 0;      // malformed (lan_refusal_name), never acted on
  uint64_t rate_limited = 0; // dropped unread: a source sending too fast
  uint64_t send_errors = 0;
};

struct LanDiscoveryOptions {
  std::string group = "239.255.77.77";  // IPv4 organization-local scope (RFC 2365)
  uint16_t port = 7412;
  std::chrono::milliseconds interval{5000};  // between announcements, jittered ±20%
  LanFingerprint fingerprint{};
  // This node's announcement (type and fingerprint are filled in by LanDiscovery).
  std::function<LanAnnouncement()> describe;
  // An announcement or query with the matching fingerprint from another node.
  std::function<void(const LanPeer&)> on_peer;
  std::function<void(const std::string&)> log;  // default: none
  // Per source address: at most `burst` datagrams, refilled at `rate_per_s`.
  double rate_per_s = 10;
  double burst = 20;
};

class LanDiscovery {
 public:
  explicit LanDiscovery(LanDiscoveryOptions opt);
  ~LanDiscovery();  // stop()
  LanDiscovery(const LanDiscovery&) = delete;
  LanDiscovery& operator=(const LanDiscovery&) = delete;

  // Opens the sockets, joins the group on every multicast-capable interface that is up, sends a
  // query and an announcement, and starts the thread. Throws std::runtime_error when the
  // receiving socket cannot be opened (the message names group and port).
  void start();
  void stop();

  // After a rotation: announce and match the new fingerprint (an announcement goes out at once).
  void set_fingerprint(const LanFingerprint& fp);
  // Announce now (e.g. the capacity changed a lot); rate-limited to one per second.
  void announce_soon();

  std::vector<LanPeer> peers() const;  // matching peers heard recently, newest first
  LanStats stats() const;
  std::vector<std::string> interfaces() const;  // names of the interfaces joined
  // {group, port, interval_ms, interfaces, sent, received, matched, other_mesh, refused,
  //  rate_limited, peers: [{node_id, address, role, age_s, capacity...}]}
  nlohmann::json status_json() const;

 private:
  struct Interface {
    std::string name;
    unsigned index = 0;
    uint32_t addr = 0;  // network order
  };
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at{};
  };

  void loop();
  void refresh_interfaces();
  void send_message(LanMessageType type);
  void on_datagram(std::span<const uint8_t> bytes, uint32_t from_addr, unsigned ifindex);
  bool admit_rate(uint32_t from_addr, std::chrono::steady_clock::time_point now);
  void log(const std::string& line) const;

  LanDiscoveryOptions opt_;
  uint32_t group_addr_ = 0;  // network order
  int recv_fd_ = -1;
  int send_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop() and announce_soon() wake the thread
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> announce_requested_{false};

  mutable std::mutex mu_;
  LanFingerprint fingerprint_{};
  invite::NodeId self_id_{};  // from describe(): our own datagrams loop back
  std::vector<Interface> interfaces_;
  std::map<invite::NodeId, LanPeer> peers_;
  std::map<uint32_t, Bucket> buckets_;
  LanStats stats_;
};

}  // namespace llmesh::mesh::discovery
