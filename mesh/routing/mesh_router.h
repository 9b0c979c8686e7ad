// The mesh's api::ModelRouter: which peers serve a model, in which order to try them.
//
// Order (docs/api.md "Routing"): first the sticky node, the highest rendezvous
// (highest-random-weight) hash of (session key, node id) among the nodes serving the model
// that are not overloaded, so a conversation keeps landing where its prefix is cached and
// only moves when that node dies, overloads, or a new node wins the hash for it; then the
// rest, not overloaded before overloaded, by score = load ratio + rtt / latency_unit.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gossip/node_state.h"
#include "routing/stream_upstream.h"
#include "server/router.h"
#include "transport/transport.h"

namespace llmesh::mesh {

// A peer the router may send requests to: alive in gossip, admitted, and connected or
// connectable. The node builds these from its gossip view and the transport.
struct RouteTarget {
  NodeId id;
  gossip::NodeState state;
  std::optional<std::chrono::microseconds> rtt;  // transport round trip; nullopt: unknown
};

struct MeshRouterOptions {
  // A node is overloaded when it has queued requests and (active + queued) / max(1, slots)
  // is at least this.
  double overload_ratio = 1.5;
  // Latency term of the score: rtt / latency_unit (100 ms of round trip weighs as much as a
  // node's full set of slots being busy).
  std::chrono::microseconds latency_unit{100000};
  // Assumed round trip when none was measured yet.
  std::chrono::microseconds unknown_rtt{50000};
  StreamUpstreamOptions upstream;
};

// The pure policy, usable without a transport (tests, `llmesh status`).
namespace routing {
// True when the node serves the whole model: its loaded range covers every layer
// (total_layers == 0: a model not split into layers, whole by definition).
bool serves_whole(const gossip::ModelInfo& m);
// True when `m` answers to `name` (its name or one of its aliases).
bool answers_to(const gossip::ModelInfo& m, const std::string& name);
double load_ratio(const gossip::Load& l);
bool overloaded(const gossip::Load& l, const MeshRouterOptions& opt);
// The rendezvous weight of (key, node): FNV-1a 64 over key bytes, a 0 byte and the 32 id
// bytes, finished with the splitmix64 mixer.
uint64_t rendezvous_weight(const std::string& key, const NodeId& node);
// The targets (not `self`, servers only) that serve `model` whole, best first, as above.
std::vector<RouteTarget> order_targets(std::vector<RouteTarget> targets, const std::string& model,
                                       const std::string& session_key, const MeshRouterOptions& opt,
                                       const std::optional<NodeId>& self = std::nullopt);
// Mixture-of-experts shards (docs/moe.md, "Sessions and failover"): among `serving` (all serve
// `model`, some as expert shards), the session's home shard of the plan most nodes follow, chosen
// by rendezvous hashing of (session key, plan, shard index) so it does not move as nodes come
// and go; then, best first: the nodes holding the home shard (replicas), nodes with the whole
// model, the other shards by how much of the home shard's experts they hold, shards of other
// plans; nodes not overloaded before overloaded; ties by the rendezvous weight of (session key,
// node), so every entry node computes the same order for a session.
std::vector<RouteTarget> order_shards(std::vector<RouteTarget> serving, const std::string& model,
                                      const std::string& session_key, const MeshRouterOptions& opt);
// The home shard index of a session for a plan of `count` shards.
uint32_t home_shard(const std::string& session_key, const std::string& plan, uint32_t count);
// Models served whole by the targets (names and aliases), deduplicated, sorted by name; nodes =
// how many targets serve each, context_length = the smallest advertised (0: none), created =
// the earliest advertised.
std::vector<api::RemoteModel> mesh_models(const std::vector<RouteTarget>& targets,
                                          const std::optional<NodeId>& self = std::nullopt);
}  // namespace routing

class MeshRouter : public api::ModelRouter {
 public:
  using Snapshot = std::function<std::vector<RouteTarget>()>;
  // `snapshot` is called on every models()/candidates() call, from HTTP threads: it must be
  // thread-safe and cheap (a copy of the node's current view).
  MeshRouter(Transport& transport, Snapshot snapshot, MeshRouterOptions opt = {});

  std::vector<api::RemoteModel> models() override;
  // StreamUpstreams to the nodes serving `model`, in the order above. The local node is never
  // included (the API server answers for its own model). Empty: nobody serves it.
  std::vector<std::shared_ptr<api::Upstream>> candidates(const std::string& model,
                                                         const std::string& session_key) override;
  // This node serves `model` as an expert shard: every node serving it, this one included
  // (as nullptr), in order_shards() order.
  std::vector<std::shared_ptr<api::Upstream>> shard_candidates(const std::string& model,
                                                               const std::string& session_key) override;
  // This node's own record (for shard_candidates); thread-safe and cheap like `snapshot`.
  void set_self(std::function<gossip::NodeState()> self) { self_ = std::move(self); }

 private:
  std::shared_ptr<api::Upstream> upstream_to(const RouteTarget& t);
  Transport& transport_;
  Snapshot snapshot_;
  std::function<gossip::NodeState()> self_;
  MeshRouterOptions opt_;
};

}  // namespace llmesh::mesh
