// K-quant kernels, AVX2 (+FMA, F16C): Q8_K activation quantization and the five dot products.
// Weights are unpacked 32 at a time into unsigned bytes, multiplied with the signed Q8_K bytes
// by vpmaddubsw (pairs into int16), then weighted by the sub-block scales with vpmaddwd
// (int32). Offsets (Q2_K/Q4_K/Q5_K mins, the -32 of Q6_K, the -4 of Q3_K) use the Q8_K
// block sums, so they cost one vpmaddwd per block instead of per element.
#include <immintrin.h>

#include <cmath>

#include "kernels/kquant_blocks.h"

namespace llmesh::kernels::kq {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hsum(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

// Shuffle masks that broadcast, for 32-element chunk k (0..7), the int8 scale of sub-block
// 2k to bytes 0..7 and of 2k+1 to bytes 8..15 (sub-blocks of 16 elements). A constant table,
// not a static constructor: nothing in this file may run before the CPU check.
struct PairMaskTable {
  alignas(16) int8_t b[8][16];
};
constexpr PairMaskTable make_pair_masks() {
  PairMaskTable t{};
  for (int k = 0; k < 8; ++k)
    for (int i = 0; i < 16; ++i) t.b[k][i] = static_cast<int8_t>(2 * k + i / 8);
  return t;
}
constexpr PairMaskTable kPairs = make_pair_masks();

// int16 scales for chunk k: lanes 0..7 = s[2k], 8..15 = s[2k+1] (s: 16 int8 scales).
inline __m256i pair_scales(__m128i s8, int k) {
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, _mm_load_si128(reinterpret_cast<const __m128i*>(kPairs.b[k]))));
}

// Broadcast int16 lane k of a 128-bit vector to all 16 lanes.
inline __m256i bcast16(__m256i v, int k) {
  const __m256i idx = _mm256_set1_epi16(static_cast<int16_t>((2 * k) | ((2 * k + 1) << 8)));
  return _mm256_shuffle_epi8(v, idx);
}

// ---------------------------------------------------------------- Q8_K
void quantize_q8_k_avx2(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8K*>(dst);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < n / QK_K; ++i, ++b, x += QK_K) {
    __m256 vmax = _mm256_setzero_ps();
    for (int j = 0; j < QK_K; j += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float amax = _mm_cvtss_f32(m);
    if (amax == 0.0f) {
      std::memset(b, 0, sizeof(*b));
      continue;
    }
    // the first element of largest magnitude gives the sign (as the scalar reference)
    float max = 0.0f;
    const __m256 va = _mm256_set1_ps(amax);
    for (int j = 0; j < QK_K; j += 8) {
      const int mask = _mm256_movemask_ps(
          _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), va, _CMP_EQ_OQ));
      if (mask) {
        max = x[j + __builtin_ctz(static_cast<unsigned>(mask))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 vs = _mm256_set1_ps(iscale);
    const __m256i lim = _mm256_set1_epi32(127);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < QK_K; j += 32) {
      __m256i v[4];
      for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * k))), lim);
      }
      const __m256i p01 = _mm256_packs_epi32(v[0], v[1]);
      const __m256i p23 = _mm256_packs_epi32(v[2], v[3]);
      const __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), perm);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(b->qs + j), q);
      // block sums of 16: bytes -> int16 pairs -> int32 quads -> per 128-bit lane
      const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
      const __m256i s2 = _mm256_hadd_epi32(s32, s32);
      const __m256i s4 = _mm256_hadd_epi32(s2, s2);
      b->bsums[j / 16] = static_cast<int16_t>(_mm256_extract_epi32(s4, 0));
      b->bsums[j / 16 + 1] = static_cast<int16_t>(_mm256_extract_epi32(s4, 4));
    }
    b->d = 1.0f / iscale;
  }
}

// ---------------------------------------------------------------- dot products
float dot_q2_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d), dmin = y->d * fp16(x->dmin);
    const __m128i sm = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x->scales));
    const __m128i sc = _mm_and_si128(sm, m4);
    const __m128i mn = _mm_and_si128(_mm_srli_epi16(sm, 4), m4);
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->bsums));
    const __m256i msum = _mm256_madd_epi16(bs, _mm256_cvtepu8_epi16(mn));
    accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(msum), accm);
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs + 32 * h));
      for (int j = 0; j < 4; ++j) {
        const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * j), m3);
        const __m256i q8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->qs + 128 * h + 32 * j));
        const __m256i p = _mm256_maddubs_epi16(q, q8);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, pair_scales(sc, 4 * h + j)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc) - hsum(accm);
}

// Q3_K's 16 scales (6 bits, stored +32) as signed bytes.
inline __m128i q3k_scales(const uint8_t* q) {
  uint32_t w[4];
  unpack_scales_q3k_words(q, w);
  return _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)), _mm_set1_epi8(32));
}

float dot_q3_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ3K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m256i m1 = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d);
    const __m128i sc = q3k_scales(x->scales);
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->bsums));
    // codes are u - 4 with u = low2 | high << 2 in 0..7: subtract 4 * sum_s sc[s] * bsum[s]
    __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc)), 2);
    sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->hmask));
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs + 32 * h));
      for (int j = 0; j < 4; ++j) {
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * j), m3);
        const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), m1), 2);
        const __m256i q = _mm256_or_si256(lo, hi);
        const __m256i q8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->qs + 128 * h + 32 * j));
        const __m256i p = _mm256_maddubs_epi16(q, q8);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, pair_scales(sc, 4 * h + j)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// Q4_K / Q5_K: 8 sub-blocks of 32, 6-bit scales and mins.
template <bool kFive, typename Block>
float dot_q45(int64_t n, const Block* x, const BlockQ8K* y) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i m1 = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  __m128 accm = _mm_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d), dmin = y->d * fp16(x->dmin);
    uint32_t u[4];
    unpack_scale_min_k4_words(x->scales, u);
    const __m256i sm = _mm256_cvtepu8_epi16(_mm_setr_epi32(static_cast<int>(u[0]), static_cast<int>(u[1]),
                                                           static_cast<int>(u[2]), static_cast<int>(u[3])));
    // mins . (pair sums of the 16 bsums)
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->bsums));
    const __m128i bs8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    const __m128i msum = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), bs8);
    accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(msum), accm);
    const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
    __m256i hbits;
    if constexpr (kFive) hbits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qh));
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs + 32 * c));
      __m256i ql = _mm256_and_si256(qs, m4);
      __m256i qh = _mm256_and_si256(_mm256_srli_epi16(qs, 4), m4);
      if constexpr (kFive) {
        ql = _mm256_or_si256(ql, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c), m1), 4));
        qh = _mm256_or_si256(qh, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c + 1), m1), 4));
      }
      const __m256i q8l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->qs + 64 * c));
      const __m256i q8h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->qs + 64 * c + 32));
      const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(ql, q8l), bcast16(sc, 2 * c));
      const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(qh, q8h), bcast16(sc, 2 * c + 1));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc) - hsum(accm);
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
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i m3 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d);
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x->scales));
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->bsums));
    // codes are u - 32 with u in 0..63: subtract 32 * sum_s sc[s] * bsum[s]
    __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc)), 5);
    sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qh + 32 * h));
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
      q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                             _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(qh, 2), _mm256_set1_epi8(0x30)));
      for (int j = 0; j < 4; ++j) {
        const __m256i q8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->qs + 128 * h + 32 * j));
        const __m256i p = _mm256_maddubs_epi16(q[j], q8);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, pair_scales(sc, 4 * h + j)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// ---------------------------------------------------------------- tiles (prefill)
// One weight row x up to 4 activation columns: the unpacked weights and their scale vectors are
// reused for every column (16 ymm registers leave no room for a second row's accumulators).
constexpr int kTileCols = 4;
#define LLMESH_UNROLL _Pragma("GCC unroll 8")

// Decode (one token) streams weight rows, which are contiguous: while super-block x of a row
// is consumed, prefetch the same super-block four rows further on into L2 (the hardware
// prefetchers alone leave decode latency-bound; see kquants_avx512.cpp).
template <class Block>
inline void prefetch_rows_ahead(const Block* x, int64_t blocks_per_row) {
  const char* pf = reinterpret_cast<const char*>(x + 4 * blocks_per_row);
  LLMESH_UNROLL for (size_t k = 0; k < sizeof(Block); k += 64) _mm_prefetch(pf + k, _MM_HINT_T1);
}

template <int C>
void tile_q4_k_c(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out, size_t y_stride) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  __m256 acc[C];
  __m128 accm[C];
  LLMESH_UNROLL for (int c = 0; c < C; ++c) {
    acc[c] = _mm256_setzero_ps();
    accm[c] = _mm_setzero_ps();
  }
  const auto* x = reinterpret_cast<const BlockQ4K*>(w);
  for (int64_t ib = 0; ib < n / QK_K; ++ib, ++x) {
    if constexpr (C == 1) prefetch_rows_ahead(x, n / QK_K);
    const BlockQ8K* y[C];
    LLMESH_UNROLL for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8K*>(a + c * a_stride) + ib;
    const float dx = fp16(x->d), dmx = fp16(x->dmin);
    uint32_t u[4];
    unpack_scale_min_k4_words(x->scales, u);
    const __m256i sm = _mm256_cvtepu8_epi16(_mm_setr_epi32(static_cast<int>(u[0]), static_cast<int>(u[1]),
                                                           static_cast<int>(u[2]), static_cast<int>(u[3])));
    const __m128i mins = _mm256_extracti128_si256(sm, 1);
    LLMESH_UNROLL for (int c = 0; c < C; ++c) {
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c]->bsums));
      const __m128i bs8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
      accm[c] = _mm_fmadd_ps(_mm_set1_ps(dmx * y[c]->d), _mm_cvtepi32_ps(_mm_madd_epi16(mins, bs8)), accm[c]);
    }
    const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
    __m256i sumi[C];
    LLMESH_UNROLL for (int c = 0; c < C; ++c) sumi[c] = _mm256_setzero_si256();
    LLMESH_UNROLL for (int ch = 0; ch < 4; ++ch) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs + 32 * ch));
      const __m256i ql = _mm256_and_si256(qs, m4);
      const __m256i qh = _mm256_and_si256(_mm256_srli_epi16(qs, 4), m4);
      const __m256i sl = bcast16(sc, 2 * ch), sh = bcast16(sc, 2 * ch + 1);
      LLMESH_UNROLL for (int c = 0; c < C; ++c) {
        const __m256i q8l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c]->qs + 64 * ch));
        const __m256i q8h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c]->qs + 64 * ch + 32));
        const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(ql, q8l), sl);
        const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(qh, q8h), sh);
        sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(pl, ph));
      }
    }
    LLMESH_UNROLL for (int c = 0; c < C; ++c) {
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[c]->d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
    }
  }
  for (int c = 0; c < C; ++c) out[c * y_stride] = hsum(acc[c]) - hsum(accm[c]);
}

template <int C>
void tile_q6_k_c(int64_t n, const uint8_t* w, const uint8_t* a, size_t a_stride, float* out, size_t y_stride) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i m3 = _mm256_set1_epi8(3);
  __m256 acc[C];
  LLMESH_UNROLL for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
  const auto* x = reinterpret_cast<const BlockQ6K*>(w);
  for (int64_t ib = 0; ib < n / QK_K; ++ib, ++x) {
    if constexpr (C == 1) prefetch_rows_ahead(x, n / QK_K);
    const BlockQ8K* y[C];
    LLMESH_UNROLL for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8K*>(a + c * a_stride) + ib;
    const float dx = fp16(x->d);
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x->scales));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc);
    __m256i sumi[C];
    LLMESH_UNROLL for (int c = 0; c < C; ++c) {
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c]->bsums));
      sumi[c] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
    }
    LLMESH_UNROLL for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qh + 32 * h));
      LLMESH_UNROLL for (int j = 0; j < 4; ++j) {
        __m256i q;
        switch (j) {
          case 0: q = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4)); break;
          case 1:
            q = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            break;
          case 2:
            q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
            break;
          default:
            q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), _mm256_set1_epi8(0x30)));
            break;
        }
        const __m256i s = pair_scales(sc, 4 * h + j);
        LLMESH_UNROLL for (int c = 0; c < C; ++c) {
          const __m256i q8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c]->qs + 128 * h + 32 * j));
          sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(_mm256_maddubs_epi16(q, q8), s));
        }
      }
    }
    LLMESH_UNROLL for (int c = 0; c < C; ++c) {
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[c]->d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
    }
  }
  for (int c = 0; c < C; ++c) out[c * y_stride] = hsum(acc[c]);
}

using TileFn = void (*)(int64_t, const uint8_t*, const uint8_t*, size_t, float*, size_t);

// Rows one at a time, columns in groups of up to 4.
template <TileFn F1, TileFn F2, TileFn F3, TileFn F4>
void tile_rows_cols(int64_t n, const void* w, size_t w_stride, int nr, const void* a, size_t a_stride, int nc,
                    float* y, size_t y_stride) {
  for (int r = 0; r < nr; ++r) {
    const uint8_t* wr = static_cast<const uint8_t*>(w) + r * w_stride;
    for (int c0 = 0; c0 < nc; c0 += kTileCols) {
      const uint8_t* ap = static_cast<const uint8_t*>(a) + c0 * a_stride;
      float* yp = y + c0 * y_stride + r;
      switch (nc - c0 < kTileCols ? nc - c0 : kTileCols) {
        case 1: F1(n, wr, ap, a_stride, yp, y_stride); break;
        case 2: F2(n, wr, ap, a_stride, yp, y_stride); break;
        case 3: F3(n, wr, ap, a_stride, yp, y_stride); break;
        default: F4(n, wr, ap, a_stride, yp, y_stride); break;
      }
    }
  }
}

void tile_q4_k(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int nc, float* y, size_t ys) {
  tile_rows_cols<tile_q4_k_c<1>, tile_q4_k_c<2>, tile_q4_k_c<3>, tile_q4_k_c<4>>(n, w, ws, nr, a, as, nc, y, ys);
}
void tile_q6_k(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int nc, float* y, size_t ys) {
  tile_rows_cols<tile_q6_k_c<1>, tile_q6_k_c<2>, tile_q6_k_c<3>, tile_q6_k_c<4>>(n, w, ws, nr, a, as, nc, y, ys);
}

}  // namespace

void register_kquant_avx2(TypeKernels* table) {
  auto set = [&](DType t, float (*dot)(int64_t, const void*, const void*)) {
    TypeKernels& k = table[static_cast<uint32_t>(t)];
    k.quantize_act = quantize_q8_k_avx2;
    k.vec_dot = dot;
  };
  set(DType::Q2_K, dot_q2_k);
  set(DType::Q3_K, dot_q3_k);
  set(DType::Q4_K, dot_q4_k);
  set(DType::Q5_K, dot_q5_k);
  set(DType::Q6_K, dot_q6_k);
  auto set_tile = [&](DType t, decltype(TypeKernels::tile) f) {
    TypeKernels& k = table[static_cast<uint32_t>(t)];
    k.tile = f;
    k.tile_rows = 1;
    k.tile_cols = kTileCols;
  };
  set_tile(DType::Q4_K, tile_q4_k);
  set_tile(DType::Q6_K, tile_q6_k);
}

}  // namespace llmesh::kernels::kq
