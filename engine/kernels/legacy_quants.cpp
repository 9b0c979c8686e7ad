// Kernels for F32/F16/BF16 and the 32-element block formats. Placeholder until they land.
#include "kernels/registry.h"

namespace llmesh::kernels {
void register_legacy_kernels(TypeKernels*, Isa) {}
}  // namespace llmesh::kernels
