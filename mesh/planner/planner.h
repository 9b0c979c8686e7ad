// The placement planner: which node runs which contiguous layer range of a model (pipeline
// stages), computed from the gossiped view of the mesh (free memory, measured speed, RTT).
// Pure: no threads, no I/O, no clock. Every node that feeds it the same inputs, in any order,
// gets the same plan and the same digest (docs/placement.md).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gossip/node_state.h"
#include "gossip/swim.h"

namespace llmesh::mesh::planner {

// Layers [first, last) of a model (the gossip record's type).
using LayerRange = gossip::LayerRange;

// What placing a model costs: bytes of every layer's weights, of the global tensors, and of the
// KV cache to reserve (headroom per layer = kv_bytes_per_token_per_layer * ctx_tokens * sessions).
// With tied embeddings the last stage needs the embedding table too: count it in output_bytes.
struct ModelShape {
  std::string model;
  int n_layer = 0;
  std::vector<std::uint64_t> layer_bytes;  // n_layer entries
  std::uint64_t embed_bytes = 0;           // held by the first stage
  std::uint64_t output_bytes = 0;          // held by the last stage (output norm + head)
  std::uint64_t kv_bytes_per_token_per_layer = 0;
  int ctx_tokens = 0;
  int sessions = 1;
};

// One node that may hold layers.
struct NodeCapacity {
  std::string id;                    // node id (64 lowercase hex digits)
  std::uint64_t free_bytes = 0;      // free memory it reports (Hardware::free_ram_bytes)
  double gflops = 0;                 // measured speed (Hardware::matmul_gflops); 0: unknown
  std::optional<LayerRange> pinned;  // manual override (`--layers A..B` or a lock file)
};

// The candidates a gossip view offers: members that are alive, have sent their state record and
// serve (role server), with Hardware::free_ram_bytes and matmul_gflops; sorted by id. Clients,
// suspect, dead and left members are not candidates. Pins are not gossiped: set them after.
std::vector<NodeCapacity> candidates_from(std::span<const gossip::Member> members);

// Round-trip times between nodes in milliseconds, symmetric. A pair never measured counts as
// PlanOptions::default_rtt_ms. Setting a pair twice keeps the smaller value, so the matrix does
// not depend on the order measurements were added in.
class RttMatrix {
 public:
  void set(const std::string& a, const std::string& b, double ms);
  std::optional<double> get(const std::string& a, const std::string& b) const;
  double between(const std::string& a, const std::string& b, double fallback_ms) const;
  bool empty() const { return ms_.empty(); }

 private:
  std::map<std::pair<std::string, std::string>, double> ms_;
};

struct PlanOptions {
  // Memory kept free on every node: the fraction of its free memory plus a fixed amount.
  double memory_headroom_fraction = 0.10;
  std::uint64_t memory_headroom_bytes = 512ull << 20;
  int max_stages = 16;
  // true: the fewest stages that fit. false: spread over up to max_stages nodes (more memory and
  // compute per token, more hops).
  bool prefer_fewer_stages = true;
  double default_rtt_ms = 50.0;
};

struct Stage {
  std::string node;
  LayerRange layers;
  std::uint64_t bytes = 0;     // weights of the range (+ embeddings first, + head last) + KV
  std::uint64_t kv_bytes = 0;  // of which KV headroom
  bool operator==(const Stage&) const = default;
};

struct Plan {
  std::uint64_t epoch = 0;
  std::string model;
  std::uint32_t n_layer = 0;
  std::vector<Stage> stages;  // in pipeline order: stage i+1 starts where stage i ends
  std::string digest;         // hex SHA-256 of the canonical plan (epoch included)
  std::vector<std::string> warnings;
  bool operator==(const Plan&) const = default;
};

// A plan, or why there is none. For "does not fit", needed_bytes and available_bytes say by how
// much (available = the usable memory of all candidates after headroom).
struct PlanResult {
  std::optional<Plan> plan;
  std::string error;
  std::uint64_t needed_bytes = 0;
  std::uint64_t available_bytes = 0;
  explicit operator bool() const { return plan.has_value(); }
};

// A fresh plan at `epoch`. Deterministic: candidates are put in a canonical order first.
PlanResult plan(const ModelShape& shape, std::span<const NodeCapacity> nodes,
                const RttMatrix& rtt = {}, const PlanOptions& options = {},
                std::uint64_t epoch = 1);

// Re-plans after joins, leaves or changed capacities with minimal movement: nodes of `current`
// that are still candidates keep their ranges where they still fit, and only the layers of
// stages that left (or no longer fit) go to other nodes. A fresh plan wins when it needs fewer
// stages. The epoch is current.epoch + 1 when the stages change and current.epoch otherwise
// (then the result is `current` with fresh warnings).
PlanResult replan(const Plan& current, const ModelShape& shape,
                  std::span<const NodeCapacity> nodes, const RttMatrix& rtt = {},
                  const PlanOptions& options = {});

// What going from plan a to plan b asks of each node: layer ranges to fetch (held in b, not in
// a) and to drop (held in a, not in b). Nodes with nothing to do are left out; sorted by node id.
struct Movement {
  std::string node;
  std::vector<LayerRange> fetch;
  std::vector<LayerRange> drop;
  bool operator==(const Movement&) const = default;
};
std::vector<Movement> diff(const Plan& a, const Plan& b);

// Human-readable "needs 12.3 GiB" figures (MiB or KiB below a GiB).
std::string format_gib(std::uint64_t bytes);

// The canonical digest of a plan's epoch, model, n_layer and stages (warnings excluded).
std::string plan_digest(const Plan& p);

// A plan that cannot be decoded or is inconsistent. what() says which field and why.
class PlanError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr std::size_t kMaxPlanStages = 1024;
inline constexpr std::size_t kMaxPlanWarnings = 32;
inline constexpr std::size_t kMaxPlanString = 256;

// Wire form: a MessagePack map with short keys (docs/placement.md). decode_plan treats the bytes
// as untrusted: bounded parse, types and ranges checked, stages contiguous over [0, n_layer),
// distinct nodes, digest recomputed and compared. Throws PlanError.
std::vector<std::uint8_t> encode_plan(const Plan& p);
Plan decode_plan(std::span<const std::uint8_t> bytes);

// Checks a plan's structure (coverage, order, distinct nodes, digest); throws PlanError.
void validate_plan(const Plan& p);

// For `llmesh status --json` (long keys).
nlohmann::json to_json(const Plan& p);

}  // namespace llmesh::mesh::planner
