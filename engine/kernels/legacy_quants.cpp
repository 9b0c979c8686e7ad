// Scalar reference kernels for F32/F16/BF16 and the 32-element block formats (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0). Every SIMD variant is tested against these.
//
// Products: Q4_0/Q5_0/Q8_0 weights with Q8_0 activations, Q4_1/Q5_1 with Q8_1 activations; per
// block the integer dot product is exact and scaled as (d_w * d_a) * isum (+ m_w * s_a), then
// blocks are summed in order. F32/F16/BF16 weights take F32 activations.
#include <cmath>
#include <cstring>

#include "kernels/fp16.h"
#include "kernels/legacy_quants.h"

namespace llmesh::kernels {
namespace {

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- dequantization ---------------------------------------------------------------------

void dequant_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

void dequant_f16(const void* src, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(h[i]);
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bfloat_to_float(h[i]);
}

void dequant_q4_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>((b[i].qs[j] & 0x0F) - 8) * d;
      dst[j + 16] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = half_to_float(b[i].d), m = half_to_float(b[i].m);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>(b[i].qs[j] & 0x0F) * d + m;
      dst[j + 16] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequant_q5_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = half_to_float(b[i].d);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int lo = (b[i].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (b[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      dst[j] = static_cast<float>(lo - 16) * d;
      dst[j + 16] = static_cast<float>(hi - 16) * d;
    }
  }
}

void dequant_q5_1(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = half_to_float(b[i].d), m = half_to_float(b[i].m);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int lo = (b[i].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (b[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      dst[j] = static_cast<float>(lo) * d + m;
      dst[j + 16] = static_cast<float>(hi) * d + m;
    }
  }
}

void dequant_q8_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < kQK; ++j) dst[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

// ---- activations ------------------------------------------------------------------------

void quantize_f32(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, n * sizeof(float)); }

// Quantizes 32 values: returns the fp32 scale, writes q = round_half_even(x / d).
inline float quantize_block(const float* x, int8_t* q) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK; ++j) q[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
  return d;
}

// ---- dot products -----------------------------------------------------------------------

float dot_f32(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);
  const auto* y = static_cast<const float*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

float dot_f16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const float*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += half_to_float(x[i]) * y[i];
  return s;
}

float dot_bf16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const float*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += bfloat_to_float(x[i]) * y[i];
  return s;
}

float dot_q4_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int isum = 0;
    for (int j = 0; j < 16; ++j)
      isum += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
    s += (half_to_float(x[i].d) * half_to_float(y[i].d)) * static_cast<float>(isum);
  }
  return s;
}

float dot_q4_1(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_1*>(w);
  const auto* y = static_cast<const BlockQ8_1*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int isum = 0;
    for (int j = 0; j < 16; ++j) isum += (x[i].qs[j] & 0x0F) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + 16];
    s += (half_to_float(x[i].d) * half_to_float(y[i].d)) * static_cast<float>(isum) +
         half_to_float(x[i].m) * half_to_float(y[i].s);
  }
  return s;
}

float dot_q5_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint32_t qh = load_u32(x[i].qh);
    int isum = 0;
    for (int j = 0; j < 16; ++j) {
      const int lo = ((x[i].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4)) - 16;
      const int hi = ((x[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4)) - 16;
      isum += lo * y[i].qs[j] + hi * y[i].qs[j + 16];
    }
    s += (half_to_float(x[i].d) * half_to_float(y[i].d)) * static_cast<float>(isum);
  }
  return s;
}

float dot_q5_1(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_1*>(w);
  const auto* y = static_cast<const BlockQ8_1*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint32_t qh = load_u32(x[i].qh);
    int isum = 0;
    for (int j = 0; j < 16; ++j) {
      const int lo = (x[i].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (x[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      isum += lo * y[i].qs[j] + hi * y[i].qs[j + 16];
    }
    s += (half_to_float(x[i].d) * half_to_float(y[i].d)) * static_cast<float>(isum) +
         half_to_float(x[i].m) * half_to_float(y[i].s);
  }
  return s;
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int isum = 0;
    for (int j = 0; j < kQK; ++j) isum += x[i].qs[j] * y[i].qs[j];
    s += (half_to_float(x[i].d) * half_to_float(y[i].d)) * static_cast<float>(isum);
  }
  return s;
}

void set(TypeKernels* table, DType t, DType act, void (*deq)(const void*, float*, int64_t),
         void (*qa)(const float*, void*, int64_t), float (*dot)(int64_t, const void*, const void*)) {
  TypeKernels& k = table[static_cast<uint32_t>(t)];
  k = TypeKernels{};
  k.act = act;
  k.dequantize = deq;
  k.quantize_act = qa;
  k.vec_dot = dot;
}

}  // namespace

void quantize_row_q8_0_scalar(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i) b[i].d = float_to_half(quantize_block(x + i * kQK, b[i].qs));
}

void quantize_row_q8_1_scalar(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = quantize_block(x + i * kQK, b[i].qs);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) sum += b[i].qs[j];
    b[i].d = float_to_half(d);
    b[i].s = float_to_half(d * static_cast<float>(sum));
  }
}

void register_legacy_kernels(TypeKernels* table, Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      set(table, DType::F32, DType::F32, dequant_f32, quantize_f32, dot_f32);
      set(table, DType::F16, DType::F32, dequant_f16, quantize_f32, dot_f16);
      set(table, DType::BF16, DType::F32, dequant_bf16, quantize_f32, dot_bf16);
      set(table, DType::Q4_0, DType::Q8_0, dequant_q4_0, quantize_row_q8_0_scalar, dot_q4_0);
      set(table, DType::Q4_1, DType::Q8_1, dequant_q4_1, quantize_row_q8_1_scalar, dot_q4_1);
      set(table, DType::Q5_0, DType::Q8_0, dequant_q5_0, quantize_row_q8_0_scalar, dot_q5_0);
      set(table, DType::Q5_1, DType::Q8_1, dequant_q5_1, quantize_row_q8_1_scalar, dot_q5_1);
      set(table, DType::Q8_0, DType::Q8_0, dequant_q8_0, quantize_row_q8_0_scalar, dot_q8_0);
      break;
#if defined(__x86_64__)
    case Isa::Avx2: register_legacy_avx2(table); break;
    case Isa::Avx512: register_legacy_avx512(table); break;
#endif
#if defined(__aarch64__)
    case Isa::Neon: register_legacy_neon(table); break;
#endif
    default: break;
  }
}

}  // namespace llmesh::kernels
