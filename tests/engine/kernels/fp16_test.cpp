#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernel_test_support.h"

using namespace llmesh;
using namespace llmesh::kernels;

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Nearest half by search over the exact values of all finite halves (ties to even mantissa).
uint16_t reference_to_half(float f) {
  if (std::isnan(f)) return 0x7E00;
  const bool neg = std::signbit(f);
  const double a = std::fabs(double(f));
  const uint16_t sign = neg ? 0x8000 : 0;
  if (a >= 65520.0) return sign | 0x7C00;
  // Positive halves 0..0x7BFF are monotonic in value.
  int lo = 0, hi = 0x7BFF;
  while (lo < hi) {  // first half with value >= a
    const int mid = (lo + hi) / 2;
    if (double(fp16_to_fp32(uint16_t(mid))) >= a) hi = mid;
    else lo = mid + 1;
  }
  if (lo == 0 || double(fp16_to_fp32(uint16_t(lo))) == a) return sign | lo;
  const double up = fp16_to_fp32(uint16_t(lo)) - a, down = a - fp16_to_fp32(uint16_t(lo - 1));
  if (up < down) return sign | lo;
  if (down < up) return sign | (lo - 1);
  return sign | ((lo & 1) ? lo - 1 : lo);
}

}  // namespace

TEST(Fp16, AllHalvesDecodeExactlyAndRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(uint16_t(h));
    const int e = (h >> 10) & 31, m = h & 1023;
    if (e == 31) {
      EXPECT_EQ(std::isnan(f), m != 0) << h;
      if (m) {
        EXPECT_EQ(fp32_to_fp16(f), uint16_t(h | 0x200)) << h;  // quieted, payload kept
        continue;
      }
    } else {
      const double mag = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 25);
      ASSERT_EQ(double(f), (h & 0x8000) ? -mag : mag) << h;
    }
    ASSERT_EQ(fp32_to_fp16(f), uint16_t(h)) << h;
  }
}

TEST(Fp16, RoundsToNearestEven) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 200000; ++i) {
    // Floats spread over the half range and beyond, plus exact midpoints between halves.
    float f;
    if (i % 4 == 3) {
      const uint16_t h = uint16_t(any(rng) & 0x7BFE);
      f = float((double(fp16_to_fp32(h)) + double(fp16_to_fp32(uint16_t(h + 1)))) / 2);
    } else {
      f = from_bits((any(rng) & 0x807FFFFFu) | (uint32_t(100 + any(rng) % 46) << 23));
    }
    ASSERT_EQ(fp32_to_fp16(f), reference_to_half(f)) << f;
  }
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65519.99f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);                       // tie -> even (0)
  EXPECT_EQ(fp32_to_fp16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);  // above the tie
  EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);                       // 1.5 units -> 2
}

TEST(Fp16, RowConversionsMatchScalarOnEveryIsa) {
  test::IsaGuard guard;
  std::vector<uint16_t> all(65536 + 5);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::mt19937 rng(2);
  std::uniform_int_distribution<uint32_t> any;
  std::vector<float> floats(100003);
  for (auto& f : floats) f = from_bits(any(rng));
  for (Isa isa : test::available_isas()) {
    force_isa(isa);
    std::vector<float> out(all.size());
    fp16_to_fp32_row(all.data(), out.data(), int64_t(all.size()));
    for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(bits(out[i]), bits(fp16_to_fp32(all[i]))) << isa_name(isa) << i;
    std::vector<uint16_t> back(floats.size());
    fp32_to_fp16_row(floats.data(), back.data(), int64_t(floats.size()));
    for (size_t i = 0; i < floats.size(); ++i)
      ASSERT_EQ(back[i], fp32_to_fp16(floats[i])) << isa_name(isa) << " " << floats[i];
  }
}

TEST(Bf16, AllValuesRoundTripAndRoundToNearestEven) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_fp32(uint16_t(h));
    ASSERT_EQ(bits(f), h << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(fp32_to_bf16(f), uint16_t(h));
  }
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F808000u)), 0x3F80);  // tie, even stays
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F818000u)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x7F7FFFFFu)), 0x7F80);  // max float rounds to Inf
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(from_bits(0x7F800001u)))));  // NaN stays NaN
}
