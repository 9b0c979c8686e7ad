#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_test_support.h"

using namespace llmesh;
using namespace llmesh::kernels;

TEST(LegacyQuants, DequantizationMatchesTheBlockDefinitions) {
  test::IsaGuard guard;
  std::mt19937 rng(3);
  for (Isa isa : test::available_isas()) {
    force_isa(isa);
    for (DType t : test::kLegacyTypes) {
      ASSERT_TRUE(is_computable(t)) << dtype_name(t);
      const int64_t n = 32 * 37;
      const auto data = test::random_rows(t, 1, n, rng);
      const auto want = test::decode_row(t, data.data(), n);
      std::vector<float> got(n);
      dequantize_row(t, data.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(got[i], want[i]) << dtype_name(t) << " " << isa_name(isa) << " element " << i;
    }
  }
}

TEST(LegacyQuants, ActivationFormats) {
  EXPECT_EQ(act_type(DType::Q4_0), DType::Q8_0);
  EXPECT_EQ(act_type(DType::Q5_0), DType::Q8_0);
  EXPECT_EQ(act_type(DType::Q8_0), DType::Q8_0);
  EXPECT_EQ(act_type(DType::Q4_1), DType::Q8_1);
  EXPECT_EQ(act_type(DType::Q5_1), DType::Q8_1);
  EXPECT_EQ(act_type(DType::F16), DType::F32);
  EXPECT_EQ(act_type(DType::BF16), DType::F32);
  EXPECT_EQ(act_row_bytes(DType::Q4_0, 64), 68u);
  EXPECT_EQ(act_row_bytes(DType::Q5_1, 64), 72u);
  EXPECT_EQ(act_row_bytes(DType::F16, 64), 256u);
}

TEST(LegacyQuants, Q8ActivationsFollowTheDefinition) {
  std::mt19937 rng(4);
  const int64_t n = 32 * 9;
  auto x = test::random_floats(n, rng);
  for (int j = 0; j < 32; ++j) x[32 + j] = 0.0f;  // an all-zero block
  x[70] = 1e-3f;                                 // tiny values round to zero elsewhere
  std::vector<uint8_t> q8(act_row_bytes(DType::Q8_0, n)), q1(act_row_bytes(DType::Q4_1, n));
  quantize_act_row(DType::Q8_0, x.data(), q8.data(), n);
  quantize_act_row(DType::Q4_1, x.data(), q1.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    EXPECT_EQ(test::get_u16(&q8[b * 34]), fp32_to_fp16(d));
    EXPECT_EQ(test::get_u16(&q1[b * 36]), fp32_to_fp16(d));
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int want = d == 0 ? 0 : int(std::nearbyint(x[b * 32 + j] * (1.0f / d)));
      EXPECT_EQ(int(int8_t(q8[b * 34 + 2 + j])), want);
      EXPECT_EQ(int(int8_t(q1[b * 36 + 4 + j])), want);
      EXPECT_LE(std::abs(want), 127);
      sum += want;
    }
    EXPECT_EQ(test::get_u16(&q1[b * 36 + 2]), fp32_to_fp16(d * float(sum)));
  }
}

TEST(LegacyQuants, ScalarDotProductsEqualTheDecodedSum) {
  // With exactly representable inputs the scalar product equals a double-precision sum of the
  // decoded weights times the decoded activations (one block: no rounding in the sum).
  std::mt19937 rng(5);
  for (DType t : test::kLegacyTypes) {
    const int64_t n = 32;
    const auto w = test::random_rows(t, 1, n, rng);
    const auto x = test::random_floats(n, rng);
    std::vector<uint8_t> a(act_row_bytes(t, n));
    quantize_act_row(t, x.data(), a.data(), n);
    const auto wd = test::decode_row(t, w.data(), n);
    std::vector<float> ad(n);
    if (act_type(t) == DType::F32) ad = x;
    else dequantize_row(DType::Q8_0, a.data(), ad.data(), n);  // Q8_0 dequant handles Q8_1 only via offsets
    if (act_type(t) == DType::Q8_1)
      for (int j = 0; j < 32; ++j) ad[j] = float(int8_t(a[4 + j])) * fp16_to_fp32(test::get_u16(a.data()));
    double want = 0, mag = 0;
    for (int j = 0; j < n; ++j) {
      want += double(wd[j]) * ad[j];
      mag += std::fabs(double(wd[j]) * ad[j]);
    }
    if (act_type(t) == DType::Q8_1) {
      // The m * sum(x) term uses the rounded fp16 s = d * sum(q); adjust the reference to it.
      const float m = fp16_to_fp32(test::get_u16(w.data() + 2));
      int qsum = 0;
      for (int j = 0; j < 32; ++j) qsum += int8_t(a[4 + j]);
      want += double(m) * fp16_to_fp32(test::get_u16(a.data() + 2)) -
              double(m) * fp16_to_fp32(test::get_u16(a.data())) * qsum;
    }
    const float got = vec_dot(t, n, w.data(), a.data());
    EXPECT_NEAR(got, want, 1e-5 * mag + 1e-6) << dtype_name(t);
  }
}

TEST(LegacyQuants, UnsupportedTypeErrorNamesTheType) {
  EXPECT_FALSE(is_computable(DType::IQ2_XS));
  try {
    std::vector<uint8_t> w(74), a(300);
    vec_dot(DType::IQ2_XS, 256, w.data(), a.data());
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("IQ2_XS"), std::string::npos) << e.what();
  }
  std::vector<float> out(256);
  EXPECT_THROW(dequantize_row(DType::IQ2_XS, out.data(), out.data(), 256), std::runtime_error);
}
