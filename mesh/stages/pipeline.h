// The entry side of a split model (docs/stages.md): a BatchModel whose forward pass embeds the
// tokens and runs the entry's own leading layers [0, k) (k may be 0), then sends the hidden
// states through the stages holding the rest, one stream per stage (a stage on this very node
// runs in process), and turns the last stage's candidates back into logit rows
// for the scheduler. The scheduler above it is unchanged: continuous batching, prefix reuse,
// cancellation all work on a split model as on one node.
//
// A stage that fails (its stream resets or closes, its node is declared dead, or it stays
// silent past the step timeout) does not fail the requests: the pipeline marks it, waits for a
// route over the remaining nodes (the planner re-assigns the layers), rebuilds the KV those
// stages lost by re-running each slot's tokens (prompt + generated so far), and runs the step
// again. Greedy output is the same as an undisturbed run.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/forward.h"
#include "scheduler/scheduler.h"
#include "stages/stage_protocol.h"
#include "stages/stage_server.h"
#include "transport/transport.h"

namespace llmesh::mesh::stages {

// One hop of a route: the node that runs layers [first, last).
struct StageHop {
  NodeId node;
  int first = 0, last = 0;
  bool operator==(const StageHop&) const = default;
};

// A node offering a layer range of the model, as gossip shows it.
struct StageCandidate {
  NodeId node;
  int first = 0, last = 0;
  double rtt_ms = 0;  // 0: unknown
};

// The chain of candidates covering [first, n_layer) exactly, hop by hop: at each layer the
// candidate starting there that reaches furthest (fewest stages), then lower RTT, then lower node
// id (so every node picks the same). Candidates in `avoid` are skipped. nullopt when the layers
// cannot be covered.
std::optional<std::vector<StageHop>> find_route(const std::vector<StageCandidate>& candidates, int first,
                                                int n_layer, const std::set<NodeId>& avoid = {});

struct PipelineOptions {
  std::string model_id;                    // what the stages must hold (their StageOpen.model)
  HiddenFormat format = HiddenFormat::F16;
  // A stage silent this long on one step has failed (besides its stream breaking or `alive`
  // saying it is dead, which are noticed within a poll interval). Long: a big prefill chunk on
  // a slow CPU stage can take minutes, and a live node is watched by gossip anyway.
  std::chrono::milliseconds step_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds poll{200};
  // How long a failed step waits for a route over the remaining nodes before the batch fails.
  std::chrono::milliseconds recovery_timeout{std::chrono::seconds(90)};
  // How long a node that failed is left out of routes (unless it is the only way).
  std::chrono::milliseconds avoid_for{std::chrono::seconds(30)};
  // How long a step waits for a first route (nodes still joining) before the batch fails.
  std::chrono::milliseconds route_wait{std::chrono::seconds(10)};
  size_t max_message = 2u << 20;  // split steps so no step or reply message is larger
  // Dials a node that is not connected yet (from its gossiped address); optional.
  std::function<bool(const NodeId&)> connect;
  // A hop on this very node (the route passes through the entry's own stage): an in-process
  // session on the node's stage server, hidden states in F32. Null or nullptr: no local stage.
  std::function<std::unique_ptr<LocalStageSession>(const StageOpen&)> open_local;
  std::function<void(const std::string&)> log;
};

// The current candidates for the layers after the entry's (from gossip), and whether a node is
// still alive (gossip's view; the transport's connection state is checked too).
using CandidateSource = std::function<std::vector<StageCandidate>()>;
using AliveCheck = std::function<bool(const NodeId&)>;

struct PipelineStats {
  uint64_t steps = 0;            // forward passes of the scheduler
  uint64_t stage_messages = 0;   // step messages sent to stages
  uint64_t bytes_sent = 0, bytes_received = 0;  // stage message payloads
  uint64_t recoveries = 0;       // failed steps recovered
  uint64_t replayed_tokens = 0;  // positions re-run to rebuild stage KV
  double last_recovery_ms = 0;   // failure seen -> step done on the new route
  std::vector<StageHop> route;   // the current route (empty: none yet)
  std::string last_failure;
};

class StageFailure : public std::runtime_error {
 public:
  StageFailure(NodeId node, const std::string& what) : std::runtime_error(what), node_(node) {}
  const NodeId& node() const { return node_; }

 private:
  NodeId node_;
};

class PipelineBatchModel : public BatchModel {
 public:
  // `local` runs layers [0, k) of the model with the embedding (0 <= k < n_layer). The transport
  // must stay alive as long as this object.
  PipelineBatchModel(Forward& local, Transport& transport, CandidateSource candidates, AliveCheck alive,
                     PipelineOptions opt);
  ~PipelineBatchModel() override;

  int n_vocab() const override;
  int n_ctx() const override;
  int n_slots() const override;
  std::span<const float> run(const Batch& batch) override;
  void truncate(int slot, int n) override;

  PipelineStats stats() const;
  // Whether a route exists right now (for readiness and status).
  bool route_available() const;

 private:
  struct Link;
  void run_chunk(const Batch& b, size_t out_offset);
  void ensure_route(bool recovering);
  void replay_missing(const Batch& b);
  void forward_through(const Batch& b, bool want_logits, size_t out_offset);
  StepReply exchange(Link& l, const StepRequest& req, bool last, int n_out);
  Link& link(size_t i);
  void drop_route(const std::string& why);

  Forward& local_;
  Transport& transport_;
  CandidateSource candidates_;
  AliveCheck alive_;
  PipelineOptions opt_;
  const ModelConfig& cfg_;

  std::vector<std::unique_ptr<Link>> links_;  // one per hop of route_
  std::vector<StageHop> route_;
  std::map<NodeId, std::chrono::steady_clock::time_point> avoid_;
  std::vector<std::vector<int32_t>> history_;  // per slot: the tokens its KV holds
  std::vector<int> remote_len_;                // per slot: positions the current route's stages hold
  std::vector<std::pair<int32_t, int32_t>> pending_truncate_;
  std::vector<float> logits_;
  uint64_t next_id_ = 1;

  mutable std::mutex stats_mu_;
  PipelineStats stats_;
};

}  // namespace llmesh::mesh::stages
