// Speculative decoding (docs/speculative.md): a cheap proposer drafts a window of tokens, the
// target model scores the whole window in one batched forward pass, and the scheduler keeps
// the longest prefix the target agrees with (greedy: token for token; sampling: the standard
// acceptance rule, engine/speculative/acceptance.h) plus one token of the target's own.
//
// A DraftSource is the proposer. The scheduler calls propose() once per step with every
// request that speculates in that step, so a draft model can batch them.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "sampling/sampler.h"

namespace llmesh {

struct DraftTask {
  // In
  int slot = 0;                        // the scheduler's slot (a proposer may keep per-slot state)
  std::span<const int32_t> context;    // the whole sequence: prompt, generated tokens, and last the
                                       // token the target is about to be fed (not in its KV yet)
  int max_tokens = 0;                  // the window: propose at most this many (>= 1)
  const SamplingParams* sampling = nullptr;  // the request's sampling; null or temperature <= 0: greedy
  // Out
  std::vector<int32_t> tokens;         // proposed continuation of `context` (may be empty)
  // Per proposed token, the distribution it was drawn from (the acceptance rule needs q(x)).
  // Empty: every token was chosen deterministically (a point mass, e.g. an n-gram lookup).
  std::vector<std::vector<TokenProb>> q;
};

class DraftSource {
 public:
  virtual ~DraftSource() = default;
  // For logs and metrics: "ngram", "draft stories260K-q4_0.gguf".
  virtual std::string name() const = 0;
  // Fills each task's tokens (and q when sampled). Called on the scheduler thread. Throwing
  // turns speculation off for this step only: the requests decode one token as usual.
  virtual void propose(std::span<DraftTask* const> tasks) = 0;
  // The slot's request ended: per-slot state may be kept (a later request may share its
  // prefix) or dropped.
  virtual void release(int slot) { (void)slot; }
};

}  // namespace llmesh
