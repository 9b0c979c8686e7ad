// K-quant kernels (Q2_K..Q6_K with Q8_K activations). Placeholder until they land.
#include "kernels/registry.h"

namespace llmesh::kernels {
void register_kquant_kernels(TypeKernels*, Isa) {}
}  // namespace llmesh::kernels
