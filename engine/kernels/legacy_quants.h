// Internal: block layouts of the 32-element ("legacy") formats, byte-compatible with GGUF files,
// and the per-ISA registration entry points of this family. All fields little-endian.
#pragma once
#include <cstdint>

#include "kernels/registry.h"

namespace llmesh::kernels {

inline constexpr int kQK = 32;  // elements per block

// x[j] = (q[j] - 8) * d; q[j] = qs[j] & 15 for j < 16, qs[j-16] >> 4 for j >= 16.
struct BlockQ4_0 {
  uint16_t d;  // fp16
  uint8_t qs[16];
};
// x[j] = q[j] * d + m (q as in Q4_0).
struct BlockQ4_1 {
  uint16_t d, m;  // fp16
  uint8_t qs[16];
};
// x[j] = (q[j] - 16) * d; q[j] = nibble as in Q4_0 | (bit j of qh) << 4.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // 32-bit mask of fifth bits, element j at bit j
  uint8_t qs[16];
};
// x[j] = q[j] * d + m (q as in Q5_0).
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
// x[j] = qs[j] * d.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
// Activations for Q4_1/Q5_1: x[j] ~ qs[j] * d; s = d * sum(qs) (both fp16).
struct BlockQ8_1 {
  uint16_t d, s;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);

// Scalar activation quantizers; SIMD versions must produce identical bytes (round half to even
// of x * (1/d), d = max|x| / 127 computed in fp32).
void quantize_row_q8_0_scalar(const float* x, void* dst, int64_t n);
void quantize_row_q8_1_scalar(const float* x, void* dst, int64_t n);

void register_legacy_avx2(TypeKernels* table);
void register_legacy_avx512(TypeKernels* table);
void register_legacy_neon(TypeKernels* table);

}  // namespace llmesh::kernels
