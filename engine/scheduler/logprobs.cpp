#include "scheduler/logprobs.h"

#include <cmath>

namespace llmesh {

void fill_logprobs(const float* logits, int n_vocab, int32_t chosen, int n_top, TokenEvent& ev) {
  float mx = logits[0];
  for (int i = 1; i < n_vocab; ++i) mx = logits[i] > mx ? logits[i] : mx;
  double sum = 0;  // double: the vocabulary can be 250k entries
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const float log_z = mx + static_cast<float>(std::log(sum));
  ev.logprob = logits[chosen] - log_z;

  // n_top is at most 20: keep a small sorted list instead of sorting the vocabulary.
  ev.top.clear();
  if (n_top <= 0) return;
  for (int i = 0; i < n_vocab; ++i) {
    const float l = logits[i];
    if (static_cast<int>(ev.top.size()) == n_top && !(l > ev.top.back().logprob)) continue;
    if (static_cast<int>(ev.top.size()) < n_top) ev.top.push_back({i, l});
    // Insertion step: move the new entry up past smaller ones (equal ones keep the lower id first).
    size_t j = ev.top.size() - 1;
    while (j > 0 && ev.top[j - 1].logprob < l) {
      ev.top[j] = ev.top[j - 1];
      --j;
    }
    ev.top[j] = {i, l};
  }
  for (auto& t : ev.top) t.logprob -= log_z;
}

}  // namespace llmesh
