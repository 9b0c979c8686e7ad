// K-quant kernels, NEON (AArch64): Q4_K, Q5_K and Q6_K dot products with Q8_K activations.
// Q2_K and Q3_K use the scalar kernels on ARM for now.
// Codes are unpacked to signed bytes (Q4_K/Q5_K codes are small and non-negative, Q6_K codes
// are stored - 32 directly), multiplied with the Q8_K bytes by sdot where the build has the
// dot-product extension, else by smull + sadalp, and each sub-block's int32 partial is
// weighted by its integer scale with one multiply-accumulate.
#if defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>

#include "kernels/kquant_blocks.h"

namespace llmesh::kernels::kq {
namespace {

inline float fp16(uint16_t h) { return half_to_float(h); }

// acc + the 4-lane partial sums of a[i] * b[i] over 16 bytes.
inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  const int16x8_t hi = vmull_high_s8(a, b);
  return vpadalq_s16(vpadalq_s16(acc, lo), hi);
#endif
}

// Q4_K / Q5_K: 8 sub-blocks of 32.
template <bool kFive, typename Block>
float dot_q45(int64_t n, const Block* x, const BlockQ8K* y) {
  const uint8x16_t m4 = vdupq_n_u8(0x0f);
  const uint8x16_t one = vdupq_n_u8(1);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    uint8_t sc[8], mn[8];
    unpack_scale_min_k4(x->scales, sc, mn);
    // mins . (pair sums of the block sums)
    const int16x8_t bs_lo = vld1q_s16(y->bsums), bs_hi = vld1q_s16(y->bsums + 8);
    const int16x8_t pairs = vpaddq_s16(bs_lo, bs_hi);
    const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
    const int32x4_t mprod = vmlal_s16(vmull_s16(vget_low_s16(pairs), vget_low_s16(mins)), vget_high_s16(pairs),
                                      vget_high_s16(mins));
    const int32_t msum = vaddvq_s32(mprod);
    uint8x16_t qh0, qh1;
    if constexpr (kFive) {
      qh0 = vld1q_u8(x->qh);
      qh1 = vld1q_u8(x->qh + 16);
    }
    int32x4_t acc = vdupq_n_s32(0);
    const int8_t* q8 = y->qs;
    for (int c = 0; c < 4; ++c) {
      const uint8x16_t b0 = vld1q_u8(x->qs + 32 * c), b1 = vld1q_u8(x->qs + 32 * c + 16);
      uint8x16_t l0 = vandq_u8(b0, m4), l1 = vandq_u8(b1, m4);
      uint8x16_t h0 = vshrq_n_u8(b0, 4), h1 = vshrq_n_u8(b1, 4);
      if constexpr (kFive) {
        // fifth bit of sub-block s is bit s of qh[l]; s = 2c (low nibbles), 2c+1 (high)
        const int8x16_t sl = vdupq_n_s8(static_cast<int8_t>(-2 * c)), sh = vdupq_n_s8(static_cast<int8_t>(-2 * c - 1));
        l0 = vorrq_u8(l0, vshlq_n_u8(vandq_u8(vshlq_u8(qh0, sl), one), 4));
        l1 = vorrq_u8(l1, vshlq_n_u8(vandq_u8(vshlq_u8(qh1, sl), one), 4));
        h0 = vorrq_u8(h0, vshlq_n_u8(vandq_u8(vshlq_u8(qh0, sh), one), 4));
        h1 = vorrq_u8(h1, vshlq_n_u8(vandq_u8(vshlq_u8(qh1, sh), one), 4));
      }
      int32x4_t pl = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(l0), vld1q_s8(q8));
      pl = dot16(pl, vreinterpretq_s8_u8(l1), vld1q_s8(q8 + 16));
      int32x4_t ph = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(h0), vld1q_s8(q8 + 32));
      ph = dot16(ph, vreinterpretq_s8_u8(h1), vld1q_s8(q8 + 48));
      acc = vmlaq_n_s32(acc, pl, sc[2 * c]);
      acc = vmlaq_n_s32(acc, ph, sc[2 * c + 1]);
      q8 += 64;
    }
    sum += y->d * (fp16(x->d) * static_cast<float>(vaddvq_s32(acc)) - fp16(x->dmin) * static_cast<float>(msum));
  }
  return sum;
}

float dot_q4_k(int64_t n, const void* w, const void* a) {
  return dot_q45<false>(n, static_cast<const BlockQ4K*>(w), static_cast<const BlockQ8K*>(a));
}
float dot_q5_k(int64_t n, const void* w, const void* a) {
  return dot_q45<true>(n, static_cast<const BlockQ5K*>(w), static_cast<const BlockQ8K*>(a));
}

float dot_q6_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const uint8x16_t m4 = vdupq_n_u8(0x0f), m3 = vdupq_n_u8(3);
  const int8x16_t bias = vdupq_n_s8(32);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x->ql + 64 * h;
      const uint8_t* qh = x->qh + 32 * h;
      const int8_t* q8 = y->qs + 128 * h;
      const int8_t* sc = x->scales + 8 * h;
      for (int k = 0; k < 2; ++k) {  // 16-byte column k of the 32 positions l
        const uint8x16_t lo0 = vld1q_u8(ql + 16 * k), lo1 = vld1q_u8(ql + 32 + 16 * k);
        const uint8x16_t hb = vld1q_u8(qh + 16 * k);
        int8x16_t q[4];
        q[0] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(lo0, m4), vshlq_n_u8(vandq_u8(hb, m3), 4)));
        q[1] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(lo1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m3), 4)));
        q[2] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(lo0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m3), 4)));
        q[3] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(lo1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4)));
        for (int j = 0; j < 4; ++j) {
          // elements 32j + 16k .. +15: sub-block 2j + k of this half
          const int32x4_t p = dot16(vdupq_n_s32(0), vsubq_s8(q[j], bias), vld1q_s8(q8 + 32 * j + 16 * k));
          acc = vmlaq_n_s32(acc, p, sc[2 * j + k]);
        }
      }
    }
    sum += y->d * fp16(x->d) * static_cast<float>(vaddvq_s32(acc));
  }
  return sum;
}

}  // namespace

void register_kquant_neon(TypeKernels* table) {
  table[static_cast<uint32_t>(DType::Q4_K)].vec_dot = dot_q4_k;
  table[static_cast<uint32_t>(DType::Q5_K)].vec_dot = dot_q5_k;
  table[static_cast<uint32_t>(DType::Q6_K)].vec_dot = dot_q6_k;
}

}  // namespace llmesh::kernels::kq

#endif  // __ARM_NEON && __aarch64__
