// Shared helpers for the kernel tests: random weight rows in every legacy format, the ISAs this
// CPU can run, and an independent (byte-offset based) decoder of the block formats.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/kernels.h"

namespace llmesh::kernels::test {

inline std::vector<Isa> available_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon})
    if (isa_supported(i)) v.push_back(i);
  return v;
}

// Restores the ISA that was active when it was created.
class IsaGuard {
 public:
  IsaGuard() : saved_(active_isa()) {}
  ~IsaGuard() { force_isa(saved_); }

 private:
  Isa saved_;
};

inline const DType kLegacyTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0,
                                     DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0};

inline void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline uint16_t get_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Random bytes for `rows` rows of n elements of type t (finite scales; Q8_0 weights may be -128).
inline std::vector<uint8_t> random_rows(DType t, int64_t rows, int64_t n, std::mt19937& rng) {
  const int64_t rb = *dtype_row_bytes(t, n);
  std::vector<uint8_t> v(static_cast<size_t>(rb * rows));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f), mins(-0.2f, 0.2f);
  std::uniform_int_distribution<int> byte(0, 255);
  const int64_t count = rows * n;
  auto half = [&](float f) { return fp32_to_fp16(f); };
  switch (t) {
    case DType::F32:
      for (int64_t i = 0; i < count; ++i) {
        float f = normal(rng);
        std::memcpy(v.data() + 4 * i, &f, 4);
      }
      return v;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < count; ++i)
        put_u16(v.data() + 2 * i, t == DType::F16 ? half(normal(rng)) : fp32_to_bf16(normal(rng)));
      return v;
    default: break;
  }
  for (auto& b : v) b = static_cast<uint8_t>(byte(rng));
  const int64_t bb = dtype_traits(t).block_bytes;
  const bool has_min = t == DType::Q4_1 || t == DType::Q5_1;
  for (int64_t off = 0; off < static_cast<int64_t>(v.size()); off += bb) {
    put_u16(&v[off], half(scale(rng)));
    if (has_min) put_u16(&v[off + 2], half(mins(rng)));
  }
  return v;
}

// Independent decode of one row straight from the byte layout.
inline std::vector<float> decode_row(DType t, const uint8_t* p, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  auto h = [](const uint8_t* q) { return fp16_to_fp32(get_u16(q)); };
  if (t == DType::F32) {
    std::memcpy(out.data(), p, n * 4);
    return out;
  }
  if (t == DType::F16 || t == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t b = get_u16(p + 2 * i);
      if (t == DType::F16) {
        const int e = (b >> 10) & 31, m = b & 1023;
        const float mag = e == 0 ? std::ldexp(float(m), -24) : std::ldexp(float(1024 + m), e - 25);
        out[i] = (b & 0x8000) ? -mag : mag;  // tests keep F16 data finite
      } else {
        const uint32_t u = uint32_t(b) << 16;
        std::memcpy(&out[i], &u, 4);
      }
    }
    return out;
  }
  const int64_t bb = dtype_traits(t).block_bytes;
  for (int64_t blk = 0; blk < n / 32; ++blk) {
    const uint8_t* b = p + blk * bb;
    float* o = out.data() + blk * 32;
    for (int j = 0; j < 32; ++j) {
      switch (t) {
        case DType::Q4_0: {
          const int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
          o[j] = float(q - 8) * h(b);
          break;
        }
        case DType::Q4_1: {
          const int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
          o[j] = float(q) * h(b) + h(b + 2);
          break;
        }
        case DType::Q5_0: {
          const int hb = (b[2 + j / 8] >> (j % 8)) & 1;
          const int q = (j < 16 ? (b[6 + j] & 15) : (b[6 + j - 16] >> 4)) + 16 * hb;
          o[j] = float(q - 16) * h(b);
          break;
        }
        case DType::Q5_1: {
          const int hb = (b[4 + j / 8] >> (j % 8)) & 1;
          const int q = (j < 16 ? (b[8 + j] & 15) : (b[8 + j - 16] >> 4)) + 16 * hb;
          o[j] = float(q) * h(b) + h(b + 2);
          break;
        }
        case DType::Q8_0: o[j] = float(static_cast<int8_t>(b[2 + j])) * h(b); break;
        default: break;
      }
    }
  }
  return out;
}

inline std::vector<float> random_floats(int64_t count, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& f : v) f = normal(rng);
  return v;
}

}  // namespace llmesh::kernels::test
