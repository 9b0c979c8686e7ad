// One feed-forward expert (SwiGLU) over n gathered rows: out = W_down (silu(W_gate x) * W_up x).
// The forward pass runs every expert through it, and so does a node computing experts for a
// peer (exact mode, docs/moe.md), so both give the same bits for the same rows.
#pragma once
#include <vector>

#include "kernels/kernels.h"
#include "kernels/thread_pool.h"

namespace llmesh {

class ExpertFfn {
 public:
  explicit ExpertFfn(ThreadPool& pool) : pool_(pool) {}
  // in: n rows of n_embd; out: n rows of n_embd (may not alias in). ff: the expert's width.
  void run(const kernels::MatView& gate, const kernels::MatView& up, const kernels::MatView& down, int n_embd, int ff,
           const float* in, int n, float* out);

 private:
  ThreadPool& pool_;
  std::vector<float> gate_, up_;
};

}  // namespace llmesh
