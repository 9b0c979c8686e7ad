// Internal: inline scalar IEEE binary16 / bfloat16 conversions (exact, round to nearest even),
// shared by the kernel files so hot scalar loops can inline them. NaNs are quieted the way the
// F16C instructions do it, so scalar and SIMD conversions agree bit for bit.
#pragma once
#include <cstdint>
#include <cstring>

namespace llmesh::kernels {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in binary32.
    return bits_float(sign | float_bits(static_cast<float>(mant) * 0x1p-24f));
  }
  if (exp == 31) {  // Inf, or NaN (quieted, payload kept)
    return bits_float(sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) {  // Inf or NaN
    if (ax == 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u);
    return static_cast<uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
  }
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to Inf
  if (ax < 0x38800000u) {
    // Below 2^-14: a half subnormal (units of 2^-24) or zero. value = m * 2^(e-150).
    const uint32_t e = ax >> 23;
    if (e < 102) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to zero
    const uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;  // may carry into the min normal
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even.
  ax += 0xC8000FFFu + ((ax >> 13) & 1u);
  return static_cast<uint16_t>(sign | (ax >> 13));
}

inline float bfloat_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bfloat(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// Row conversions per ISA (defined in fp16_avx2.cpp / fp16_avx512.cpp on x86-64).
void fp16_to_fp32_row_avx2(const uint16_t* x, float* y, int64_t n);
void fp32_to_fp16_row_avx2(const float* x, uint16_t* y, int64_t n);
void fp16_to_fp32_row_avx512(const uint16_t* x, float* y, int64_t n);
void fp32_to_fp16_row_avx512(const float* x, uint16_t* y, int64_t n);

}  // namespace llmesh::kernels
