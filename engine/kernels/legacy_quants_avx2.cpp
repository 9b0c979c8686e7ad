// AVX2 (+FMA, F16C) kernels of the legacy family: activation quantization, dot products and
// register-blocked tiles for every type. Called only when the CPU has AVX2/FMA/F16C.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/fp16.h"
#include "kernels/legacy_quants.h"

namespace llmesh::kernels {
namespace {
#include "kernels/legacy_quants_x86.inl"

}  // namespace

void register_legacy_avx2(TypeKernels* table) {
  auto at = [&](DType t) -> TypeKernels& { return table[static_cast<uint32_t>(t)]; };
  set_q4rows<Q4_0Fmt, 2, 2>(at(DType::Q4_0), quantize_q8_0);
  set_q4rows<Q5_0Fmt, 1, 2>(at(DType::Q5_0), quantize_q8_0);
  set_q4rows<Q4_1Fmt, 1, 2>(at(DType::Q4_1), quantize_q8_1);
  set_q4rows<Q5_1Fmt, 1, 2>(at(DType::Q5_1), quantize_q8_1);
  set_q4rows<Q8_0SignFmt, 2, 2>(at(DType::Q8_0), quantize_q8_0);
  set_kernels<FTile<DType::F32>::template K, 4, 3>(at(DType::F32), nullptr);
  set_kernels<FTile<DType::F16>::template K, 4, 3>(at(DType::F16), nullptr);
  set_kernels<FTile<DType::BF16>::template K, 4, 3>(at(DType::BF16), nullptr);
}

}  // namespace llmesh::kernels
