// The speculative-sampling acceptance rule (Leviathan et al. 2023, Chen et al. 2023): a token
// x drafted from q is kept with probability min(1, p(x) / q(x)); when it is not, the token
// comes from the residual max(0, p - q), renormalised. Whatever q is, the token that comes out
// is distributed exactly as p, the target's own sampling distribution, so speculation changes
// the speed and never the output distribution. Greedy decoding is the special case where p is
// a point mass: the draft is kept exactly when it is the target's argmax.
#pragma once
#include <cstdint>
#include <random>
#include <span>

#include "sampling/sampler.h"

namespace llmesh {

struct Verdict {
  bool accepted = false;  // the drafted token stands
  int32_t token = -1;     // the token that comes out: the drafted one, or the residual's pick
};

// p: the target's distribution at this position (Sampler::distribution: ids with p > 0).
// q: the distribution `drafted` was drawn from; empty means a point mass at `drafted`.
// Draws from `rng` only when the outcome is not already certain, so greedy stays
// deterministic.
Verdict speculative_accept(std::span<const TokenProb> p, int32_t drafted, std::span<const TokenProb> q,
                           std::mt19937_64& rng);

}  // namespace llmesh
