#include "model/expert_ffn.h"

#include "kernels/ops.h"

namespace llmesh {

void ExpertFfn::run(const kernels::MatView& gate, const kernels::MatView& up, const kernels::MatView& down, int n_embd,
                    int ff, const float* in, int n, float* out) {
  const size_t need = static_cast<size_t>(n) * ff;
  if (gate_.size() < need) gate_.resize(need);
  if (up_.size() < need) up_.resize(need);
  kernels::matmul(gate, in, n_embd, n, gate_.data(), ff, pool_);
  kernels::matmul(up, in, n_embd, n, up_.data(), ff, pool_);
  ops::swiglu(gate_.data(), gate_.data(), up_.data(), n * ff);
  kernels::matmul(down, gate_.data(), ff, n, out, n_embd, pool_);
}

}  // namespace llmesh
