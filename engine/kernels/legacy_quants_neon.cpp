// NEON (AArch64) kernels of the legacy family: Q8_0/Q8_1 activation quantization (bit-identical
// to the scalar reference: round half to even via vcvtnq), Q4_0/Q5_0/Q8_0/Q4_1/Q5_1 dot products
// with widening int8 multiplies, and F32/F16 dot products. Types and kernels not listed keep
// their scalar entries. Built only on arm64.
#if defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>

#include <cstring>
#include <type_traits>

#include "kernels/fp16.h"
#include "kernels/legacy_quants.h"

namespace llmesh::kernels {
namespace {

// Sum of the 16 int8 products a*b, as int32 (int16 products cannot overflow: |a*b| <= 128*127).
inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
  acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  return vpadalq_s16(acc, vmull_s8(vget_high_s8(a), vget_high_s8(b)));
}

inline float quantize_block(const float* x, int8_t* q, int* sum) {
  float32x4_t v[8];
  float32x4_t m = vdupq_n_f32(0.0f);
  for (int i = 0; i < 8; ++i) {
    v[i] = vld1q_f32(x + 4 * i);
    m = vmaxq_f32(m, vabsq_f32(v[i]));
  }
  const float amax = vmaxvq_f32(m);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int32x4_t s = vdupq_n_s32(0);
  for (int i = 0; i < 8; i += 2) {
    const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(v[i], id));
    const int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
    s = vaddq_s32(s, vaddq_s32(a, b));
    const int16x8_t h = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
    vst1_s8(q + 4 * i, vmovn_s16(h));
  }
  if (sum) *sum = vaddvq_s32(s);
  return d;
}

void quantize_q8_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i) b[i].d = float_to_half(quantize_block(x + i * kQK, b[i].qs, nullptr));
}

void quantize_q8_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i) {
    int sum = 0;
    const float d = quantize_block(x + i * kQK, b[i].qs, &sum);
    b[i].d = float_to_half(d);
    b[i].s = float_to_half(d * static_cast<float>(sum));
  }
}

// Signed weight bytes of one block, elements 0..15 and 16..31.
inline void nibbles(const uint8_t* qs, int8x16_t* lo, int8x16_t* hi) {
  const uint8x16_t q = vld1q_u8(qs);
  *lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
  *hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
}

// Fifth bits (as 0x10) of elements 0..15 and 16..31 from the 32-bit mask.
inline void fifth_bits(const uint8_t* qh, int8x16_t* lo, int8x16_t* hi) {
  uint32_t m;
  std::memcpy(&m, qh, 4);
  alignas(16) static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bit = vld1q_u8(kBit);
  const uint8x16_t b01 = vcombine_u8(vdup_n_u8(static_cast<uint8_t>(m)), vdup_n_u8(static_cast<uint8_t>(m >> 8)));
  const uint8x16_t b23 =
      vcombine_u8(vdup_n_u8(static_cast<uint8_t>(m >> 16)), vdup_n_u8(static_cast<uint8_t>(m >> 24)));
  *lo = vreinterpretq_s8_u8(vandq_u8(vtstq_u8(b01, bit), vdupq_n_u8(0x10)));
  *hi = vreinterpretq_s8_u8(vandq_u8(vtstq_u8(b23, bit), vdupq_n_u8(0x10)));
}

template <int kOffset, bool kFifth>
float dot_q_offset(int64_t n, const void* w, const void* a) {
  using W = std::conditional_t<kFifth, BlockQ5_0, BlockQ4_0>;
  const auto* x = static_cast<const W*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float32x4_t acc = vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < n / kQK; ++i) {
    int8x16_t lo, hi;
    nibbles(x[i].qs, &lo, &hi);
    if constexpr (kFifth) {
      int8x16_t hl, hh;
      fifth_bits(x[i].qh, &hl, &hh);
      lo = vorrq_s8(lo, hl);
      hi = vorrq_s8(hi, hh);
    }
    lo = vsubq_s8(lo, vdupq_n_s8(kOffset));
    hi = vsubq_s8(hi, vdupq_n_s8(kOffset));
    int32x4_t p = dot16(vdupq_n_s32(0), lo, vld1q_s8(y[i].qs));
    p = dot16(p, hi, vld1q_s8(y[i].qs + 16));
    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), half_to_float(x[i].d) * half_to_float(y[i].d));
  }
  return vaddvq_f32(acc);
}

template <bool kFifth>
float dot_q_min(int64_t n, const void* w, const void* a) {
  using W = std::conditional_t<kFifth, BlockQ5_1, BlockQ4_1>;
  const auto* x = static_cast<const W*>(w);
  const auto* y = static_cast<const BlockQ8_1*>(a);
  float32x4_t acc = vdupq_n_f32(0.0f);
  float macc = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int8x16_t lo, hi;
    nibbles(x[i].qs, &lo, &hi);
    if constexpr (kFifth) {
      int8x16_t hl, hh;
      fifth_bits(x[i].qh, &hl, &hh);
      lo = vorrq_s8(lo, hl);
      hi = vorrq_s8(hi, hh);
    }
    int32x4_t p = dot16(vdupq_n_s32(0), lo, vld1q_s8(y[i].qs));
    p = dot16(p, hi, vld1q_s8(y[i].qs + 16));
    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), half_to_float(x[i].d) * half_to_float(y[i].d));
    macc += half_to_float(x[i].m) * half_to_float(y[i].s);
  }
  return vaddvq_f32(acc) + macc;
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float32x4_t acc = vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < n / kQK; ++i) {
    int32x4_t p = dot16(vdupq_n_s32(0), vld1q_s8(x[i].qs), vld1q_s8(y[i].qs));
    p = dot16(p, vld1q_s8(x[i].qs + 16), vld1q_s8(y[i].qs + 16));
    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), half_to_float(x[i].d) * half_to_float(y[i].d));
  }
  return vaddvq_f32(acc);
}

float dot_f32(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);
  const auto* y = static_cast<const float*>(a);
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(x + i), vld1q_f32(y + i));
    acc1 = vfmaq_f32(acc1, vld1q_f32(x + i + 4), vld1q_f32(y + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

float dot_f16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const float*>(a);
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
    acc0 = vfmaq_f32(acc0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(y + i));
    acc1 = vfmaq_f32(acc1, vcvt_f32_f16(vget_high_f16(h)), vld1q_f32(y + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < n; ++i) s += half_to_float(x[i]) * y[i];
  return s;
}

}  // namespace

void register_legacy_neon(TypeKernels* table) {
  auto at = [&](DType t) -> TypeKernels& { return table[static_cast<uint32_t>(t)]; };
  at(DType::Q4_0).quantize_act = quantize_q8_0;
  at(DType::Q4_0).vec_dot = dot_q_offset<8, false>;
  at(DType::Q5_0).quantize_act = quantize_q8_0;
  at(DType::Q5_0).vec_dot = dot_q_offset<16, true>;
  at(DType::Q8_0).quantize_act = quantize_q8_0;
  at(DType::Q8_0).vec_dot = dot_q8_0;
  at(DType::Q4_1).quantize_act = quantize_q8_1;
  at(DType::Q4_1).vec_dot = dot_q_min<false>;
  at(DType::Q5_1).quantize_act = quantize_q8_1;
  at(DType::Q5_1).vec_dot = dot_q_min<true>;
  at(DType::F32).vec_dot = dot_f32;
  at(DType::F16).vec_dot = dot_f16;
}

}  // namespace llmesh::kernels
#endif
