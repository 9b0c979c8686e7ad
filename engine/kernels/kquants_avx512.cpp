// K-quant kernels, AVX-512 (F, BW, VL, VNNI): the five dot products and register-blocked
// tiles for Q4_K and Q6_K. Weights are unpacked 64 at a time into unsigned bytes in element
// order, multiplied with the signed Q8_K bytes by vpmaddubsw (int16 pairs), and weighted by
// the sub-block scales with the VNNI vpdpwssd (int16 pairs -> int32, accumulating).
// The scale of each int16 lane comes from vpermw with a constant index per 64-element chunk.
// GCC 12 flags its own self-initialized _mm*_undefined_* temporaries (inside inserti64x4,
// extract and reduce) as uninitialized; they are placeholders the instructions overwrite.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <type_traits>

#include "kernels/kquant_blocks.h"
#include "kernels/scratch_buffer.h"

namespace llmesh::kernels::kq {
namespace {

#define LLMESH_UNROLL _Pragma("GCC unroll 8")

inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }
inline float hsum(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

// vpermw indices. For 16-element sub-blocks (Q2_K, Q3_K, Q6_K), chunk k (0..3) of 64 elements:
// int16 lane i (covering elements 2i, 2i+1) takes scale 4k + i/8. For 32-element sub-blocks
// (Q4_K, Q5_K): lane i takes scale 2k + i/16.
struct PermTable {
  alignas(64) uint16_t s16[4][32];
  alignas(64) uint16_t s32[4][32];
};
constexpr PermTable make_perm() {
  PermTable t{};
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 32; ++i) {
      t.s16[k][i] = static_cast<uint16_t>(4 * k + i / 8);
      t.s32[k][i] = static_cast<uint16_t>(2 * k + i / 16);
    }
  return t;
}
constexpr PermTable kPerm = make_perm();

inline __m512i perm16(int k) { return _mm512_load_si512(kPerm.s16[k]); }
inline __m512i perm32(int k) { return _mm512_load_si512(kPerm.s32[k]); }

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
// [lo, hi] as one 512-bit vector
inline __m512i join(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}
// 16 int8 scales widened to int16 lanes 0..15 of a 512-bit vector (upper lanes unused).
inline __m512i scales16(__m128i s8) { return _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(s8)); }
inline __m512i scales16u(__m128i s8) { return _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(s8)); }

// ---------------------------------------------------------------- Q2_K
float dot_q2_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0x0f);
  __m512 acc = _mm512_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d), dmin = y->d * fp16(x->dmin);
    const __m128i sm = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x->scales));
    const __m512i sc = scales16u(_mm_and_si128(sm, m4));
    const __m128i mn = _mm_and_si128(_mm_srli_epi16(sm, 4), m4);
    const __m256i msum = _mm256_madd_epi16(load256(y->bsums), _mm256_cvtepu8_epi16(mn));
    accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(msum), accm);
    __m512i sumi = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = load256(x->qs + 32 * h);
      const __m512i q2 = join(qs, _mm256_srli_epi16(qs, 2));  // fields 0 | 1, then >> 4: 2 | 3
      const __m512i q01 = _mm512_and_si512(q2, m3);
      const __m512i q23 = _mm512_and_si512(_mm512_srli_epi16(q2, 4), m3);
      const __m512i p01 = _mm512_maddubs_epi16(q01, load512(y->qs + 128 * h));
      const __m512i p23 = _mm512_maddubs_epi16(q23, load512(y->qs + 128 * h + 64));
      sumi = _mm512_dpwssd_epi32(sumi, p01, _mm512_permutexvar_epi16(perm16(2 * h), sc));
      sumi = _mm512_dpwssd_epi32(sumi, p23, _mm512_permutexvar_epi16(perm16(2 * h + 1), sc));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc) - hsum(_mm_add_ps(_mm256_castps256_ps128(accm), _mm256_extractf128_ps(accm, 1)));
}

// ---------------------------------------------------------------- Q3_K
inline __m128i q3k_scales(const uint8_t* q) {
  uint32_t w[4];
  unpack_scales_q3k_words(q, w);
  return _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)), _mm_set1_epi8(32));
}

float dot_q3_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ3K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m512i m1 = _mm512_set1_epi8(1);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d);
    const __m128i sc8 = q3k_scales(x->scales);
    const __m512i sc = scales16(sc8);
    // codes are u - 4, u = low2 | high << 2: subtract 4 * sum_s sc[s] * bsum[s]
    const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(load256(y->bsums), _mm256_cvtepi8_epi16(sc8)), 2);
    __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(corr));
    const __m256i hm = load256(x->hmask);
    const __m512i hm2 = join(hm, _mm256_srli_epi16(hm, 1));  // bit b | bit b+1
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = load256(x->qs + 32 * h);
      const __m512i q2 = join(qs, _mm256_srli_epi16(qs, 2));
      const __m512i hb = _mm512_srli_epi16(hm2, 4 * h);
      const __m512i q01 = _mm512_or_si512(_mm512_and_si512(q2, m3),
                                          _mm512_slli_epi16(_mm512_and_si512(hb, m1), 2));
      const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q2, 4), m3),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 2), m1), 2));
      const __m512i p01 = _mm512_maddubs_epi16(q01, load512(y->qs + 128 * h));
      const __m512i p23 = _mm512_maddubs_epi16(q23, load512(y->qs + 128 * h + 64));
      sumi = _mm512_dpwssd_epi32(sumi, p01, _mm512_permutexvar_epi16(perm16(2 * h), sc));
      sumi = _mm512_dpwssd_epi32(sumi, p23, _mm512_permutexvar_epi16(perm16(2 * h + 1), sc));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// ---------------------------------------------------------------- Q4_K / Q5_K
// Unpacks the scales of one block: int16 scales in lanes 0..7 of the returned vector; the
// min term (mins . pair sums of bsums) is returned in `msum` (4 int32 lanes).
template <typename Block>
inline __m512i q45_scales(const Block* x, const BlockQ8K* y, __m128i& msum) {
  uint32_t u[4];
  unpack_scale_min_k4_words(x->scales, u);
  const __m256i sm = _mm256_cvtepu8_epi16(_mm_setr_epi32(static_cast<int>(u[0]), static_cast<int>(u[1]),
                                                         static_cast<int>(u[2]), static_cast<int>(u[3])));
  const __m256i bs = load256(y->bsums);
  const __m128i bs8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
  msum = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), bs8);
  return _mm512_zextsi256_si512(sm);  // lanes 8.. hold the mins; the indices never reach them
}

// 64 weights of chunk c (sub-blocks 2c, 2c+1) as unsigned bytes in element order.
inline __m512i q4_chunk(const uint8_t* qs) {
  const __m256i q = load256(qs);
  return _mm512_and_si512(join(q, _mm256_srli_epi16(q, 4)), _mm512_set1_epi8(0x0f));
}

template <bool kFive, typename Block>
float dot_q45(int64_t n, const Block* x, const BlockQ8K* y) {
  const __m512i m1 = _mm512_set1_epi8(1);
  __m512 acc = _mm512_setzero_ps();
  __m128 accm = _mm_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d), dmin = y->d * fp16(x->dmin);
    __m128i msum;
    const __m512i sc = q45_scales(x, y, msum);
    accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(msum), accm);
    __m512i hbits;
    if constexpr (kFive) {
      const __m256i qh = load256(x->qh);
      hbits = join(qh, _mm256_srli_epi16(qh, 1));  // bit 2c | bit 2c+1 after >> 2c
    }
    // two independent accumulation chains (even / odd chunks)
    __m512i sumi[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    LLMESH_UNROLL for (int c = 0; c < 4; ++c) {
      __m512i q = q4_chunk(x->qs + 32 * c);
      if constexpr (kFive) {
        q = _mm512_or_si512(q, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hbits, 2 * c), m1), 4));
      }
      const __m512i p = _mm512_maddubs_epi16(q, load512(y->qs + 64 * c));
      sumi[c & 1] = _mm512_dpwssd_epi32(sumi[c & 1], p, _mm512_permutexvar_epi16(perm32(c), sc));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_add_epi32(sumi[0], sumi[1])), acc);
  }
  return hsum(acc) - hsum(accm);
}

float dot_q4_k(int64_t n, const void* w, const void* a) {
  return dot_q45<false>(n, static_cast<const BlockQ4K*>(w), static_cast<const BlockQ8K*>(a));
}
float dot_q5_k(int64_t n, const void* w, const void* a) {
  return dot_q45<true>(n, static_cast<const BlockQ5K*>(w), static_cast<const BlockQ8K*>(a));
}

// ---------------------------------------------------------------- Q6_K
// The 128 codes (0..63) of half h as two 64-byte vectors in element order.
inline void q6_half(const BlockQ6K* x, int h, __m512i& q01, __m512i& q23) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m512i ql = load512(x->ql + 64 * h);
  const __m256i qh = load256(x->qh + 32 * h);
  const __m512i qh2 = join(qh, _mm256_srli_epi16(qh, 2));  // bits 0-1 | bits 2-3, then >> 4
  q01 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(qh2, m3), 4));
  q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                        _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh2, 4), m3), 4));
}

// -32 * sum_s sc[s] * bsum[s] as 8 int32 lanes (zero-extended to 512 bits).
inline __m512i q6_offset(__m128i sc8, const BlockQ8K* y) {
  const __m256i c = _mm256_slli_epi32(_mm256_madd_epi16(load256(y->bsums), _mm256_cvtepi8_epi16(sc8)), 5);
  return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(c));
}

float dot_q6_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i, ++x, ++y) {
    const float d = y->d * fp16(x->d);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x->scales));
    const __m512i sc = scales16(sc8);
    __m512i sumi = q6_offset(sc8, y);
    LLMESH_UNROLL for (int h = 0; h < 2; ++h) {
      __m512i q01, q23;
      q6_half(x, h, q01, q23);
      const __m512i p01 = _mm512_maddubs_epi16(q01, load512(y->qs + 128 * h));
      const __m512i p23 = _mm512_maddubs_epi16(q23, load512(y->qs + 128 * h + 64));
      sumi = _mm512_dpwssd_epi32(sumi, p01, _mm512_permutexvar_epi16(perm16(2 * h), sc));
      sumi = _mm512_dpwssd_epi32(sumi, p23, _mm512_permutexvar_epi16(perm16(2 * h + 1), sc));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// ---------------------------------------------------------------- tiles (prefill)
// R weight rows x C activation columns per call: each unpacked weight chunk is reused for C
// columns, each activation chunk for R rows. Per (row, column) pair one int32 accumulator per
// block and one float accumulator; Q4_K's min terms for all C columns of a row share one
// vector (128-bit lane c holds column c).
constexpr int kTileRows = 2;
constexpr int kTileCols = 4;


// Lanes 4c..4c+3 of v summed, for c < C.
template <int C>
inline void lane_quads(__m512 v, float* out) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  for (int c = 0; c < C; ++c) out[c] = (t[4 * c] + t[4 * c + 1]) + (t[4 * c + 2] + t[4 * c + 3]);
}

// Decode (one token) streams the weights once. Tiles' rows are contiguous: while this tile's
// super-block `ib` is consumed, prefetch the same number of bytes of the tile after next into
// L2 (a tile of 2 rows is only a few KiB, so one tile ahead is too close), so the stream stays
// ahead without relying on the hardware prefetchers. Measured on TinyLlama Q4_K/Q6_K decode,
// 2 threads: no prefetch 16.5 tok/s, next tile 27.5, tile after next 35.7, four ahead 33.6.
// Past the matrix end is harmless.
template <size_t kStep>
inline void prefetch_next_tile(const uint8_t* next_tile, int64_t ib) {
  const char* pf = reinterpret_cast<const char*>(next_tile) + ib * kStep;
  LLMESH_UNROLL for (size_t k = 0; k < kStep; k += 64) _mm_prefetch(pf + k, _MM_HINT_T1);
}

template <int R, int C>
void tile_q4_k_rc(int64_t n, const uint8_t* w, size_t w_stride, const uint8_t* a, size_t a_stride,
                  float* out, size_t y_stride) {
  __m512 accf[R][C];
  __m512 accm[R];
  LLMESH_UNROLL for (int r = 0; r < R; ++r) {
    accm[r] = _mm512_setzero_ps();
    LLMESH_UNROLL for (int c = 0; c < C; ++c) accf[r][c] = _mm512_setzero_ps();
  }
  for (int64_t ib = 0; ib < n / QK_K; ++ib) {
    const BlockQ8K* y[C];
    const BlockQ4K* x[R];
    LLMESH_UNROLL for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8K*>(a + c * a_stride) + ib;
    LLMESH_UNROLL for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const BlockQ4K*>(w + r * w_stride) + ib;
    if constexpr (C == 1) prefetch_next_tile<R * sizeof(BlockQ4K)>(w + 2 * R * w_stride, ib);
    // bsum pair sums of column c in 128-bit lane c; y->d of column c in lanes 4c..4c+3
    // (built through memory: the lane index of vinserti32x4 must be an immediate, and a
    // loop index is one only after unrolling, which unoptimized builds do not do)
    alignas(64) int16_t pair_buf[32] = {};
    alignas(64) float yd[16] = {};
    LLMESH_UNROLL for (int c = 0; c < C; ++c) {
      const __m256i bs = load256(y[c]->bsums);
      const __m128i p = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
      _mm_store_si128(reinterpret_cast<__m128i*>(pair_buf + 8 * c), p);
      yd[4 * c] = yd[4 * c + 1] = yd[4 * c + 2] = yd[4 * c + 3] = y[c]->d;
    }
    const __m512i pairs = _mm512_load_si512(pair_buf);
    const __m512 yd4 = _mm512_load_ps(yd);
    __m512i sc[R];
    LLMESH_UNROLL for (int r = 0; r < R; ++r) {
      uint32_t u[4];
      unpack_scale_min_k4_words(x[r]->scales, u);
      const __m256i sm = _mm256_cvtepu8_epi16(_mm_setr_epi32(static_cast<int>(u[0]), static_cast<int>(u[1]),
                                                             static_cast<int>(u[2]), static_cast<int>(u[3])));
      sc[r] = _mm512_zextsi256_si512(sm);
      const __m512i mins = _mm512_broadcast_i32x4(_mm256_extracti128_si256(sm, 1));
      const __m512 dm = _mm512_mul_ps(_mm512_set1_ps(fp16(x[r]->dmin)), yd4);
      accm[r] = _mm512_fmadd_ps(dm, _mm512_cvtepi32_ps(_mm512_madd_epi16(pairs, mins)), accm[r]);
    }
    __m512i sumi[R][C];
    LLMESH_UNROLL for (int r = 0; r < R; ++r) LLMESH_UNROLL for (int c = 0; c < C; ++c) sumi[r][c] = _mm512_setzero_si512();
    LLMESH_UNROLL for (int ch = 0; ch < 4; ++ch) {
      __m512i q[R], s[R];
      LLMESH_UNROLL for (int r = 0; r < R; ++r) {
        q[r] = q4_chunk(x[r]->qs + 32 * ch);
        s[r] = _mm512_permutexvar_epi16(perm32(ch), sc[r]);
      }
      LLMESH_UNROLL for (int c = 0; c < C; ++c) {
        const __m512i q8 = load512(y[c]->qs + 64 * ch);
        LLMESH_UNROLL for (int r = 0; r < R; ++r) {
          sumi[r][c] = _mm512_dpwssd_epi32(sumi[r][c], _mm512_maddubs_epi16(q[r], q8), s[r]);
        }
      }
    }
    LLMESH_UNROLL for (int r = 0; r < R; ++r) {
      const float dx = fp16(x[r]->d);
      LLMESH_UNROLL for (int c = 0; c < C; ++c) {
        accf[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[c]->d), _mm512_cvtepi32_ps(sumi[r][c]), accf[r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float m[C];
    lane_quads<C>(accm[r], m);
    for (int c = 0; c < C; ++c) out[c * y_stride + r] = hsum(accf[r][c]) - m[c];
  }
}

template <int R, int C>
void tile_q6_k_rc(int64_t n, const uint8_t* w, size_t w_stride, const uint8_t* a, size_t a_stride,
                  float* out, size_t y_stride) {
  __m512 accf[R][C];
  LLMESH_UNROLL for (int r = 0; r < R; ++r) LLMESH_UNROLL for (int c = 0; c < C; ++c) accf[r][c] = _mm512_setzero_ps();
  for (int64_t ib = 0; ib < n / QK_K; ++ib) {
    const BlockQ8K* y[C];
    const BlockQ6K* x[R];
    LLMESH_UNROLL for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8K*>(a + c * a_stride) + ib;
    LLMESH_UNROLL for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const BlockQ6K*>(w + r * w_stride) + ib;
    if constexpr (C == 1) prefetch_next_tile<R * sizeof(BlockQ6K)>(w + 2 * R * w_stride, ib);
    __m512i sc[R];
    __m512i sumi[R][C];
    LLMESH_UNROLL for (int r = 0; r < R; ++r) {
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[r]->scales));
      sc[r] = scales16(sc8);
      LLMESH_UNROLL for (int c = 0; c < C; ++c) sumi[r][c] = q6_offset(sc8, y[c]);
    }
    LLMESH_UNROLL for (int h = 0; h < 2; ++h) {
      __m512i q01[R], q23[R], s01[R], s23[R];
      LLMESH_UNROLL for (int r = 0; r < R; ++r) {
        q6_half(x[r], h, q01[r], q23[r]);
        s01[r] = _mm512_permutexvar_epi16(perm16(2 * h), sc[r]);
        s23[r] = _mm512_permutexvar_epi16(perm16(2 * h + 1), sc[r]);
      }
      LLMESH_UNROLL for (int c = 0; c < C; ++c) {
        const __m512i a01 = load512(y[c]->qs + 128 * h);
        const __m512i a23 = load512(y[c]->qs + 128 * h + 64);
        LLMESH_UNROLL for (int r = 0; r < R; ++r) {
          sumi[r][c] = _mm512_dpwssd_epi32(sumi[r][c], _mm512_maddubs_epi16(q01[r], a01), s01[r]);
          sumi[r][c] = _mm512_dpwssd_epi32(sumi[r][c], _mm512_maddubs_epi16(q23[r], a23), s23[r]);
        }
      }
    }
    LLMESH_UNROLL for (int r = 0; r < R; ++r) {
      const float dx = fp16(x[r]->d);
      LLMESH_UNROLL for (int c = 0; c < C; ++c) {
        accf[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[c]->d), _mm512_cvtepi32_ps(sumi[r][c]), accf[r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[c * y_stride + r] = hsum(accf[r][c]);
}

// Picks the <R, C> instantiation for a partial tile.
template <void (*F11)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t),
          void (*F12)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t),
          void (*F13)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t),
          void (*F14)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t),
          void (*F21)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t),
          void (*F22)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t),
          void (*F23)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t),
          void (*F24)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t)>
void tile_dispatch(int64_t n, const void* w, size_t w_stride, int nr, const void* a, size_t a_stride, int nc,
                   float* y, size_t y_stride) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* ab = static_cast<const uint8_t*>(a);
  for (int r0 = 0; r0 < nr; r0 += kTileRows) {
    const int rr = nr - r0 < kTileRows ? nr - r0 : kTileRows;
    for (int c0 = 0; c0 < nc; c0 += kTileCols) {
      const int cc = nc - c0 < kTileCols ? nc - c0 : kTileCols;
      const uint8_t* wp = wb + r0 * w_stride;
      const uint8_t* ap = ab + c0 * a_stride;
      float* yp = y + c0 * y_stride + r0;
      switch ((rr - 1) * 4 + (cc - 1)) {
        case 0: F11(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
        case 1: F12(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
        case 2: F13(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
        case 3: F14(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
        case 4: F21(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
        case 5: F22(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
        case 6: F23(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
        default: F24(n, wp, w_stride, ap, a_stride, yp, y_stride); break;
      }
    }
  }
}

void tile_q4_k(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int nc, float* y, size_t ys) {
  tile_dispatch<tile_q4_k_rc<1, 1>, tile_q4_k_rc<1, 2>, tile_q4_k_rc<1, 3>, tile_q4_k_rc<1, 4>, tile_q4_k_rc<2, 1>,
                tile_q4_k_rc<2, 2>, tile_q4_k_rc<2, 3>, tile_q4_k_rc<2, 4>>(n, w, ws, nr, a, as, nc, y, ys);
}
void tile_q6_k(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int nc, float* y, size_t ys) {
  tile_dispatch<tile_q6_k_rc<1, 1>, tile_q6_k_rc<1, 2>, tile_q6_k_rc<1, 3>, tile_q6_k_rc<1, 4>, tile_q6_k_rc<2, 1>,
                tile_q6_k_rc<2, 2>, tile_q6_k_rc<2, 3>, tile_q6_k_rc<2, 4>>(n, w, ws, nr, a, as, nc, y, ys);
}

// ---------------------------------------------------------------- packed panels (prefill)
// As for Q4_0/Q8_0 (legacy_quants_avx512.cpp): a panel of 32 weight rows is unpacked, once per
// matmul call, into a thread-local buffer in the microkernel's layout, and every token of the
// call runs over it. Per super-block: 64 x 2 vectors of 64 bytes (vector [k][v] holds dword k,
// elements 4k..4k+3, of rows 16v..16v+15 as unsigned bytes: Q4_K's 0..15, Q6_K's 0..63), then
// f32 sub-block scales d * sc[j] per row ([j][v][16]); Q4_K adds its 8 mins as int16 pairs
// ([k][v][16], m[2k] | m[2k+1] << 16) and -dmin per row.
// Activations are Q8_K quantized (the same bytes and scale), then laid out per token as the
// int8 quants contiguous, d per super-block (f32), sums of 32 as int16 (8 per super-block)
// and -32 * sums of 16 as int32 (16 per super-block).
// Per super-block, (row, token): vpdpbusd over each sub-block into int32 (Q6_K starting at the
// -32 offset correction), one convert and FMA by the row's sub-block scale into a super-block
// float sum; Q4_K: the mins . sums of 32 by 4 vpdpwssd, times -dmin; then one FMA by the token's
// d. Every output sees the same operations whatever the panel's fill or the token count.
#ifndef LLMESH_KPF
#define LLMESH_KPF 4
#endif
constexpr int kKPanelRows = 32;
constexpr int kKPanelTokens = 4;
constexpr size_t kKQuantBytes = 64 * 128;                              // 8192
constexpr size_t kQ4KPanelBytes = kKQuantBytes + 8 * 128 + 4 * 128 + 128;  // scales, min pairs, -dmin
constexpr size_t kQ6KPanelBytes = kKQuantBytes + 16 * 128;

void (*g_quantize_q8_k)(const float*, void*, int64_t) = nullptr;

size_t kpanel_act_bytes(int64_t n) { return static_cast<size_t>(n + (n / QK_K) * (4 + 16 + 64)); }

void kpanel_quantize_act(const float* x, void* dst, int64_t n) {
  auto* q = static_cast<int8_t*>(dst);
  const int64_t nsb = n / QK_K;
  auto* d = reinterpret_cast<float*>(q + n);
  auto* s32 = reinterpret_cast<int16_t*>(q + n + 4 * nsb);
  auto* o16 = reinterpret_cast<int32_t*>(q + n + 20 * nsb);
  BlockQ8K blk;
  for (int64_t i = 0; i < nsb; ++i) {
    g_quantize_q8_k(x + i * QK_K, &blk, QK_K);
    std::memcpy(q + i * QK_K, blk.qs, QK_K);
    d[i] = blk.d;
    for (int j = 0; j < 8; ++j) s32[8 * i + j] = static_cast<int16_t>(blk.bsums[2 * j] + blk.bsums[2 * j + 1]);
    for (int j = 0; j < 16; ++j) o16[16 * i + j] = -32 * blk.bsums[j];
  }
}

// The packed weight panel of this thread (a few hundred KiB, reused by every call).
thread_local ScratchBuffer t_kpanel;

// Super-block rows -> unsigned element bytes in element order, and the row's scales.
struct Q4KRow {
  static constexpr size_t kBytes = kQ4KPanelBytes;
  static void unpack(const uint8_t* blk, uint8_t* out, float* dsc, uint32_t* mpairs, float* ndmin) {
    const auto* b = reinterpret_cast<const BlockQ4K*>(blk);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int ch = 0; ch < 4; ++ch) {
      const __m256i q = load256(b->qs + 32 * ch);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + 64 * ch), _mm256_and_si256(q, m4));
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + 64 * ch + 32), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
    }
    uint8_t sc[8], mn[8];
    unpack_scale_min_k4(b->scales, sc, mn);
    const float d = fp16(b->d);
    for (int j = 0; j < 8; ++j) dsc[j] = d * static_cast<float>(sc[j]);
    for (int k = 0; k < 4; ++k) mpairs[k] = static_cast<uint32_t>(mn[2 * k]) | static_cast<uint32_t>(mn[2 * k + 1]) << 16;
    *ndmin = -fp16(b->dmin);
  }
};
struct Q6KRow {
  static constexpr size_t kBytes = kQ6KPanelBytes;
  static void unpack(const uint8_t* blk, uint8_t* out, float* dsc, uint32_t*, float*) {
    const auto* b = reinterpret_cast<const BlockQ6K*>(blk);
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(0x03);
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = load256(b->ql + 64 * h), l1 = load256(b->ql + 64 * h + 32), qh = load256(b->qh + 32 * h);
      auto put = [&](int j, __m256i lo, int shift) {
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, shift), m3);
        _mm256_store_si256(reinterpret_cast<__m256i*>(out + 128 * h + 32 * j),
                           _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
      };
      put(0, _mm256_and_si256(l0, m4), 0);
      put(1, _mm256_and_si256(l1, m4), 2);
      put(2, _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), 4);
      put(3, _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), 6);
    }
    const float d = fp16(b->d);
    for (int j = 0; j < 16; ++j) dsc[j] = d * static_cast<float>(b->scales[j]);
  }
};

// Dwords 4g..4g+3 of 16 staged rows (256 bytes each) -> 4 vectors, dword r = row r: lane i of
// z[j] holds row 4i + j, and a 4x4 dword transpose inside each 128-bit lane puts row 4i + j's
// dword k at position 4i + j of vector k.
inline void transpose16x4(const uint8_t* tmp, int g, __m512i out[4]) {
  __m512i z[4];
  LLMESH_UNROLL for (int j = 0; j < 4; ++j) {
    __m512i v = _mm512_castsi128_si512(_mm_load_si128(reinterpret_cast<const __m128i*>(tmp + 256 * j + 16 * g)));
    v = _mm512_inserti32x4(v, _mm_load_si128(reinterpret_cast<const __m128i*>(tmp + 256 * (4 + j) + 16 * g)), 1);
    v = _mm512_inserti32x4(v, _mm_load_si128(reinterpret_cast<const __m128i*>(tmp + 256 * (8 + j) + 16 * g)), 2);
    z[j] = _mm512_inserti32x4(v, _mm_load_si128(reinterpret_cast<const __m128i*>(tmp + 256 * (12 + j) + 16 * g)), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t2);
  out[1] = _mm512_unpackhi_epi64(t0, t2);
  out[2] = _mm512_unpacklo_epi64(t1, t3);
  out[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Packs nr <= 32 rows of nsb super-blocks (missing rows: row 0's bytes with zero scales).
template <class Row>
void kpack_panel(int64_t nsb, const uint8_t* w, size_t ws, int nr, uint8_t* dst) {
  alignas(64) uint8_t tmp[16 * 256];
  alignas(64) float dsc[16][16];
  alignas(64) uint32_t mp[16][4];
  alignas(64) float nd[16];
  constexpr int kSub = std::is_same_v<Row, Q4KRow> ? 8 : 16;
  constexpr size_t kRowBytes = std::is_same_v<Row, Q4KRow> ? sizeof(BlockQ4K) : sizeof(BlockQ6K);
  constexpr int64_t kAhead = LLMESH_KPF;
  for (int64_t sb = 0; sb < nsb; ++sb) {
    uint8_t* out = dst + sb * Row::kBytes;
    for (int v = 0; v < 2; ++v) {
      for (int r = 0; r < 16; ++r) {
        const int row = 16 * v + r;
        const uint8_t* src = w + static_cast<size_t>(row < nr ? row : 0) * ws + sb * kRowBytes;
        // 32 rows read a super-block at a time are too many streams for the hardware
        // prefetchers: fetch this row's super-block kAhead further on
        if (sb + kAhead < nsb)
          for (size_t o = 0; o < kRowBytes + 63; o += 64)
            _mm_prefetch(reinterpret_cast<const char*>(src + kAhead * kRowBytes + std::min(o, kRowBytes - 1)), _MM_HINT_T0);
        Row::unpack(src, tmp + 256 * r, dsc[r], mp[r],
                    &nd[r]);
        if (row >= nr) {
          for (int j = 0; j < kSub; ++j) dsc[r][j] = 0.0f;
          for (int k = 0; k < 4; ++k) mp[r][k] = 0;
          nd[r] = 0.0f;
        }
      }
      for (int g = 0; g < 16; ++g) {
        __m512i q[4];
        transpose16x4(tmp, g, q);
        LLMESH_UNROLL for (int k = 0; k < 4; ++k) _mm512_store_si512(out + (4 * g + k) * 128 + v * 64, q[k]);
      }
      for (int j = 0; j < kSub; ++j)
        for (int r = 0; r < 16; ++r) reinterpret_cast<float*>(out + kKQuantBytes + j * 128 + v * 64)[r] = dsc[r][j];
      if constexpr (std::is_same_v<Row, Q4KRow>) {
        for (int k = 0; k < 4; ++k)
          for (int r = 0; r < 16; ++r)
            reinterpret_cast<uint32_t*>(out + kKQuantBytes + 8 * 128 + k * 128 + v * 64)[r] = mp[r][k];
        for (int r = 0; r < 16; ++r) reinterpret_cast<float*>(out + kKQuantBytes + 12 * 128 + v * 64)[r] = nd[r];
      }
    }
  }
}

template <class Row, int T>
void kpanel_micro(int64_t n, const uint8_t* pk, int nr, const uint8_t* a, size_t as, float* y, size_t ys) {
  constexpr bool kQ4 = std::is_same_v<Row, Q4KRow>;
  const int64_t nsb = n / QK_K;
  const int8_t* aq[T];
  const float* ad[T];
  const int16_t* as32[T];
  const int32_t* ao[T];
  LLMESH_UNROLL for (int t = 0; t < T; ++t) {
    aq[t] = reinterpret_cast<const int8_t*>(a + t * as);
    ad[t] = reinterpret_cast<const float*>(a + t * as + n);
    as32[t] = reinterpret_cast<const int16_t*>(a + t * as + n + 4 * nsb);
    ao[t] = reinterpret_cast<const int32_t*>(a + t * as + n + 20 * nsb);
  }
  auto bcast = [](const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  };
  __m512 acc[2][T];
  LLMESH_UNROLL for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* blk = pk + sb * Row::kBytes;
    __m512 sacc[2][T];
    LLMESH_UNROLL for (int t = 0; t < T; ++t) sacc[0][t] = sacc[1][t] = _mm512_setzero_ps();
    constexpr int kSub = kQ4 ? 8 : 16, kDw = kQ4 ? 8 : 4;
#pragma GCC unroll 2
    for (int j = 0; j < kSub; ++j) {
      __m512i p[2][T];
      LLMESH_UNROLL for (int t = 0; t < T; ++t) {
        if constexpr (kQ4) p[0][t] = p[1][t] = _mm512_setzero_si512();
        else p[0][t] = p[1][t] = _mm512_set1_epi32(ao[t][sb * 16 + j]);
      }
      LLMESH_UNROLL for (int k = 0; k < kDw; ++k) {
        const uint8_t* wk = blk + (kDw * j + k) * 128;
        const __m512i w0 = _mm512_load_si512(wk), w1 = _mm512_load_si512(wk + 64);
        LLMESH_UNROLL for (int t = 0; t < T; ++t) {
          const __m512i ab = bcast(aq[t] + sb * QK_K + 4 * (kDw * j + k));
          p[0][t] = _mm512_dpbusd_epi32(p[0][t], w0, ab);
          p[1][t] = _mm512_dpbusd_epi32(p[1][t], w1, ab);
        }
      }
      const __m512 s0 = _mm512_load_ps(blk + kKQuantBytes + j * 128), s1 = _mm512_load_ps(blk + kKQuantBytes + j * 128 + 64);
      LLMESH_UNROLL for (int t = 0; t < T; ++t) {
        sacc[0][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[0][t]), s0, sacc[0][t]);
        sacc[1][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[1][t]), s1, sacc[1][t]);
      }
    }
    if constexpr (kQ4) {
      __m512i m[2][T];
      LLMESH_UNROLL for (int t = 0; t < T; ++t) m[0][t] = m[1][t] = _mm512_setzero_si512();
      LLMESH_UNROLL for (int k = 0; k < 4; ++k) {
        const uint8_t* mk = blk + kKQuantBytes + 8 * 128 + k * 128;
        const __m512i m0 = _mm512_load_si512(mk), m1 = _mm512_load_si512(mk + 64);
        LLMESH_UNROLL for (int t = 0; t < T; ++t) {
          const __m512i sp = bcast(as32[t] + sb * 8 + 2 * k);
          m[0][t] = _mm512_dpwssd_epi32(m[0][t], m0, sp);
          m[1][t] = _mm512_dpwssd_epi32(m[1][t], m1, sp);
        }
      }
      const __m512 n0 = _mm512_load_ps(blk + kKQuantBytes + 12 * 128), n1 = _mm512_load_ps(blk + kKQuantBytes + 12 * 128 + 64);
      LLMESH_UNROLL for (int t = 0; t < T; ++t) {
        sacc[0][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m[0][t]), n0, sacc[0][t]);
        sacc[1][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m[1][t]), n1, sacc[1][t]);
      }
    }
    LLMESH_UNROLL for (int t = 0; t < T; ++t) {
      const __m512 da = _mm512_set1_ps(ad[t][sb]);
      acc[0][t] = _mm512_fmadd_ps(sacc[0][t], da, acc[0][t]);
      acc[1][t] = _mm512_fmadd_ps(sacc[1][t], da, acc[1][t]);
    }
  }
  const int n0 = nr < 16 ? nr : 16, n1 = nr > 16 ? nr - 16 : 0;
  const __mmask16 k0 = static_cast<__mmask16>((1u << n0) - 1), k1 = static_cast<__mmask16>((1u << n1) - 1);
  LLMESH_UNROLL for (int t = 0; t < T; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, k0, acc[0][t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, k1, acc[1][t]);
  }
}

template <class Row>
void kpanel_gemm(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int64_t nc, float* y,
                 size_t ys) {
  const int64_t nsb = n / QK_K;
  uint8_t* pk = t_kpanel.get(static_cast<size_t>(nsb) * Row::kBytes);
  kpack_panel<Row>(nsb, static_cast<const uint8_t*>(w), ws, nr, pk);
  const auto* ap = static_cast<const uint8_t*>(a);
  int64_t c = 0;
  // While the tokens run over this panel, fetch the next panel's rows (contiguous after these;
  // past a chunk's or the matrix's end is harmless) into L2, a share per token tile.
  const size_t next_bytes = static_cast<size_t>(kKPanelRows) * ws;
  const char* next = static_cast<const char*>(w) + next_bytes;
  const int64_t tiles = nc / kKPanelTokens;
  const size_t share = tiles > 0 ? (next_bytes / tiles + 63) / 64 * 64 : 0;
  for (int64_t i = 0; c + kKPanelTokens <= nc; c += kKPanelTokens, ++i) {
    for (size_t o = i * share; o < (i + 1) * share && o < next_bytes; o += 64) _mm_prefetch(next + o, _MM_HINT_T1);
    kpanel_micro<Row, kKPanelTokens>(n, pk, nr, ap + c * as, as, y + c * ys, ys);
  }
  static_assert(kKPanelTokens == 4);
  switch (nc - c) {
    case 1: kpanel_micro<Row, 1>(n, pk, nr, ap + c * as, as, y + c * ys, ys); break;
    case 2: kpanel_micro<Row, 2>(n, pk, nr, ap + c * as, as, y + c * ys, ys); break;
    case 3: kpanel_micro<Row, 3>(n, pk, nr, ap + c * as, as, y + c * ys, ys); break;
    default: break;
  }
}

}  // namespace

void register_kquant_avx512(TypeKernels* table) {
  auto set = [&](DType t, float (*dot)(int64_t, const void*, const void*)) {
    table[static_cast<uint32_t>(t)].vec_dot = dot;
  };
  set(DType::Q2_K, dot_q2_k);
  set(DType::Q3_K, dot_q3_k);
  set(DType::Q4_K, dot_q4_k);
  set(DType::Q5_K, dot_q5_k);
  set(DType::Q6_K, dot_q6_k);
  auto set_tile = [&](DType t, decltype(TypeKernels::tile) f) {
    TypeKernels& k = table[static_cast<uint32_t>(t)];
    k.tile = f;
    k.tile_rows = kTileRows;
    k.tile_cols = kTileCols;
  };
  set_tile(DType::Q4_K, tile_q4_k);
  set_tile(DType::Q6_K, tile_q6_k);
  // the Q8_K quantizer registered so far (the AVX2 one): the panel activations use its bytes
  g_quantize_q8_k = table[static_cast<uint32_t>(DType::Q4_K)].quantize_act;
  auto set_panel = [&](DType t, decltype(TypeKernels::panel) f) {
    TypeKernels& k = table[static_cast<uint32_t>(t)];
    k.panel_act_bytes = &kpanel_act_bytes;
    k.panel_quantize_act = &kpanel_quantize_act;
    k.panel = f;
    k.panel_rows = kKPanelRows;
    k.panel_min_tokens = 10;  // measured crossover with the tiles: about 8 tokens
  };
  if (g_quantize_q8_k) {
    set_panel(DType::Q4_K, &kpanel_gemm<Q4KRow>);
    set_panel(DType::Q6_K, &kpanel_gemm<Q6KRow>);
  }
}

}  // namespace llmesh::kernels::kq
