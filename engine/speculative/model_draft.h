// A draft model as proposer: any GGUF sharing the target's vocabulary (checked at load), run on
// the node that samples (the entry of a split model). It keeps one KV sequence per scheduler
// slot and follows the target's sequence: each propose() feeds what the draft has not seen
// (rolling back its own rejected drafts first) and then drafts one token per step for every
// speculating request at once.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/thread_pool.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "speculative/draft_source.h"

namespace llmesh {

// Throws std::invalid_argument naming the first difference (vocabulary size, tokenizer type,
// a token's text) when `draft` cannot propose token ids for `target`.
void check_same_vocabulary(const GgufFile& target, int target_n_vocab, const GgufFile& draft, int draft_n_vocab,
                           const std::string& draft_label);

struct ModelDraftOptions {
  int n_slots = 1;            // the scheduler's slots
  int n_ctx = 2048;           // positions per slot (the target's context)
  DType kv_type = DType::F16;
  // Greedy requests: stop a window early when the draft's own top token has less probability
  // than this (0: never). A hesitant draft is usually wrong, and each drafted token costs a
  // draft step and a verified position.
  float p_min = 0.0f;
  int batch = 512;            // catch-up tokens per propose() call (a new prompt takes several)
};

class ModelDraft : public DraftSource {
 public:
  // `pool` runs the draft's forward passes; it may be the target's pool (the scheduler runs
  // draft and target one after the other).
  ModelDraft(std::shared_ptr<const Model> model, std::string label, ThreadPool& pool, const ModelDraftOptions& opt);
  std::string name() const override { return "draft " + label_; }
  void propose(std::span<DraftTask* const> tasks) override;
  void release(int slot) override;

  const Model& model() const { return *model_; }
  size_t kv_bytes() const { return cache_.bytes(); }

 private:
  struct Work;
  void decide(Work& w, const float* row);

  std::shared_ptr<const Model> model_;
  std::string label_;
  ModelDraftOptions opt_;
  KvCache cache_;
  Forward fwd_;
  int n_vocab_;
  std::vector<std::vector<int32_t>> held_;  // per slot: the tokens the draft's KV holds
  std::mt19937_64 rng_;
  Batch batch_;
};

}  // namespace llmesh
