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
  // Optional packed-panel path, used by multi-token matmul when n_tokens >= panel_min_tokens.
  // Activations are quantized by panel_quantize_act into panel_act_bytes(n) bytes per token (a
  // format private to the type). `panel` computes y[c * y_stride + r] = W[r] . A[c] for r < nr
  // (nr <= panel_rows) and every c < nc: it first packs the nr weight rows into a thread-local
  // buffer (never a persistent copy), then runs all nc tokens over that packed panel.
  size_t (*panel_act_bytes)(int64_t n) = nullptr;
  void (*panel_quantize_act)(const float* x, void* dst, int64_t n) = nullptr;
  void (*panel)(int64_t n, const void* w, size_t w_stride, int nr, const void* a, size_t a_stride,
                int64_t nc, float* y, size_t y_stride) = nullptr;
  int panel_rows = 0;
  int panel_min_tokens = 0;
};

// The entry used for (type, isa), after fallback; nullptr when the type is not computable.
const TypeKernels* type_kernels(DType t, Isa isa);

// Registration hooks, one per kernel family and ISA (defined in the family's files).
void register_legacy_kernels(TypeKernels* table /* [kDTypeIdLimit] */, Isa isa);
void register_kquant_kernels(TypeKernels* table /* [kDTypeIdLimit] */, Isa isa);

}  // namespace llmesh::kernels
