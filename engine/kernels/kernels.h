// The engine's numeric kernels: dequantization, activation quantization and matrix products
// on quantized weights. All SIMD lives under engine/kernels/; the model code never sees an
// intrinsic. One scalar reference implementation exists for every kernel (tests compare against
// it); AVX2, AVX-512 (VNNI where present) and NEON variants are picked at run time.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/thread_pool.h"
#include "tensor/dtype.h"

namespace llmesh::kernels {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };
const char* isa_name(Isa isa);
Isa detected_isa();   // the widest the CPU supports (and this build has)
Isa active_isa();     // what the kernels use now: detected, or LLMESH_ISA=scalar|avx2|avx512, or forced
void force_isa(Isa isa);  // tests and benchmarks; throws if the CPU lacks it
bool isa_supported(Isa isa);

// Whether weights of type `t` can be used in matmul / dequantize_row.
bool is_computable(DType t);

// Exact dequantization of n elements (a whole number of blocks) per the block-format definitions.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Activations are quantized to this type before a product with weights of type `w`
// (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F32 for F32/F16/BF16).
DType act_type(DType w);
// Bytes needed for one activation row of n elements in act_type(w).
size_t act_row_bytes(DType w, int64_t n);
// Quantizes one activation row for weights of type `w`.
void quantize_act_row(DType w, const float* x, void* dst, int64_t n);
// Dot product of one weight row (type w, n elements) with one activation row from quantize_act_row.
float vec_dot(DType w, int64_t n, const void* w_row, const void* act_row);

// A 2-D weight matrix view: `rows` rows of `cols` elements, each row `row_bytes` apart.
struct MatView {
  DType type = DType::F32;
  int64_t cols = 0;
  int64_t rows = 0;
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;
};

// Y[t][r] = sum_c W[r][c] * X[t][c], for t < n_tokens and r < W.rows.
// X rows are x_stride floats apart, Y rows y_stride floats apart.
// Activations are quantized once per call; rows are split among the pool's threads;
// multi-token calls are cache-blocked (a tile of weight rows is reused across tokens).
void matmul(const MatView& W, const float* X, int64_t x_stride, int64_t n_tokens, float* Y,
            int64_t y_stride, ThreadPool& pool);

// Rows of W selected per token: Y[t][r] for r in [row_begin, row_end) only (used for a
// vocabulary slice or MoE). Same semantics as matmul restricted to those rows.
void matmul_rows(const MatView& W, int64_t row_begin, int64_t row_end, const float* X,
                 int64_t x_stride, int64_t n_tokens, float* Y, int64_t y_stride, ThreadPool& pool);

// Half-precision conversions (IEEE binary16 and bfloat16), exact.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);  // round to nearest even
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n);
void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n);

}  // namespace llmesh::kernels
