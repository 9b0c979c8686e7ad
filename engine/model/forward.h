// The transformer forward pass over a model's layer range [first, last).
//
// Input: token ids (when the range starts at layer 0) or hidden states from the previous
// pipeline stage. Output: logits for the tokens that ask for them (when the range ends with the
// head) or the hidden states after the range's last layer (to send to the next stage).
// A batch may mix several sequences (continuous batching) and several positions of one
// sequence (prefill, speculative verification); each token attends to its own sequence's
// cache up to its own position.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/thread_pool.h"
#include "model/expert_ffn.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace llmesh {

struct Batch {
  std::vector<int32_t> tokens;  // token ids; empty when `hidden` is the input
  std::vector<float> hidden;    // hidden states [n_tokens][n_embd] from the previous stage
  std::vector<int32_t> pos;     // position of each token in its sequence
  std::vector<int32_t> seq;     // sequence slot of each token
  std::vector<uint8_t> output;  // 1: return this token's logits (last stage only)
  // Optional, one per output token: how many of the largest logits the caller's sampling needs
  // (0: the whole row). A local forward pass ignores it; a pipeline's last stage sends only
  // those candidates back (docs/stages.md), so the rest of the row reads -infinity.
  std::vector<int32_t> out_top;

  int n_tokens() const { return static_cast<int>(pos.size()); }
  void add(int32_t token, int32_t p, int32_t s, bool want_logits) {
    tokens.push_back(token);
    pos.push_back(p);
    seq.push_back(s);
    output.push_back(want_logits ? 1 : 0);
  }
  void clear() {
    tokens.clear();
    hidden.clear();
    pos.clear();
    seq.clear();
    output.clear();
    out_top.clear();
  }
};

// Per-layer, per-expert routing statistics of a mixture-of-experts model (llmesh moe profile).
// Indexed [absolute layer * n_expert + expert].
struct ExpertStats {
  int n_layer = 0;
  int n_expert = 0;
  std::vector<double> gate_mass;   // sum over tokens of the router's probability for the expert
  std::vector<uint64_t> selected;  // tokens routed to the expert (it was in their top k)
  std::vector<uint64_t> tokens;    // [layer] tokens routed through the layer
  void reset(int layers, int experts);
};

// Experts this node does not hold, computed by the nodes that hold them (exact mode of a
// mixture-of-experts shard, docs/moe.md). Called from the forward pass's thread only.
class RemoteExperts {
 public:
  virtual ~RemoteExperts() = default;
  // Sets available[e] = 1 for each expert of layer `layer` (absolute) that can be computed
  // elsewhere now (a holder is connected and close enough). `available` has n_expert entries, 0.
  virtual void available(int layer, std::vector<uint8_t>& available) = 0;
  struct Call {
    int expert = 0;
    int n = 0;               // rows
    const float* in = nullptr;   // n rows of n_embd: the expert's input (after the FFN norm)
    float* out = nullptr;        // n rows of n_embd: the expert's output
  };
  // Runs every call; throws on any failure (the forward pass then routes the layer among the
  // experts it holds, as a shard without exact mode does).
  virtual void compute(int layer, const std::vector<Call>& calls) = 0;
};

struct RemoteExpertStats {
  uint64_t layers = 0;     // layer passes that used remote experts
  uint64_t rows = 0;       // token rows computed remotely
  uint64_t failures = 0;   // compute() failures (those layers fell back to the held experts)
  double seconds = 0;      // time inside compute()
};

class Forward {
 public:
  Forward(const Model& model, KvCache& cache, ThreadPool& pool);

  // Runs the batch through the layer range and updates the cache lengths. Returns logits
  // [n_out][n_vocab] (n_out = tokens with output=1, in batch order) when the model has the
  // head, else hidden states [n_tokens][n_embd]. The span stays valid until the next run().
  // Throws (std::invalid_argument, KvCacheFull) on a malformed batch, before touching state.
  std::span<const float> run(const Batch& batch);

  // Mixture of experts: add every routed token's statistics to `stats` (nullptr: stop). The
  // caller sizes it (reset) for the model's layers and experts.
  void collect_expert_stats(ExpertStats* stats);
  // Route only to `allowed[layer][expert] != 0` (absolute layers; empty: no restriction
  // beyond the experts the model holds), renormalising the router over them as a shard does:
  // evaluates a grouping on the full model without loading shards. Throws on a shape mismatch
  // or a layer with no expert allowed.
  void restrict_experts(std::vector<std::vector<uint8_t>> allowed);
  // Exact mode: route over every expert the model has, computing the ones this shard lacks
  // through `remote` (nullptr: off). Not combined with restrict_experts (its mask wins).
  void set_remote_experts(RemoteExperts* remote) { remote_ = remote; }
  const RemoteExpertStats& remote_expert_stats() const { return remote_stats_; }

  bool outputs_logits() const { return model_.has_head(); }
  const Model& model() const { return model_; }
  KvCache& cache() { return cache_; }

 private:
  void validate(const Batch& b) const;
  void embed(const Batch& b, int T);
  void attention(int il, const Batch& b, int T);
  void feed_forward(int il, int T);
  void moe(int il, const LayerWeights& w, int T);
  // Softmax over `allowed`, top k, weights into routed_ (router_logits_ is left intact).
  void route(const std::vector<int>& allowed, int T);
  void head(const Batch& b, int T);

  const Model& model_;
  const ModelConfig& cfg_;
  KvCache& cache_;
  ThreadPool& pool_;
  // Activations, grown to the largest batch seen.
  std::vector<float> x_, xb_, q_, k_, v_, att_, gate_, up_, logits_, rope_cos_, rope_sin_;
  std::vector<float> scores_;  // per thread: attention scores over the context
  // MoE scratch
  std::vector<float> router_, moe_out_, moe_in_, moe_gate_, moe_up_, moe_down_, shexp_gate_;
  std::vector<std::vector<std::pair<int, float>>> routed_;  // per expert: (token, weight)
  std::vector<int> expert_order_;
  std::vector<std::vector<int>> allowed_;  // per loaded layer: the experts routing may pick
  bool masked_ = false;                    // restrict_experts narrowed allowed_ below the held experts
  ExpertStats* stats_ = nullptr;
  RemoteExperts* remote_ = nullptr;
  RemoteExpertStats remote_stats_;
  std::vector<float> router_logits_, remote_in_, remote_out_;
  std::vector<uint8_t> remote_flags_;
  std::vector<int> routable_;
  std::vector<size_t> remote_offset_;  // per expert: first row in remote_in_/remote_out_
  std::unique_ptr<ExpertFfn> ffn_;
};

}  // namespace llmesh
