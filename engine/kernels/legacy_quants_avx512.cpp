// AVX-512 (F, BW, VL, DQ, VNNI) kernels of the legacy family: vpdpbusd int8 products for the
// block formats (Q8_0 weights as w + 128 with a -128 * sum(a) correction), 512-bit float kernels
// for F32/F16/BF16, and 512-bit activation quantization.
// GCC 12 flags its own _mm512_undefined_* placeholders inside the intrinsic headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/fp16.h"
#include "kernels/legacy_quants.h"

namespace llmesh::kernels {
namespace {
#include "kernels/legacy_quants_x86.inl"

// ---- 512-bit tiles for Q4_0 and Q8_0 -----------------------------------------------------
// Two blocks (b, b+1) per 512-bit vector. For a group of 4 rows, the 4 weight vectors are
// transposed as 4x4 dwords inside each 128-bit lane, so that vector k holds dword k of rows
// 0..3; the activation's dword k is broadcast across its lane (vpshufd). Four vpdpbusd then
// accumulate, in lane [L][i], row i's products over the 16 bytes of 128-bit lane L: no lane
// reduction is needed before the single convert / scale / FMA per (4 rows, token, 2 blocks).
// Which block each 128-bit lane belongs to depends on the format (Q4_0: [lo b, lo b+1, hi b,
// hi b+1]; Q8_0: [b, b, b+1, b+1]). An odd last block is paired with an all-zero block.
struct Q4_0Wide {
  using W = BlockQ4_0;
  static constexpr int kOffset = 8;
  static __m512i weights(const W& b0, const W& b1) {
    const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(load16(b0.qs)), load16(b1.qs), 1);
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
  }
  static __m512i acts(const BlockQ8_0& a0, const BlockQ8_0& a1) {
    const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(load16(a0.qs)), load16(a1.qs), 1);
    const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(load16(a0.qs + 16)), load16(a1.qs + 16), 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
  // lane [L][i] -> index into [x_b(0..3), x_b1(0..3)] (per row) or [x_b, x_b1] (per token)
  static __m512i row_idx() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7); }
  static __m512i tok_idx() { return _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1); }
};
struct Q8_0Wide {
  using W = BlockQ8_0;
  static constexpr int kOffset = 128;
  static __m512i weights(const W& b0, const W& b1) {
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(load32(b0.qs)), load32(b1.qs), 1);
    return _mm512_xor_si512(z, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
  static __m512i acts(const BlockQ8_0& a0, const BlockQ8_0& a1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(load32(a0.qs)), load32(a1.qs), 1);
  }
  static __m512i row_idx() { return _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7); }
  static __m512i tok_idx() { return _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1); }
};

alignas(64) constexpr uint8_t kZeroBlock[64] = {};


// vpinsrw from memory; k is a constant once the caller's loop is unrolled.
inline __m128i insert_u16(__m128i v, const uint16_t* p, int k) {
  switch (k) {
    case 1: return _mm_insert_epi16(v, *p, 1);
    case 2: return _mm_insert_epi16(v, *p, 2);
    case 3: return _mm_insert_epi16(v, *p, 3);
    case 4: return _mm_insert_epi16(v, *p, 4);
    case 5: return _mm_insert_epi16(v, *p, 5);
    case 6: return _mm_insert_epi16(v, *p, 6);
    case 7: return _mm_insert_epi16(v, *p, 7);
    default: return _mm_insert_epi16(v, *p, 0);
  }
}

template <class F, int RG, int C>
void tile_wide(int64_t n, const void* wp, size_t ws, int nr, const void* ap, size_t as, int nc, float* y,
               size_t ys) {
  using W = typename F::W;
  constexpr int R = 4 * RG;
  const W* wrow[R];
  const BlockQ8_0* arow[C];
  for (int r = 0; r < R; ++r)
    wrow[r] = reinterpret_cast<const W*>(static_cast<const uint8_t*>(wp) + (r < nr ? r : 0) * ws);
  for (int c = 0; c < C; ++c)
    arow[c] = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(ap) + (c < nc ? c : 0) * as);
  const W& wzero = *reinterpret_cast<const W*>(kZeroBlock);
  const BlockQ8_0& azero = *reinterpret_cast<const BlockQ8_0*>(kZeroBlock);
  const __m512i row_idx = F::row_idx(), tok_idx = F::tok_idx();
  __m512 acc[RG][C];
#pragma GCC unroll 8
  for (int g = 0; g < RG; ++g)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[g][c] = _mm512_setzero_ps();
  const char* next_tile = static_cast<const char*>(wp) + R * ws;
  const int64_t nb = n / kQK;
  // One pair of blocks (b, b+1); without Two the second block is the zero block.
  auto pair = [&]<bool Two>(int64_t b) __attribute__((always_inline)) {
    constexpr bool two = Two;
    if constexpr (C == 1) {
      // Decode streams the weights once: while this tile's rows are consumed, fetch the next
      // tile's rows (the same number of bytes, contiguous right after them) at the same pace.
      constexpr int kBytes = 2 * R * static_cast<int>(sizeof(W));
      const char* pf = next_tile + (b / 2) * kBytes;
#pragma GCC unroll 16
      for (int k = 0; k < kBytes; k += 64) _mm_prefetch(pf + k, kPrefetchHint);
    }
    __m512i v[RG][4];
    __m512 dw[RG];
#pragma GCC unroll 8
    for (int g = 0; g < RG; ++g) {
      __m512i z[4];
      // The 8 fp16 scales [rows 0..3 of block b, rows 0..3 of block b+1], inserted from memory
      // (eight 2-byte stores and one 16-byte reload would stall store forwarding).
      __m128i d16 = _mm_cvtsi32_si128(wrow[4 * g][b].d);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const W& b0 = wrow[4 * g + i][b];
        const W& b1 = two ? wrow[4 * g + i][b + 1] : wzero;
        z[i] = F::weights(b0, b1);
        if (i > 0) d16 = insert_u16(d16, &b0.d, i);
        d16 = insert_u16(d16, &b1.d, 4 + i);
      }
      const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
      const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
      v[g][0] = _mm512_unpacklo_epi64(t0, t2);
      v[g][1] = _mm512_unpackhi_epi64(t0, t2);
      v[g][2] = _mm512_unpacklo_epi64(t1, t3);
      v[g][3] = _mm512_unpackhi_epi64(t1, t3);
      const __m256 d8 = _mm256_cvtph_ps(d16);
      dw[g] = _mm512_permutexvar_ps(row_idx, _mm512_castps256_ps512(d8));
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const BlockQ8_0& a0 = arow[c][b];
      const BlockQ8_0& a1 = two ? arow[c][b + 1] : azero;
      const __m512i a = F::acts(a0, a1);
      // -offset * (sum of the 16 activation bytes of each 128-bit lane), in every dword
      __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(F::kOffset), a);
      s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_BADC));
      s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_CDAB));
      const __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(), s);
      const __m512i a0b = _mm512_shuffle_epi32(a, _MM_PERM_AAAA), a1b = _mm512_shuffle_epi32(a, _MM_PERM_BBBB);
      const __m512i a2b = _mm512_shuffle_epi32(a, _MM_PERM_CCCC), a3b = _mm512_shuffle_epi32(a, _MM_PERM_DDDD);
      const uint32_t dpair = static_cast<uint32_t>(a0.d) | static_cast<uint32_t>(a1.d) << 16;
      const __m128 da2 = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dpair)));
      const __m512 da = _mm512_permutexvar_ps(tok_idx, _mm512_castps128_ps512(da2));
#pragma GCC unroll 8
      for (int g = 0; g < RG; ++g) {
        // two chains of two (integer sums: exact in any order) for a shorter dependency path
        const __m512i p01 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(base, v[g][0], a0b), v[g][1], a1b);
        const __m512i p23 =
            _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), v[g][2], a2b), v[g][3], a3b);
        const __m512i p = _mm512_add_epi32(p01, p23);
        acc[g][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[g], da), acc[g][c]);
      }
    }
    };
  int64_t b = 0;
  for (; b + 1 < nb; b += 2) pair.template operator()<true>(b);
  if (b < nb) pair.template operator()<false>(b);
#pragma GCC unroll 8
  for (int g = 0; g < RG; ++g)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      if (c >= nc) break;
      const __m512 v = acc[g][c];
      const __m128 l0 = _mm512_castps512_ps128(v), l1 = _mm512_extractf32x4_ps(v, 1);
      const __m128 l2 = _mm512_extractf32x4_ps(v, 2), l3 = _mm512_extractf32x4_ps(v, 3);
      alignas(16) float out[4];
      _mm_store_ps(out, _mm_add_ps(_mm_add_ps(l0, l1), _mm_add_ps(l2, l3)));
      for (int i = 0; i < 4 && 4 * g + i < nr; ++i) y[c * ys + 4 * g + i] = out[i];
    }
}

template <class F, int RG, int C>
void tile_wide_any(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int nc, float* y,
                   size_t ys) {
  if constexpr (C > 1) {
    if (nc < C) return tile_wide_any<F, RG, C - 1>(n, w, ws, nr, a, as, nc, y, ys);
  }
  tile_wide<F, RG, C>(n, w, ws, nr, a, as, nc, y, ys);
}

template <class F, int RG, int C>
void set_wide(TypeKernels& k) {
  k.tile = &tile_wide_any<F, RG, C>;
  k.tile_rows = 4 * RG;
  k.tile_cols = C;
}
}  // namespace

#ifndef LLMESH_WIDE_RG
#define LLMESH_WIDE_RG 3
#define LLMESH_WIDE_C 8
#endif
constexpr int kWideRowGroups = LLMESH_WIDE_RG, kWideTokens = LLMESH_WIDE_C;

void register_legacy_avx512(TypeKernels* table) {
  auto at = [&](DType t) -> TypeKernels& { return table[static_cast<uint32_t>(t)]; };
  set_q4rows<Q4_0Fmt, 2, 4>(at(DType::Q4_0), quantize_q8_0);
  set_q4rows<Q5_0Fmt, 2, 4>(at(DType::Q5_0), quantize_q8_0);
  set_q4rows<Q4_1Fmt, 2, 2>(at(DType::Q4_1), quantize_q8_1);
  set_q4rows<Q5_1Fmt, 2, 2>(at(DType::Q5_1), quantize_q8_1);
  set_q4rows<Q8_0Fmt, 2, 4>(at(DType::Q8_0), quantize_q8_0);
  set_wide<Q4_0Wide, kWideRowGroups, kWideTokens>(at(DType::Q4_0));
  set_wide<Q8_0Wide, kWideRowGroups, kWideTokens>(at(DType::Q8_0));
  set_kernels<FTile<DType::F32>::template K, 4, 4>(at(DType::F32), nullptr);
  set_kernels<FTile<DType::F16>::template K, 4, 4>(at(DType::F16), nullptr);
  set_kernels<FTile<DType::BF16>::template K, 4, 4>(at(DType::BF16), nullptr);
}

}  // namespace llmesh::kernels
