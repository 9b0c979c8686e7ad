// The record every node spreads about itself through gossip: what it is (role, addresses,
// versions), what it has (hardware, models and layer ranges) and how busy it is (load).
// Newer records replace older ones by state_version; the wire form is a MessagePack map with
// short keys (docs/gossip.md), unknown keys ignored so fields can be added without breaking
// older nodes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmesh::gossip {

enum class Role : std::uint8_t { server = 0, client = 1 };
const char* role_name(Role r);

// Layers [first, last) of a model.
struct LayerRange {
  std::uint32_t first = 0;
  std::uint32_t last = 0;
  bool operator==(const LayerRange&) const = default;
};

// A mixture-of-experts shard (docs/moe.md): the node holds the trunk plus a group of experts of
// plan `plan` (its digest), shard `index` of `count`; covers[j] = per-mille of shard j's experts
// this node holds (1000 for itself and for replicas), which orders failover.
struct ExpertShard {
  std::string plan{};
  std::uint32_t index = 0;
  std::uint32_t count = 0;
  std::vector<std::uint16_t> covers{};
  bool operator==(const ExpertShard&) const = default;
};

struct ModelInfo {
  std::string name;
  std::string file_hash;           // optional (empty: unknown)
  std::uint32_t total_layers = 0;
  LayerRange loaded;               // empty range: not loaded
  std::vector<LayerRange> on_disk;
  std::vector<std::string> aliases{};  // more names the model answers to (routing)
  std::uint32_t context_length = 0;  // tokens per request the node serves (0: unknown)
  std::int64_t created = 0;          // unix seconds, for /v1/models (0: unknown)
  // A split model (docs/stages.md): `entry` = this node answers API requests for the model
  // through a pipeline of stages (it holds `loaded`, maybe nothing but the embeddings);
  // `split` = the placement planner may give this node layers of the model (serve --split);
  // `plan` = the digest of the placement plan the node follows (nodes that agree show the same).
  bool entry = false;
  bool split = false;
  std::string plan{};
  ExpertShard experts{};  // experts.plan empty: every expert (not a shard)
  bool operator==(const ModelInfo&) const = default;
};

struct Hardware {
  std::uint32_t cores = 0;
  std::uint64_t ram_bytes = 0;
  std::uint64_t free_ram_bytes = 0;
  double matmul_gflops = 0;        // measured
  std::string accelerator;         // empty: none
  bool operator==(const Hardware&) const = default;
};

struct Load {
  std::uint32_t active_requests = 0;
  std::uint32_t queued = 0;
  std::uint32_t parallel_slots = 0;
  double tokens_per_second = 0;
  // Counters since the node started (the console's "requests per node", /metrics): requests
  // its scheduler finished and tokens it generated. Spread at most every few seconds.
  std::uint64_t requests_total = 0;
  std::uint64_t generated_tokens_total = 0;
  bool operator==(const Load&) const = default;
};

// This node's measured round trip to a peer (the console's topology, /metrics): `peer` is the
// first 8 bytes of the peer's node id in hex (16 characters), enough to tell members apart.
struct Link {
  std::string peer;
  std::uint32_t rtt_us = 0;
  bool operator==(const Link&) const = default;
};

struct NodeState {
  Role role = Role::server;
  std::string api_address;         // host:port of the OpenAI/Anthropic API
  std::string mesh_address;        // host:port of the mesh transport
  std::string software_version;
  std::uint32_t protocol_version = 1;
  Hardware hardware;
  std::vector<ModelInfo> models;
  Load load;
  // Models this node's users want that the mesh may not serve (`--want`): a public mesh's
  // listing shows them, so servers with those models choose it (docs/discovery.md).
  std::vector<std::string> wanted{};
  // Round trips to the peers this node is connected to (at most kMaxLinks, nearest first).
  std::vector<Link> links{};
  // Monotonic per node; a record replaces another only with a higher version. Swim assigns it
  // (update_self bumps it), so callers normally leave it alone.
  std::uint64_t state_version = 0;
  bool operator==(const NodeState&) const = default;
};

// Bounds on decoded records (hostile peers cannot make a node store unbounded state).
inline constexpr std::size_t kMaxModels = 64;
inline constexpr std::size_t kMaxLayerRanges = 64;
inline constexpr std::size_t kMaxAliases = 16;
inline constexpr std::size_t kMaxWanted = 16;
inline constexpr std::size_t kMaxLinks = 32;
inline constexpr std::size_t kLinkPeerChars = 16;
inline constexpr std::size_t kMaxStateString = 256;
inline constexpr std::uint32_t kMaxLayers = 100000;
inline constexpr std::size_t kMaxExpertShards = 1024;

// The record as a msgpack-ready map, and back. from_wire throws WireError on a malformed record.
nlohmann::json to_wire(const NodeState& s);
NodeState node_state_from_wire(const nlohmann::json& v);

// Standalone bytes form (the same map, serialized): for storage, `llmesh status`, and tests.
std::vector<std::uint8_t> encode_node_state(const NodeState& s);
NodeState decode_node_state(std::span<const std::uint8_t> bytes);

// Human/JSON view for `llmesh status --json` (long keys).
nlohmann::json to_json(const NodeState& s);

}  // namespace llmesh::gossip
