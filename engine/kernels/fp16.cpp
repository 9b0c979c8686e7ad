// Exact half-precision conversions (IEEE binary16 and bfloat16); row versions use F16C /
// AVX-512 when the active ISA has them (same results: both round to nearest even).
#include "kernels/fp16.h"

#include "kernels/kernels.h"

namespace llmesh::kernels {

float fp16_to_fp32(uint16_t h) { return half_to_float(h); }
uint16_t fp32_to_fp16(float f) { return float_to_half(f); }
float bf16_to_fp32(uint16_t h) { return bfloat_to_float(h); }
uint16_t fp32_to_bf16(float f) { return float_to_bfloat(f); }

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
#if defined(__x86_64__)
  switch (active_isa()) {
    case Isa::Avx512: return fp32_to_fp16_row_avx512(x, y, n);
    case Isa::Avx2: return fp32_to_fp16_row_avx2(x, y, n);
    default: break;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = float_to_half(x[i]);
}

void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n) {
#if defined(__x86_64__)
  switch (active_isa()) {
    case Isa::Avx512: return fp16_to_fp32_row_avx512(x, y, n);
    case Isa::Avx2: return fp16_to_fp32_row_avx2(x, y, n);
    default: break;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = half_to_float(x[i]);
}

}  // namespace llmesh::kernels
