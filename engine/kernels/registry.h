// Internal: per-type kernel entries that matmul/dequantize dispatch through.
// Each weight type registers, for each ISA it has code for, the functions below; an ISA
// without an entry falls back to the next narrower one (avx512 -> avx2 -> scalar).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace llmesh::kernels {

struct TypeKernels {
  DType act = DType::F32;  // activation format for this weight type
  // Exact dequantization (n a whole number of blocks).
  void (*dequantize)(const void* src, float* dst, int64_t n) = nullptr;
  // Activation quantization into `act`.
  void (*quantize_act)(const float* x, void* dst, int64_t n) = nullptr;
  // One weight row . one activation row.
  float (*vec_dot)(int64_t n, const void* w, const void* a) = nullptr;
  // Optional register-blocked tile: y[c * y_stride + r] = W[r] . A[c] for r < nr, c < nc,
  // nr <= tile_rows, nc <= tile_cols. Weight rows w_stride bytes apart, activation rows
  // a_stride bytes apart. Used by multi-token matmul when present.
  void (*tile)(int64_t n, const void* w, size_t w_stride, int nr, const void* a, size_t a_stride,
               int nc, float* y, size_t y_stride) = nullptr;
  int tile_rows = 0;
  int tile_cols = 0;
};

// The entry used for (type, isa), after fallback; nullptr when the type is not computable.
const TypeKernels* type_kernels(DType t, Isa isa);

// Registration hooks, one per kernel family and ISA (defined in the family's files).
void register_legacy_kernels(TypeKernels* table /* [kDTypeIdLimit] */, Isa isa);
void register_kquant_kernels(TypeKernels* table /* [kDTypeIdLimit] */, Isa isa);

}  // namespace llmesh::kernels
