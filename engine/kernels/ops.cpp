#include "kernels/ops.h"

#include <cmath>

#include "kernels/kernels.h"

namespace llmesh::ops {

#if defined(__x86_64__)
namespace avx2 {  // ops_avx2.cpp
float dot_f32(const float* a, const float* b, int n);
float dot_f16(const float* a, const uint16_t* b, int n);
void axpy_f32(float* y, float a, const float* x, int n);
void axpy_f16(float* y, float a, const uint16_t* x, int n);
void swiglu(float* out, const float* gate, const float* up, int n);
float exp_sum(float* x, int n, float mx);
}  // namespace avx2
#define LLMESH_SIMD_OPS(call) \
  if (kernels::active_isa() != kernels::Isa::Scalar) return avx2::call
#else
#define LLMESH_SIMD_OPS(call) ((void)0)
#endif

namespace {

// Exact half -> float for all 65536 values, built once (256 KiB, hot in L2 for attention).
struct HalfTable {
  float v[65536];
  HalfTable() {
    for (uint32_t i = 0; i < 65536; ++i) v[i] = kernels::fp16_to_fp32(static_cast<uint16_t>(i));
  }
};
const float* half_table() {
  static const HalfTable t;
  return t.v;
}

}  // namespace

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  double ss = 0;  // double: n can be 8192 and the values large
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

void softmax(float* x, int n) {
  float mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
#if defined(__x86_64__)
  if (kernels::active_isa() != kernels::Isa::Scalar) {
    sum = avx2::exp_sum(x, n, mx);
  } else
#endif
  {
    for (int i = 0; i < n; ++i) {
      x[i] = std::exp(x[i] - mx);
      sum += x[i];
    }
  }
  float inv = static_cast<float>(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu(float* out, const float* gate, const float* up, int n) {
  LLMESH_SIMD_OPS(swiglu(out, gate, up, n));
  for (int i = 0; i < n; ++i) {
    float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void rope_angles(float* cos, float* sin, int rope_dims, int pos, float base, float freq_scale,
                 const float* freq_factors) {
  for (int i = 0; i < rope_dims / 2; ++i) {
    double freq = std::pow(static_cast<double>(base), -2.0 * i / rope_dims);
    if (freq_factors) freq /= freq_factors[i];
    double a = static_cast<double>(pos) * freq_scale * freq;
    cos[i] = static_cast<float>(std::cos(a));
    sin[i] = static_cast<float>(std::sin(a));
  }
}

void rope(float* x, int n_heads, int head_dim, int rope_dims, const float* cos, const float* sin,
          bool neox) {
  const int half = rope_dims / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      int a = neox ? i : 2 * i;
      int b = neox ? i + half : 2 * i + 1;
      float x0 = v[a], x1 = v[b];
      v[a] = x0 * cos[i] - x1 * sin[i];
      v[b] = x0 * sin[i] + x1 * cos[i];
    }
  }
}

float dot_f32(const float* a, const float* b, int n) {
  LLMESH_SIMD_OPS(dot_f32(a, b, n));
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float dot_f16(const float* a, const uint16_t* b, int n) {
  LLMESH_SIMD_OPS(dot_f16(a, b, n));
  const float* t = half_table();
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * t[b[i]];
  return s;
}

void axpy_f32(float* y, float a, const float* x, int n) {
  LLMESH_SIMD_OPS(axpy_f32(y, a, x, n));
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float* y, float a, const uint16_t* x, int n) {
  LLMESH_SIMD_OPS(axpy_f16(y, a, x, n));
  const float* t = half_table();
  for (int i = 0; i < n; ++i) y[i] += a * t[x[i]];
}

}  // namespace llmesh::ops
