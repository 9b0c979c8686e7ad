// BENCHMARKING AID, not a proposer for serving: forces a chosen acceptance rate on any
// proposer, so the speed of speculative decoding can be measured against acceptance on models
// whose own drafts are meaningless (random-weight synthetic GGUFs of real shapes, where a
// random draft is almost never right and a perfect draft does not exist).
//
// ForcedAcceptanceDraft wraps a real DraftSource and a reference continuation: the target's
// own greedy tokens for this prompt, computed beforehand by a plain run. The inner proposer
// still runs (its propose() is called with the same tasks, so the draft model's real cost is
// paid, its KV follows the sequence as usual), then each token it drafted is replaced by the
// reference token at that position with probability `rate`, else by a token that differs from
// it. Under greedy verification a drafted token is then kept exactly when it is the reference
// token (while the sequence still follows the reference), so per-token acceptance is ~rate.
//
// The window length stays the inner proposer's (a draft model drafts what it was asked; an
// n-gram lookup often drafts nothing), and it is cut where the reference ends. The choice of
// kept or replaced comes from a deterministic RNG (seeded), so runs are repeatable.
//
// Used by `llmesh bench --spec-accept` (cli/bench.cpp). Only meaningful for greedy requests
// whose prompt is the one the reference was computed for; `q` is cleared (the forced tokens
// are point masses).
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "speculative/draft_source.h"

namespace llmesh {

class ForcedAcceptanceDraft : public DraftSource {
 public:
  // `inner` must outlive this object. `reference`: the target's greedy continuation of a
  // prompt of `prompt_len` tokens. `rate` in [0, 1].
  ForcedAcceptanceDraft(DraftSource& inner, std::vector<int32_t> reference, int prompt_len, double rate,
                        int n_vocab, uint64_t seed = 0x5eed);

  std::string name() const override;
  void propose(std::span<DraftTask* const> tasks) override;
  void release(int slot) override { inner_.release(slot); }

  double rate() const { return rate_; }
  // Drafted tokens so far that were set to the reference token / to another token.
  uint64_t forced_right() const { return right_; }
  uint64_t forced_wrong() const { return wrong_; }

 private:
  DraftSource& inner_;
  std::vector<int32_t> reference_;
  int prompt_len_;
  double rate_;
  int n_vocab_;
  std::mt19937_64 rng_;
  uint64_t right_ = 0, wrong_ = 0;
};

}  // namespace llmesh
