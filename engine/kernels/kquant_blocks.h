// Internal: the K-quant block formats (Q2_K..Q6_K, and Q8_K for activations), byte-for-byte
// as in GGUF files, plus the helpers the scalar and SIMD kernel files share.
// The layouts are described in docs/quantization.md ("K-quants").
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/registry.h"

namespace llmesh::kernels::kq {

inline constexpr int QK_K = 256;  // elements per super-block

// fp16 fields are stored as raw IEEE binary16 bits.
struct BlockQ2K {
  uint8_t scales[QK_K / 16];  // per 16 elements: low 4 bits scale, high 4 bits min
  uint8_t qs[QK_K / 4];       // 2-bit quants, four per byte
  uint16_t d;                 // super-block scale for the scales
  uint16_t dmin;              // super-block scale for the mins
};
struct BlockQ3K {
  uint8_t hmask[QK_K / 8];  // high bit of each 3-bit quant
  uint8_t qs[QK_K / 4];     // low 2 bits, four per byte
  uint8_t scales[12];       // 16 6-bit scales (stored +32)
  uint16_t d;
};
struct BlockQ4K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];     // 8 6-bit scales and 8 6-bit mins
  uint8_t qs[QK_K / 2];   // 4-bit quants
};
struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[QK_K / 8];   // fifth bit
  uint8_t qs[QK_K / 2];   // low 4 bits
};
struct BlockQ6K {
  uint8_t ql[QK_K / 2];      // low 4 bits
  uint8_t qh[QK_K / 4];      // high 2 bits
  int8_t scales[QK_K / 16];  // 8-bit signed scales, one per 16 elements
  uint16_t d;
};
struct BlockQ8K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];  // sum of each 16 quants
};
static_assert(sizeof(BlockQ2K) == 84);
static_assert(sizeof(BlockQ3K) == 110);
static_assert(sizeof(BlockQ4K) == 144);
static_assert(sizeof(BlockQ5K) == 176);
static_assert(sizeof(BlockQ6K) == 210);
static_assert(sizeof(BlockQ8K) == 292);

// Helpers are `static inline`: each kernel file gets its own copy compiled with its own ISA
// flags (a shared inline copy could be an AVX one picked by the linker for scalar code).

// Exact binary16 -> binary32 (kept local so these kernels do not depend on fp16.cpp).
static inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    exp = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// binary32 -> binary16, round to nearest even (used by the reference quantizers only).
static inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00 : 0x7c00);
  if (x >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: infinity
  if (x < 0x38800000u) {                       // below the smallest normal: subnormal or zero
    if (x < 0x33000000u) return sign;
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = ((x >> 13) - (112u << 10));
  const uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) ++r;
  return sign | static_cast<uint16_t>(r);
}

// The 12-byte packing shared by Q4_K and Q5_K: 8 six-bit scales and 8 six-bit mins.
// j < 4: scale = q[j] & 63, min = q[j+4] & 63.
// j >= 4: low 4 bits from q[j+4] (scale: low nibble, min: high nibble), high 2 bits from the
// top bits of q[j-4] (scale) and q[j] (min).
static inline void unpack_scale_min_k4(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = q[j] & 63;
    mn[j] = q[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    mn[j] = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// The same unpacking with 32-bit word operations (what the SIMD kernels use per block):
// out[0..1] = the 8 scales as bytes, out[2..3] = the 8 mins as bytes.
static inline void unpack_scale_min_k4_words(const uint8_t* q, uint32_t out[4]) {
  uint32_t w[3];
  std::memcpy(w, q, 12);
  const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
  out[0] = w[0] & m6;
  out[1] = (w[2] & m4) | (((w[0] >> 6) & m2) << 4);
  out[2] = w[1] & m6;
  out[3] = ((w[2] >> 4) & m4) | (((w[1] >> 6) & m2) << 4);
}

// Q3_K: 16 six-bit scales packed in 12 bytes; returns them as signed values (stored - 32).
// Scale i: low 4 bits from q[i] (i < 8, low nibble) or q[i-8] (high nibble);
// high 2 bits from q[8 + i%4] at bit 2*(i/4).
static inline void unpack_scales_q3k(const uint8_t* q, int8_t* out) {
  for (int i = 0; i < 16; ++i) {
    const int lo = i < 8 ? (q[i] & 0x0f) : (q[i - 8] >> 4);
    const int hi = (q[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    out[i] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
}

// The same unpacking with 32-bit word operations (what the SIMD kernels use per block):
// out[0..3] = the 16 scales as bytes, still stored + 32.
static inline void unpack_scales_q3k_words(const uint8_t* q, uint32_t out[4]) {
  uint32_t w[3];
  std::memcpy(w, q, 12);
  const uint32_t m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
  out[0] = (w[0] & m4) | ((w[2] & m2) << 4);
  out[1] = (w[1] & m4) | (((w[2] >> 2) & m2) << 4);
  out[2] = ((w[0] >> 4) & m4) | (((w[2] >> 4) & m2) << 4);
  out[3] = ((w[1] >> 4) & m4) | (((w[2] >> 6) & m2) << 4);
}

// Scalar entry points (kquants.cpp).
void dequantize_q2_k(const void* src, float* dst, int64_t n);
void dequantize_q3_k(const void* src, float* dst, int64_t n);
void dequantize_q4_k(const void* src, float* dst, int64_t n);
void dequantize_q5_k(const void* src, float* dst, int64_t n);
void dequantize_q6_k(const void* src, float* dst, int64_t n);
void quantize_q8_k(const float* x, void* dst, int64_t n);
float vec_dot_q2_k_q8_k(int64_t n, const void* w, const void* a);
float vec_dot_q3_k_q8_k(int64_t n, const void* w, const void* a);
float vec_dot_q4_k_q8_k(int64_t n, const void* w, const void* a);
float vec_dot_q5_k_q8_k(int64_t n, const void* w, const void* a);
float vec_dot_q6_k_q8_k(int64_t n, const void* w, const void* a);

// Reference quantizers (float -> blocks) for tests and model generators: n a multiple of 256.
// Reasonable error, not llama.cpp's exact rounding search.
void quantize_q4_k_ref(const float* x, void* dst, int64_t n);
void quantize_q6_k_ref(const float* x, void* dst, int64_t n);

// Per-ISA registration (overrides the entries that ISA has code for).
void register_kquant_scalar(TypeKernels* table);
#if defined(__x86_64__) || defined(_M_X64)
void register_kquant_avx2(TypeKernels* table);
void register_kquant_avx512(TypeKernels* table);
#endif
#if defined(__aarch64__)
void register_kquant_neon(TypeKernels* table);
#endif

}  // namespace llmesh::kernels::kq
