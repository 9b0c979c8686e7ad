// x86 SIMD kernels of the legacy family, compiled twice: by legacy_quants_avx2.cpp (AVX2, FMA,
// F16C: int8 products with vpmaddubsw) and by legacy_quants_avx512.cpp (adds AVX-512VL VNNI:
// vpdpbusd, and 512-bit float kernels). Included inside an anonymous namespace there.
//
// Quantized products work one 32-element block per 256-bit vector. Unsigned weight bytes u
// (Q4: 0..15, Q5: 0..31, Q8_0 under VNNI: w + 128) times signed activation bytes give per-lane
// int32 sums; for the offset formats the accumulator starts at -offset * sum(a) per block (one
// extra product per token, shared by every row of a tile). Each lane's int32 is converted and
// scaled by d_w * d_a into a float accumulator per (row, token); the lanes are summed at the end.
// A tile of R rows x C tokens loads each weight block once and each activation block once.
// Every output is computed in the same order whatever the tile's fill, so threading and tiling
// do not change results. (The AVX-512 file adds 512-bit tiles for Q4_0 and Q8_0.)

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline __m256 bcast_half(uint16_t h) { return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(h))); }
inline float half(uint16_t h) { return _cvtsh_ss(h); }
inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i load16(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// acc + per-lane sums of 4 products u8 * s8 (pairs must not saturate int16 without VNNI).
inline __m256i dot_us(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// 16 packed nibbles -> 32 bytes in element order (low nibbles 0..15, high nibbles 16..31).
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i q = load16(qs);
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// 32-bit mask -> 32 bytes, 0x10 where the bit is set.
inline __m256i expand_bits(const uint8_t* qh) {
  uint32_t m;
  std::memcpy(&m, qh, 4);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  return _mm256_maskz_set1_epi8(m, 0x10);
#else
  const __m256i bytes = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(m)),
      _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
#endif
}

// Weight formats: the unsigned bytes of one block, the offset subtracted from them, the scale and
// the optional min. Activation blocks: Q8_0 {d, qs} or Q8_1 {d, s, qs}.
struct Q4_0Fmt {
  using W = BlockQ4_0;
  using A = BlockQ8_0;
  static constexpr int kOffset = 8;
  static constexpr bool kMin = false;
  static constexpr bool kSignTrick = false;
  static __m256i bytes(const W& b) { return unpack_nibbles(b.qs); }
};
struct Q5_0Fmt {
  using W = BlockQ5_0;
  using A = BlockQ8_0;
  static constexpr int kOffset = 16;
  static constexpr bool kMin = false;
  static constexpr bool kSignTrick = false;
  static __m256i bytes(const W& b) { return _mm256_or_si256(unpack_nibbles(b.qs), expand_bits(b.qh)); }
};
struct Q4_1Fmt {
  using W = BlockQ4_1;
  using A = BlockQ8_1;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr bool kSignTrick = false;
  static __m256i bytes(const W& b) { return unpack_nibbles(b.qs); }
};
struct Q5_1Fmt {
  using W = BlockQ5_1;
  using A = BlockQ8_1;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr bool kSignTrick = false;
  static __m256i bytes(const W& b) { return _mm256_or_si256(unpack_nibbles(b.qs), expand_bits(b.qh)); }
};
#if defined(__AVX512VNNI__)
struct Q8_0Fmt {  // w + 128 as unsigned, minus 128 * sum(a)
  using W = BlockQ8_0;
  using A = BlockQ8_0;
  static constexpr int kOffset = 128;
  static constexpr bool kMin = false;
  static constexpr bool kSignTrick = false;
  static __m256i bytes(const W& b) { return _mm256_xor_si256(load32(b.qs), _mm256_set1_epi8(static_cast<char>(0x80))); }
};
#endif

#if !defined(__AVX512VNNI__)
struct Q8_0SignFmt {  // |w| times a with w's sign (|w| <= 128, |a| <= 127: no int16 saturation)
  using W = BlockQ8_0;
  using A = BlockQ8_0;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = false;
  static constexpr bool kSignTrick = true;
  static __m256i bytes(const W& b) { return load32(b.qs); }
};
#endif

template <class F>
inline __m256i product(__m256i base, __m256i w, __m256i a) {
  if constexpr (F::kSignTrick)
    return dot_us(base, _mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
  else
    return dot_us(base, w, a);
}

template <class F, int R, int C>
void tile_q(int64_t n, const void* wp, size_t ws, const void* ap, size_t as, float* y, size_t ys) {
  const auto* w = static_cast<const uint8_t*>(wp);
  const auto* a = static_cast<const uint8_t*>(ap);
  __m256 acc[R][C];
  float macc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      acc[r][c] = _mm256_setzero_ps();
      macc[r][c] = 0.0f;
    }
  const int64_t nb = n / kQK;
  for (int64_t b = 0; b < nb; ++b) {
    __m256i av[C], base[C];
    __m256 da[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const auto& ab = reinterpret_cast<const typename F::A*>(a + c * as)[b];
      av[c] = load32(ab.qs);
      da[c] = bcast_half(ab.d);
      if constexpr (F::kOffset != 0)
        base[c] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                   dot_us(_mm256_setzero_si256(), _mm256_set1_epi8(F::kOffset), av[c]));
      else
        base[c] = _mm256_setzero_si256();
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const auto& wb = reinterpret_cast<const typename F::W*>(w + r * ws)[b];
      const __m256i u = F::bytes(wb);
      const __m256 dw = bcast_half(wb.d);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        const __m256i p = product<F>(base[c], u, av[c]);
        acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw, da[c]), acc[r][c]);
        if constexpr (F::kMin) {
          const auto& ab = reinterpret_cast<const typename F::A*>(a + c * as)[b];
          macc[r][c] += half(wb.m) * half(ab.s);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) y[c * ys + r] = hsum8(acc[r][c]) + macc[r][c];
}

// Dot product of one row and one activation row (simple per-row kernel).
template <class F>
float tile_vec_dot(int64_t n, const void* w, const void* a) {
  float y;
  tile_q<F, 1, 1>(n, w, 0, a, 0, &y, 0);
  return y;
}

// Matmul tile with lane reduction before scaling: for 4 rows r0..r3 and one token, the four
// per-block int32 vectors are folded by three vphaddd into one vector holding, per 128-bit half,
// the partial sums of rows r0..r3; one convert, one multiply by the scales (d_w of the 4 rows
// times d_a) and one FMA then serve 4 (row, token) pairs. Row groups of 4 (RG of them) and C
// tokens per tile; missing rows/tokens of an edge tile repeat the first one (results dropped),
// so each output sees the same operations whatever the tile's fill.
// Decode (one token) streams the weights once. A tile's rows are contiguous, and so are the next
// tile's: while one tile is consumed, the next one is prefetched into L2 at the same pace (as
// many bytes per step as the step consumes). Much faster than per-row prefetches a fixed number
// of blocks ahead or the hardware prefetchers alone (x2 on Zen 4); past the end is harmless.
constexpr auto kPrefetchHint = _MM_HINT_T1;

template <class F, int RG, int C>
void tile_q4rows(int64_t n, const void* wp, size_t ws, int nr, const void* ap, size_t as, int nc, float* y,
                 size_t ys) {
  constexpr int R = 4 * RG;
  const uint8_t* wrow[R];
  const uint8_t* arow[C];
  for (int r = 0; r < R; ++r) wrow[r] = static_cast<const uint8_t*>(wp) + (r < nr ? r : 0) * ws;
  for (int c = 0; c < C; ++c) arow[c] = static_cast<const uint8_t*>(ap) + (c < nc ? c : 0) * as;
  __m256 acc[RG][C];
#pragma GCC unroll 8
  for (int g = 0; g < RG; ++g)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[g][c] = _mm256_setzero_ps();
  const char* next_tile = static_cast<const char*>(wp) + R * ws;
  const int64_t nb = n / kQK;
  for (int64_t b = 0; b < nb; ++b) {
    __m256i av[C], base[C];
    __m256 da[C], sa[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const auto& ab = reinterpret_cast<const typename F::A*>(arow[c])[b];
      av[c] = load32(ab.qs);
      da[c] = bcast_half(ab.d);
      if constexpr (F::kMin) sa[c] = bcast_half(ab.s);
      if constexpr (F::kOffset != 0)
        base[c] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                   dot_us(_mm256_setzero_si256(), _mm256_set1_epi8(F::kOffset), av[c]));
      else
        base[c] = _mm256_setzero_si256();
    }
    if constexpr (C == 1) {
      constexpr int kBytes = R * static_cast<int>(sizeof(typename F::W));
      const char* pf = next_tile + b * kBytes;
#pragma GCC unroll 16
      for (int k = 0; k < kBytes; k += 64) _mm_prefetch(pf + k, kPrefetchHint);
    }
#pragma GCC unroll 8
    for (int g = 0; g < RG; ++g) {
      const typename F::W* wb[4];
      __m256i u[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        wb[i] = reinterpret_cast<const typename F::W*>(wrow[4 * g + i]) + b;
        u[i] = F::bytes(*wb[i]);
      }
      // [d0 d1 d2 d3 d0 d1 d2 d3] as floats
      const __m128i d4 = _mm_setr_epi16(static_cast<short>(wb[0]->d), static_cast<short>(wb[1]->d),
                                        static_cast<short>(wb[2]->d), static_cast<short>(wb[3]->d),
                                        static_cast<short>(wb[0]->d), static_cast<short>(wb[1]->d),
                                        static_cast<short>(wb[2]->d), static_cast<short>(wb[3]->d));
      const __m256 dw = _mm256_cvtph_ps(d4);
      __m256 mw;
      if constexpr (F::kMin)  // mins in the low half only: the m * s term is counted once
        mw = _mm256_cvtph_ps(_mm_setr_epi16(static_cast<short>(wb[0]->m), static_cast<short>(wb[1]->m),
                                            static_cast<short>(wb[2]->m), static_cast<short>(wb[3]->m), 0, 0, 0, 0));
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m256i p01 = _mm256_hadd_epi32(product<F>(base[c], u[0], av[c]), product<F>(base[c], u[1], av[c]));
        const __m256i p23 = _mm256_hadd_epi32(product<F>(base[c], u[2], av[c]), product<F>(base[c], u[3], av[c]));
        const __m256 p = _mm256_cvtepi32_ps(_mm256_hadd_epi32(p01, p23));
        acc[g][c] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw, da[c]), acc[g][c]);
        if constexpr (F::kMin) acc[g][c] = _mm256_fmadd_ps(mw, sa[c], acc[g][c]);
      }
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < RG; ++g)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      if (c >= nc) break;
      const __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[g][c]), _mm256_extractf128_ps(acc[g][c], 1));
      alignas(16) float out[4];
      _mm_store_ps(out, s);
      for (int i = 0; i < 4 && 4 * g + i < nr; ++i) y[c * ys + 4 * g + i] = out[i];
    }
}

// Token counts below C use their own instantiation (no wasted work in decode); rows are padded.
template <class F, int RG, int C>
void tile_q4rows_any(int64_t n, const void* w, size_t ws, int nr, const void* a, size_t as, int nc, float* y,
                     size_t ys) {
  if constexpr (C > 1) {
    if (nc < C) return tile_q4rows_any<F, RG, C - 1>(n, w, ws, nr, a, as, nc, y, ys);
  }
  tile_q4rows<F, RG, C>(n, w, ws, nr, a, as, nc, y, ys);
}

template <class F, int RG, int C>
void set_q4rows(TypeKernels& k, void (*quant)(const float*, void*, int64_t)) {
  k.quantize_act = quant;
  k.vec_dot = &tile_vec_dot<F>;
  k.tile = &tile_q4rows_any<F, RG, C>;
  k.tile_rows = 4 * RG;
  k.tile_cols = C;
}



// ---- F32 / F16 / BF16 weights with F32 activations ----------------------------------------
// Vectors of kV floats; a final partial vector is zero-padded through a small buffer.
#if defined(__AVX512F__)
using VF = __m512;
constexpr int kV = 16;
inline VF vzero() { return _mm512_setzero_ps(); }
inline VF vload(const float* p) { return _mm512_loadu_ps(p); }
inline VF vload(const uint16_t* p, DType t) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (t == DType::F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(VF v) {
  return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
#else
using VF = __m256;
constexpr int kV = 8;
inline VF vzero() { return _mm256_setzero_ps(); }
inline VF vload(const float* p) { return _mm256_loadu_ps(p); }
inline VF vload(const uint16_t* p, DType t) {
  const __m128i h = load16(p);
  if (t == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(VF v) { return hsum8(v); }
#endif

template <DType T>
inline VF load_w(const uint8_t* row, int64_t i) {
  if constexpr (T == DType::F32) return vload(reinterpret_cast<const float*>(row) + i);
  else return vload(reinterpret_cast<const uint16_t*>(row) + i, T);
}

template <DType T, int R, int C>
void tile_f(int64_t n, const void* wp, size_t ws, const void* ap, size_t as, float* y, size_t ys) {
  using E = std::conditional_t<T == DType::F32, float, uint16_t>;
  const auto* w = static_cast<const uint8_t*>(wp);
  const auto* a = static_cast<const uint8_t*>(ap);
  VF acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = vzero();
  const int64_t nv = n / kV * kV;
  auto step = [&](const uint8_t* const* wrow, int64_t wi, const float* const* arow, int64_t ai) {
    VF av[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) av[c] = vload(arow[c] + ai);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const VF wv = load_w<T>(wrow[r], wi);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] = vfma(wv, av[c], acc[r][c]);
    }
  };
  const uint8_t* wrow[R];
  const float* arow[C];
  for (int r = 0; r < R; ++r) wrow[r] = w + r * ws;
  for (int c = 0; c < C; ++c) arow[c] = reinterpret_cast<const float*>(a + c * as);
  if constexpr (C == 1) {  // decode: prefetch the next tile's rows as in tile_q4rows
    constexpr int kBytes = R * kV * static_cast<int>(sizeof(E));
    const char* next_tile = static_cast<const char*>(wp) + R * ws;
    for (int64_t i = 0; i < nv; i += kV) {
      const char* pf = next_tile + i / kV * kBytes;
#pragma GCC unroll 16
      for (int k = 0; k < kBytes; k += 64) _mm_prefetch(pf + k, kPrefetchHint);
      step(wrow, i, arow, i);
    }
  } else {
    for (int64_t i = 0; i < nv; i += kV) step(wrow, i, arow, i);
  }
  if (nv < n) {  // zero-padded last vector
    alignas(64) E wt[R][kV] = {};
    alignas(64) float at[C][kV] = {};
    const uint8_t* wt_rows[R];
    const float* at_rows[C];
    for (int r = 0; r < R; ++r) {
      std::memcpy(wt[r], wrow[r] + nv * sizeof(E), (n - nv) * sizeof(E));
      wt_rows[r] = reinterpret_cast<const uint8_t*>(wt[r]);
    }
    for (int c = 0; c < C; ++c) {
      std::memcpy(at[c], arow[c] + nv, (n - nv) * sizeof(float));
      at_rows[c] = at[c];
    }
    step(wt_rows, 0, at_rows, 0);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) y[c * ys + r] = vsum(acc[r][c]);
}

// ---- dispatch of (nr, nc) to fixed-size instantiations ------------------------------------
using TileFn = void (*)(int64_t, const void*, size_t, const void*, size_t, float*, size_t);

template <template <int, int> class K, int R, int C>
struct TileTable {
  TileFn fn[R][C];
  constexpr TileTable() : fn{} { fill<0>(); }
  template <int I>
  constexpr void fill() {
    if constexpr (I < R * C) {
      fn[I / C][I % C] = &K<I / C + 1, I % C + 1>::run;
      fill<I + 1>();
    }
  }
};

template <DType T>
struct FTile {
  template <int R, int C>
  struct K {
    static void run(int64_t n, const void* w, size_t ws, const void* a, size_t as, float* y, size_t ys) {
      tile_f<T, R, C>(n, w, ws, a, as, y, ys);
    }
  };
};

template <template <int, int> class K, int R, int C>
void tile_dispatch(int64_t n, const void* w, size_t w_stride, int nr, const void* a, size_t a_stride, int nc,
                   float* y, size_t y_stride) {
  static constexpr TileTable<K, R, C> table;
  table.fn[nr - 1][nc - 1](n, w, w_stride, a, a_stride, y, y_stride);
}

template <template <int, int> class K>
float dot_via_tile(int64_t n, const void* w, const void* a) {
  float y;
  K<1, 1>::run(n, w, 0, a, 0, &y, 0);
  return y;
}

// ---- activation quantization (bit-identical to the scalar reference) ----------------------
// Returns d (fp32) and the sum of the 32 quantized values; writes them to q.
inline float quantize_block(const float* x, int8_t* q, int* sum) {
#if defined(__AVX512F__)
  const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m512 vid = _mm512_set1_ps(id);
  const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
  const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(i0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtsepi32_epi8(i1));
  if (sum) *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
  return d;
#else
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16),
               v3 = _mm256_loadu_ps(x + 24);
  const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float amax = _mm_cvtss_f32(m4);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m256 vid = _mm256_set1_ps(id);
  const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid));
  const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
  const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid));
  const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  if (sum) {
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    *sum = _mm_cvtsi128_si32(s4);
  }
  return d;
#endif
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

// ---- registration --------------------------------------------------------------------------
template <template <int, int> class K, int R, int C>
void set_kernels(TypeKernels& k, void (*quant)(const float*, void*, int64_t)) {
  if (quant) k.quantize_act = quant;
  k.vec_dot = &dot_via_tile<K>;
  k.tile = &tile_dispatch<K, R, C>;
  k.tile_rows = R;
  k.tile_cols = C;
}
