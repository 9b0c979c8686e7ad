// AVX-512 (F, BW, VL, DQ, VNNI) kernels of the legacy family: vpdpbusd int8 products for the
// block formats (Q8_0 weights as w + 128 with a -128 * sum(a) correction), 512-bit float kernels
// for F32/F16/BF16, and 512-bit activation quantization.
// GCC 12 flags its own _mm512_undefined_* placeholders inside the intrinsic headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>

#include "kernels/fp16.h"
#include "kernels/legacy_quants.h"
#include "kernels/scratch_buffer.h"

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

// ---- Packed panels for many tokens (Q4_0, Q8_0) ------------------------------------------
// A panel of 32 weight rows is packed, once per matmul call, into a thread-local buffer laid
// out for the microkernel: per block b, 8 x 2 vectors of 64 bytes (vector [k][v] holds dword k,
// i.e. elements 4k..4k+3, of rows 16v..16v+15 as unsigned bytes: Q4_0 nibbles expanded, Q8_0
// as w + 128), then the 32 row scales as f32. Activations of the call are quantized to the
// panel format: per token, the int8 quants contiguous, then per block the f32 scale and
// -offset * sum(quants) as int32 (the offset correction, exact in int32).
// The microkernel, for 32 rows x T tokens and each block: starts the int32 sums at the offset
// correction, 8 x 2 x T vpdpbusd with the activation dword broadcast from memory, then one
// convert and (d_w * d_a) FMA per 16 (row, token) pairs. Every output sees the same sequence of
// operations (integer block sums, then float FMAs in block order) whatever the panel's fill,
// the token count or the thread, so results do not depend on them.
constexpr int kPanelRows = 32;
#ifndef LLMESH_PT
#define LLMESH_PT 6
#endif
constexpr int kPanelTokens = LLMESH_PT;
constexpr int64_t kPanelBlockBytes = 8 * 2 * 64 + kPanelRows * 4;

inline size_t panel_act_bytes(int64_t n) { return static_cast<size_t>(n + (n / kQK) * 8); }

template <int kOffset>
void quantize_panel_act(const float* x, void* dst, int64_t n) {
  auto* q = static_cast<int8_t*>(dst);
  const int64_t nb = n / kQK;
  auto* d = reinterpret_cast<float*>(q + n);
  auto* off = reinterpret_cast<int32_t*>(q + n + nb * 4);
  for (int64_t b = 0; b < nb; ++b) {
    int8_t* qb = q + b * kQK;
    // fp16-rounded scale, as in Q8_0 activation blocks
    d[b] = half_to_float(float_to_half(quantize_block(x + b * kQK, qb, nullptr)));
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb));
    const __m512i w = _mm512_cvtepi8_epi16(v);
    off[b] = -kOffset * _mm512_reduce_add_epi32(_mm512_madd_epi16(w, _mm512_set1_epi16(1)));
  }
}

// The packed weight panel of this thread (a few hundred KiB, reused by every call).
thread_local ScratchBuffer t_panel;

// Dword k (k < 4) of the 16 bytes at rows[r] + off, for r < 16, as vector k (dword r = row r):
// lane i of Z_j holds row 4i + j, and a 4x4 dword transpose inside each 128-bit lane then
// puts row 4i + j's dword k at position 4i + j of vector k.
inline void transpose16x4(const uint8_t* const* rows, size_t off, __m512i out[4]) {
  __m512i z[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512i v = _mm512_castsi128_si512(load16(rows[j] + off));
    v = _mm512_inserti32x4(v, load16(rows[4 + j] + off), 1);
    v = _mm512_inserti32x4(v, load16(rows[8 + j] + off), 2);
    z[j] = _mm512_inserti32x4(v, load16(rows[12 + j] + off), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t2);
  out[1] = _mm512_unpackhi_epi64(t0, t2);
  out[2] = _mm512_unpacklo_epi64(t1, t3);
  out[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Packs nr <= 32 rows (missing rows: copies of row 0 with zero scales) of nb blocks into dst.
template <class W>
void pack_panel(int64_t nb, const uint8_t* w, size_t ws, int nr, uint8_t* dst) {
  for (int v = 0; v < 2; ++v) {
    const int have = std::clamp(nr - 16 * v, 0, 16);
    const __mmask16 m = static_cast<__mmask16>((1u << have) - 1);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(ws)));
    const uint8_t* rows[16];
    for (int r = 0; r < 16; ++r) rows[r] = w + (r < have ? static_cast<size_t>(16 * v + r) * ws : 0);
    for (int64_t b = 0; b < nb; ++b) {
      const size_t boff = static_cast<size_t>(b) * sizeof(W);
      uint8_t* out = dst + b * kPanelBlockBytes + v * 64;
      __m512i q[4];
      if constexpr (std::is_same_v<W, BlockQ4_0>) {
        const __m512i lo4 = _mm512_set1_epi8(0x0F);
        transpose16x4(rows, boff + 2, q);
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          _mm512_store_si512(out + k * 128, _mm512_and_si512(q[k], lo4));
          _mm512_store_si512(out + (k + 4) * 128, _mm512_and_si512(_mm512_srli_epi16(q[k], 4), lo4));
        }
      } else {
        const __m512i x80 = _mm512_set1_epi8(static_cast<char>(0x80));
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          transpose16x4(rows, boff + 2 + 16 * h, q);
#pragma GCC unroll 4
          for (int k = 0; k < 4; ++k) _mm512_store_si512(out + (4 * h + k) * 128, _mm512_xor_si512(q[k], x80));
        }
      }
      const __m512i d = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, w + 16 * v * ws * (have > 0) + boff, 1);
      _mm512_store_ps(dst + b * kPanelBlockBytes + 1024 + v * 64, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d)));
    }
  }
}

template <int T>
void panel_micro(int64_t n, const uint8_t* pk, int nr, const uint8_t* a, size_t as, float* y, size_t ys) {
  const int64_t nb = n / kQK;
  const int8_t* aq[T];
  const float* ad[T];
  const int32_t* ao[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    aq[t] = reinterpret_cast<const int8_t*>(a + t * as);
    ad[t] = reinterpret_cast<const float*>(a + t * as + n);
    ao[t] = reinterpret_cast<const int32_t*>(a + t * as + n + nb * 4);
  }
  __m512 acc[2][T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = pk + b * kPanelBlockBytes;
    __m512i p[2][T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) p[0][t] = p[1][t] = _mm512_set1_epi32(ao[t][b]);
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const __m512i w0 = _mm512_load_si512(blk + k * 128), w1 = _mm512_load_si512(blk + k * 128 + 64);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        int32_t av;
        std::memcpy(&av, aq[t] + b * kQK + 4 * k, 4);
        const __m512i ab = _mm512_set1_epi32(av);
        p[0][t] = _mm512_dpbusd_epi32(p[0][t], w0, ab);
        p[1][t] = _mm512_dpbusd_epi32(p[1][t], w1, ab);
      }
    }
    const __m512 dw0 = _mm512_load_ps(blk + 1024), dw1 = _mm512_load_ps(blk + 1088);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 da = _mm512_set1_ps(ad[t][b]);
      acc[0][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[0][t]), _mm512_mul_ps(dw0, da), acc[0][t]);
      acc[1][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[1][t]), _mm512_mul_ps(dw1, da), acc[1][t]);
    }
  }
  const __mmask16 m0 = static_cast<__mmask16>((1u << std::clamp(nr, 0, 16)) - 1);
  const __mmask16 m1 = static_cast<__mmask16>((1u << std::clamp(nr - 16, 0, 16)) - 1);
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, acc[0][t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, acc[1][t]);
  }
}

// The last nc < kPanelTokens tokens.
template <int T>
void panel_tail(int nc, int64_t n, const uint8_t* pk, int nr, const uint8_t* a, size_t as, float* y, size_t ys) {
  if constexpr (T > 1) {
    if (nc < T) return panel_tail<T - 1>(nc, n, pk, nr, a, as, y, ys);
  }
  panel_micro<T>(n, pk, nr, a, as, y, ys);
}

template <class W>
void panel_gemm(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int64_t nc, float* y,
                size_t ys) {
  const int64_t nb = n / kQK;
  uint8_t* pk = t_panel.get(static_cast<size_t>(nb * kPanelBlockBytes));
  pack_panel<W>(nb, static_cast<const uint8_t*>(w), ws, nr, pk);
  const auto* ap = static_cast<const uint8_t*>(a);
  int64_t c = 0;
  // While the tokens run over this panel, fetch the next panel's rows (contiguous after these;
  // past a chunk's or the matrix's end is harmless) into L2, a share per token tile, so the
  // next pack does not wait for DRAM.
  const size_t next_bytes = static_cast<size_t>(kPanelRows) * ws;
  const char* next = static_cast<const char*>(w) + next_bytes;
  const int64_t tiles = nc / kPanelTokens;
  const size_t share = tiles > 0 ? (next_bytes / tiles + 63) / 64 * 64 : 0;
  for (int64_t i = 0; c + kPanelTokens <= nc; c += kPanelTokens, ++i) {
    for (size_t o = i * share; o < (i + 1) * share && o < next_bytes; o += 64) _mm_prefetch(next + o, _MM_HINT_T1);
    panel_micro<kPanelTokens>(n, pk, nr, ap + c * as, as, y + c * ys, ys);
  }
  if (c < nc) panel_tail<kPanelTokens - 1>(static_cast<int>(nc - c), n, pk, nr, ap + c * as, as, y + c * ys, ys);
}

template <class W, int kOffset>
void set_panel(TypeKernels& k) {
  k.panel_act_bytes = &panel_act_bytes;
  k.panel_quantize_act = &quantize_panel_act<kOffset>;
  k.panel = &panel_gemm<W>;
  k.panel_rows = kPanelRows;
  k.panel_min_tokens = 8;  // measured crossover with the 12x8 tiles: 6-7 tokens
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
  set_panel<BlockQ4_0, 8>(at(DType::Q4_0));
  set_panel<BlockQ8_0, 128>(at(DType::Q8_0));
  set_kernels<FTile<DType::F32>::template K, 4, 4>(at(DType::F32), nullptr);
  set_kernels<FTile<DType::F16>::template K, 4, 4>(at(DType::F16), nullptr);
  set_kernels<FTile<DType::BF16>::template K, 4, 4>(at(DType::BF16), nullptr);
}

}  // namespace llmesh::kernels
