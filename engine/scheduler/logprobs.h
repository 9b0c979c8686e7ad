// Log-probabilities reported with generated tokens: log-softmax of the model's raw logits
// (before logit bias, penalties and temperature), so they describe the model, not the sampler.
#pragma once
#include <cstdint>
#include <vector>

#include "scheduler/scheduler.h"

namespace llmesh {

// Fills ev.logprob (of `chosen`) and ev.top (the n_top most likely tokens, most likely first;
// ties: lower id first). Reuses ev.top's storage.
void fill_logprobs(const float* logits, int n_vocab, int32_t chosen, int n_top, TokenEvent& ev);

}  // namespace llmesh
