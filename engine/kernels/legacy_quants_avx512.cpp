// AVX-512 (F, BW, VL, DQ, VNNI) kernels of the legacy family: vpdpbusd int8 products for the
// block formats (Q8_0 weights as w + 128 with a -128 * sum(a) correction), 512-bit float kernels
// for F32/F16/BF16, and 512-bit activation quantization.
// GCC 12 flags its own _mm512_undefined_* placeholders inside the intrinsic headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/fp16.h"
#include "kernels/legacy_quants.h"

namespace llmesh::kernels {
namespace {
#include "kernels/legacy_quants_x86.inl"
}  // namespace

void register_legacy_avx512(TypeKernels* table) {
  auto at = [&](DType t) -> TypeKernels& { return table[static_cast<uint32_t>(t)]; };
  set_q4rows<Q4_0Fmt, 2, 4>(at(DType::Q4_0), quantize_q8_0);
  set_q4rows<Q5_0Fmt, 2, 4>(at(DType::Q5_0), quantize_q8_0);
  set_q4rows<Q4_1Fmt, 2, 2>(at(DType::Q4_1), quantize_q8_1);
  set_q4rows<Q5_1Fmt, 2, 2>(at(DType::Q5_1), quantize_q8_1);
  set_q4rows<Q8_0Fmt, 2, 4>(at(DType::Q8_0), quantize_q8_0);
  set_kernels<FTile<DType::F32>::template K, 4, 4>(at(DType::F32), nullptr);
  set_kernels<FTile<DType::F16>::template K, 4, 4>(at(DType::F16), nullptr);
  set_kernels<FTile<DType::BF16>::template K, 4, 4>(at(DType::BF16), nullptr);
}

}  // namespace llmesh::kernels
