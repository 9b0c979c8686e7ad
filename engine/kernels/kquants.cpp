// K-quant kernels, portable reference: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K weights with Q8_K
// activations. Every SIMD variant (kquants_avx2.cpp, kquants_avx512.cpp, kquants_neon.cpp) is
// tested against these. Dot products are exact in integers within a super-block; only the
// per-block float combination (d * sum) rounds.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kquant_blocks.h"

namespace llmesh::kernels {
namespace kq {

// ---------------------------------------------------------------- dequantization
// Element e of a block: its scale index is e/16 (Q2_K, Q3_K, Q6_K) or e/32 (Q4_K, Q5_K).

void dequantize_q2_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ2K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b) {
    const float d = half_to_float(b->d), dmin = half_to_float(b->dmin);
    for (int e = 0; e < QK_K; ++e) {
      // 128-element halves use 32 bytes each; within a half, 2-bit field j covers 32 elements.
      const int h = e / 128, j = (e % 128) / 32, l = e % 32;
      const int q = (b->qs[32 * h + l] >> (2 * j)) & 3;
      const uint8_t sm = b->scales[e / 16];
      *y++ = d * static_cast<float>(sm & 0x0f) * static_cast<float>(q) -
             dmin * static_cast<float>(sm >> 4);
    }
  }
}

void dequantize_q3_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ3K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b) {
    const float d = half_to_float(b->d);
    int8_t sc[16];
    unpack_scales_q3k(b->scales, sc);
    for (int e = 0; e < QK_K; ++e) {
      const int h = e / 128, j = (e % 128) / 32, l = e % 32;
      const int lo = (b->qs[32 * h + l] >> (2 * j)) & 3;
      const int hi = (b->hmask[l] >> (4 * h + j)) & 1;
      *y++ = d * static_cast<float>(sc[e / 16]) * static_cast<float>(lo - (hi ? 0 : 4));
    }
  }
}

void dequantize_q4_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b) {
    const float d = half_to_float(b->d), dmin = half_to_float(b->dmin);
    uint8_t sc[8], mn[8];
    unpack_scale_min_k4(b->scales, sc, mn);
    for (int s = 0; s < 8; ++s) {
      // sub-blocks 2c and 2c+1 share 32 bytes: low nibbles, then high nibbles
      const uint8_t* q = b->qs + 32 * (s / 2);
      const int shift = 4 * (s % 2);
      const float ds = d * sc[s], ms = dmin * mn[s];
      for (int l = 0; l < 32; ++l) *y++ = ds * static_cast<float>((q[l] >> shift) & 0x0f) - ms;
    }
  }
}

void dequantize_q5_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b) {
    const float d = half_to_float(b->d), dmin = half_to_float(b->dmin);
    uint8_t sc[8], mn[8];
    unpack_scale_min_k4(b->scales, sc, mn);
    for (int s = 0; s < 8; ++s) {
      const uint8_t* q = b->qs + 32 * (s / 2);
      const int shift = 4 * (s % 2);
      const float ds = d * sc[s], ms = dmin * mn[s];
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 0x0f) | (((b->qh[l] >> s) & 1) << 4);
        *y++ = ds * static_cast<float>(v) - ms;
      }
    }
  }
}

void dequantize_q6_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b) {
    const float d = half_to_float(b->d);
    for (int e = 0; e < QK_K; ++e) {
      const int h = e / 128, j = (e % 128) / 32, l = e % 32;
      const uint8_t lo_byte = b->ql[64 * h + 32 * (j & 1) + l];
      const int lo = j < 2 ? (lo_byte & 0x0f) : (lo_byte >> 4);
      const int hi = (b->qh[32 * h + l] >> (2 * j)) & 3;
      *y++ = d * static_cast<float>(b->scales[e / 16]) * static_cast<float>((lo | (hi << 4)) - 32);
    }
  }
}

// ---------------------------------------------------------------- Q8_K activations
// Per 256 elements: the element of largest magnitude maps to -127 (scale = -max/127, sign
// included, as ggml does), the rest round to nearest (ties to even); bsums are sums of 16.
void quantize_q8_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8K*>(dst);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b, x += QK_K) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK_K; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(b, 0, sizeof(*b));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; ++j) {
      const int v = static_cast<int>(std::nearbyint(iscale * x[j]));
      b->qs[j] = static_cast<int8_t>(std::min(127, v));
    }
    for (int g = 0; g < QK_K / 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += b->qs[16 * g + j];
      b->bsums[g] = static_cast<int16_t>(s);
    }
    b->d = 1.0f / iscale;
  }
}

// ---------------------------------------------------------------- dot products
// Each weight block is decoded to small integers (and per-sub-block integer scales), the
// integer products are summed exactly, and the block contributes
//   d_act * (d_w * sum_s sc[s] * dot_s  -  dmin_w * sum_s m[s] * bsum_s).

namespace {
int dot16(const int8_t* a, const int8_t* b) {
  int s = 0;
  for (int j = 0; j < 16; ++j) s += a[j] * b[j];
  return s;
}
}  // namespace

float vec_dot_q2_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    int8_t q[QK_K];
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < 32; ++l) q[128 * h + 32 * j + l] = static_cast<int8_t>((x->qs[32 * h + l] >> (2 * j)) & 3);
    int isum = 0, msum = 0;
    for (int s = 0; s < 16; ++s) {
      isum += (x->scales[s] & 0x0f) * dot16(q + 16 * s, y->qs + 16 * s);
      msum += (x->scales[s] >> 4) * y->bsums[s];
    }
    sum += y->d * (half_to_float(x->d) * static_cast<float>(isum) -
                   half_to_float(x->dmin) * static_cast<float>(msum));
  }
  return sum;
}

float vec_dot_q3_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ3K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    int8_t q[QK_K], sc[16];
    unpack_scales_q3k(x->scales, sc);
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < 32; ++l) {
          const int lo = (x->qs[32 * h + l] >> (2 * j)) & 3;
          const int hi = (x->hmask[l] >> (4 * h + j)) & 1;
          q[128 * h + 32 * j + l] = static_cast<int8_t>(lo + 4 * hi - 4);
        }
    int isum = 0;
    for (int s = 0; s < 16; ++s) isum += sc[s] * dot16(q + 16 * s, y->qs + 16 * s);
    sum += y->d * (half_to_float(x->d) * static_cast<float>(isum));
  }
  return sum;
}

namespace {
// Q4_K / Q5_K share everything but the fifth bit.
template <bool kFive, typename Block>
float dot_q45(int64_t n, const Block* x, const BlockQ8K* y) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    uint8_t sc[8], mn[8];
    unpack_scale_min_k4(x->scales, sc, mn);
    int isum = 0, msum = 0;
    for (int s = 0; s < 8; ++s) {
      const uint8_t* q = x->qs + 32 * (s / 2);
      const int shift = 4 * (s % 2);
      int dot = 0;
      for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> shift) & 0x0f;
        if constexpr (kFive) v |= ((x->qh[l] >> s) & 1) << 4;
        dot += v * y->qs[32 * s + l];
      }
      isum += sc[s] * dot;
      msum += mn[s] * (y->bsums[2 * s] + y->bsums[2 * s + 1]);
    }
    sum += y->d * (half_to_float(x->d) * static_cast<float>(isum) -
                   half_to_float(x->dmin) * static_cast<float>(msum));
  }
  return sum;
}
}  // namespace

float vec_dot_q4_k_q8_k(int64_t n, const void* w, const void* a) {
  return dot_q45<false>(n, static_cast<const BlockQ4K*>(w), static_cast<const BlockQ8K*>(a));
}
float vec_dot_q5_k_q8_k(int64_t n, const void* w, const void* a) {
  return dot_q45<true>(n, static_cast<const BlockQ5K*>(w), static_cast<const BlockQ8K*>(a));
}

float vec_dot_q6_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    int8_t q[QK_K];
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x->ql + 64 * h;
      const uint8_t* qh = x->qh + 32 * h;
      int8_t* o = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        o[l] = static_cast<int8_t>(((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32);
        o[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
        o[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        o[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    int isum = 0;
    for (int s = 0; s < 16; ++s) isum += x->scales[s] * dot16(q + 16 * s, y->qs + 16 * s);
    sum += y->d * (half_to_float(x->d) * static_cast<float>(isum));
  }
  return sum;
}

// ---------------------------------------------------------------- reference quantizers
namespace {
int round_clamp(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::lround(v)), lo, hi);
}

// Least-squares refit of (scale, offset) for fixed codes q: x ~ scale * q - offset.
// Keeps the old values when the fit degenerates (all codes equal).
void refit_affine(const float* x, const int* q, int n, float& scale, float& offset) {
  double sq = 0, sqq = 0, sx = 0, sqx = 0;
  for (int l = 0; l < n; ++l) {
    sq += q[l];
    sqq += static_cast<double>(q[l]) * q[l];
    sx += x[l];
    sqx += static_cast<double>(q[l]) * x[l];
  }
  const double det = n * sqq - sq * sq;
  if (det <= 0) return;
  const double s = (n * sqx - sq * sx) / det;
  const double o = (s * sq - sx) / n;
  if (s > 0 && o >= 0) {
    scale = static_cast<float>(s);
    offset = static_cast<float>(o);
  }
}
}  // namespace

// Q4_K: per 32 elements an affine fit x ~ scale*q - min (q in 0..15, min >= 0), one refit by
// least squares, then the 8 scales and 8 mins are themselves quantized to 6 bits against
// the fp16 super-block scales d and dmin; the codes are chosen last against the final values.
void quantize_q4_k_ref(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4K*>(dst);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b, x += QK_K) {
    float scale[8], offset[8];
    for (int s = 0; s < 8; ++s) {
      const float* xs = x + 32 * s;
      float lo = std::min(0.0f, *std::min_element(xs, xs + 32));
      float hi = *std::max_element(xs, xs + 32);
      scale[s] = hi > lo ? (hi - lo) / 15.0f : 0.0f;
      offset[s] = -lo;
      if (scale[s] > 0) {
        int q[32];
        for (int l = 0; l < 32; ++l) q[l] = round_clamp((xs[l] + offset[s]) / scale[s], 0, 15);
        refit_affine(xs, q, 32, scale[s], offset[s]);
      }
    }
    const float max_scale = *std::max_element(scale, scale + 8);
    const float max_offset = *std::max_element(offset, offset + 8);
    const uint16_t dh = float_to_half(max_scale / 63.0f), mh = float_to_half(max_offset / 63.0f);
    const float d = half_to_float(dh), dmin = half_to_float(mh);
    uint8_t sc[8], mn[8];
    for (int s = 0; s < 8; ++s) {
      sc[s] = static_cast<uint8_t>(d > 0 ? round_clamp(scale[s] / d, 0, 63) : 0);
      mn[s] = static_cast<uint8_t>(dmin > 0 ? round_clamp(offset[s] / dmin, 0, 63) : 0);
    }
    b->d = dh;
    b->dmin = mh;
    for (int j = 0; j < 4; ++j) {
      b->scales[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
      b->scales[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
      b->scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4));
    }
    std::memset(b->qs, 0, sizeof(b->qs));
    for (int s = 0; s < 8; ++s) {
      const float ds = d * sc[s], ms = dmin * mn[s];
      for (int l = 0; l < 32; ++l) {
        const int q = ds > 0 ? round_clamp((x[32 * s + l] + ms) / ds, 0, 15) : 0;
        b->qs[32 * (s / 2) + l] |= static_cast<uint8_t>(q << (4 * (s % 2)));
      }
    }
  }
}

// Q6_K: per 16 elements a symmetric scale (q in -32..31), then the 16 scales quantized to
// int8 against the fp16 super-block scale d; codes chosen last against the final scales.
void quantize_q6_k_ref(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ6K*>(dst);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b, x += QK_K) {
    float scale[16];
    for (int s = 0; s < 16; ++s) {
      float amax = 0.0f, max = 0.0f;
      for (int l = 0; l < 16; ++l) {
        const float v = x[16 * s + l];
        if (std::fabs(v) > amax) {
          amax = std::fabs(v);
          max = v;
        }
      }
      // the extreme value maps to -32 (the code range is asymmetric: -32..31)
      scale[s] = max / -32.0f;
    }
    float amax_scale = 0.0f, max_scale = 0.0f;
    for (float s : scale) {
      if (std::fabs(s) > amax_scale) {
        amax_scale = std::fabs(s);
        max_scale = s;
      }
    }
    const uint16_t dh = float_to_half(max_scale / -128.0f);
    const float d = half_to_float(dh);
    b->d = dh;
    std::memset(b->ql, 0, sizeof(b->ql));
    std::memset(b->qh, 0, sizeof(b->qh));
    for (int s = 0; s < 16; ++s) {
      b->scales[s] = static_cast<int8_t>(d != 0 ? round_clamp(scale[s] / d, -128, 127) : 0);
    }
    for (int e = 0; e < QK_K; ++e) {
      const float ds = d * b->scales[e / 16];
      const int q = (ds != 0 ? round_clamp(x[e] / ds, -32, 31) : 0) + 32;
      const int h = e / 128, j = (e % 128) / 32, l = e % 32;
      b->ql[64 * h + 32 * (j & 1) + l] |= static_cast<uint8_t>((q & 0x0f) << (j < 2 ? 0 : 4));
      b->qh[32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * j));
    }
  }
}

// ---------------------------------------------------------------- registration
void register_kquant_scalar(TypeKernels* table) {
  auto set = [&](DType t, void (*deq)(const void*, float*, int64_t),
                 float (*dot)(int64_t, const void*, const void*)) {
    TypeKernels& k = table[static_cast<uint32_t>(t)];
    k.act = DType::Q8_K;
    k.dequantize = deq;
    k.quantize_act = quantize_q8_k;
    k.vec_dot = dot;
    k.tile = nullptr;
    k.tile_rows = k.tile_cols = 0;
  };
  set(DType::Q2_K, dequantize_q2_k, vec_dot_q2_k_q8_k);
  set(DType::Q3_K, dequantize_q3_k, vec_dot_q3_k_q8_k);
  set(DType::Q4_K, dequantize_q4_k, vec_dot_q4_k_q8_k);
  set(DType::Q5_K, dequantize_q5_k, vec_dot_q5_k_q8_k);
  set(DType::Q6_K, dequantize_q6_k, vec_dot_q6_k_q8_k);
}

}  // namespace kq

// Every ISA gets complete entries: the scalar ones first, then whatever the wider ISAs
// override (AVX-512 builds on AVX2).
void register_kquant_kernels(TypeKernels* table, Isa isa) {
  kq::register_kquant_scalar(table);
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::Avx2 || isa == Isa::Avx512) kq::register_kquant_avx2(table);
  if (isa == Isa::Avx512) kq::register_kquant_avx512(table);
#endif
#if defined(__aarch64__)
  if (isa == Isa::Neon) kq::register_kquant_neon(table);
#endif
}

}  // namespace llmesh::kernels
