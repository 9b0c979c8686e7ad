// AVX-512 kernels for the legacy family (placeholder: scalar entries stay in effect).
#include "kernels/legacy_quants.h"
namespace llmesh::kernels {
void register_legacy_avx512(TypeKernels*) {}
}  // namespace llmesh::kernels
