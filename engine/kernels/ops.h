// Small numeric operations of the transformer forward pass (norms, RoPE, softmax, SwiGLU and
// the attention inner loops over an F16/F32 KV cache). Plain loops the compiler vectorises,
// with SIMD variants chosen at run time where they pay.
#pragma once
#include <cstdint>

namespace llmesh::ops {

// out = x / sqrt(mean(x^2) + eps) * w   (out may alias x)
void rmsnorm(float* out, const float* x, const float* w, int n, float eps);
// In-place softmax of n values.
void softmax(float* x, int n);
// out[i] = silu(gate[i]) * up[i]   (out may alias gate)
void swiglu(float* out, const float* gate, const float* up, int n);
// Rotates each of n_heads heads of x (head_dim apart) by the angles whose cos/sin are given
// for the first rope_dims dimensions (rope_dims/2 pairs). neox: pairs (i, i + rope_dims/2);
// otherwise adjacent pairs (2i, 2i+1).
void rope(float* x, int n_heads, int head_dim, int rope_dims, const float* cos, const float* sin,
          bool neox);
// cos/sin of position `pos` for rope_dims/2 frequencies base^(-2i/rope_dims), times freq_scale,
// each divided by freq_factors[i] when given (Llama 3.1 long-context scaling).
void rope_angles(float* cos, float* sin, int rope_dims, int pos, float base, float freq_scale,
                 const float* freq_factors = nullptr);

float dot_f32(const float* a, const float* b, int n);
float dot_f16(const float* a, const uint16_t* b, int n);  // b is IEEE half
void axpy_f32(float* y, float a, const float* x, int n);  // y += a * x
void axpy_f16(float* y, float a, const uint16_t* x, int n);

}  // namespace llmesh::ops
