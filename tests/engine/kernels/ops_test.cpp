// The forward pass's small ops: every ISA against the scalar reference, and the math itself.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/kernels.h"
#include "kernels/ops.h"

namespace llmesh {
namespace {

struct IsaGuard {
  explicit IsaGuard(kernels::Isa isa) { kernels::force_isa(isa); }
  ~IsaGuard() { kernels::force_isa(kernels::detected_isa()); }
};

std::vector<float> random_vec(int n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Ops, SimdMatchesScalar) {
  for (kernels::Isa isa : {kernels::Isa::Avx2, kernels::Isa::Avx512}) {
    if (!kernels::isa_supported(isa)) continue;
    for (int n : {1, 7, 8, 9, 31, 64, 100, 128, 1000}) {
      auto a = random_vec(n, 1.0f, n), b = random_vec(n, 1.0f, n + 1);
      std::vector<uint16_t> bh(n);
      kernels::fp32_to_fp16_row(b.data(), bh.data(), n);
      float ref_dot, ref_doth;
      std::vector<float> ref_y(a), ref_yh(a), ref_sw(n), ref_sm(a);
      {
        IsaGuard g(kernels::Isa::Scalar);
        ref_dot = ops::dot_f32(a.data(), b.data(), n);
        ref_doth = ops::dot_f16(a.data(), bh.data(), n);
        ops::axpy_f32(ref_y.data(), 0.37f, b.data(), n);
        ops::axpy_f16(ref_yh.data(), 0.37f, bh.data(), n);
        ops::swiglu(ref_sw.data(), a.data(), b.data(), n);
        ops::softmax(ref_sm.data(), n);
      }
      IsaGuard g(isa);
      const float tol = 1e-5f * std::sqrt(static_cast<float>(n));
      EXPECT_NEAR(ops::dot_f32(a.data(), b.data(), n), ref_dot, tol * (1 + std::fabs(ref_dot))) << n;
      EXPECT_NEAR(ops::dot_f16(a.data(), bh.data(), n), ref_doth, tol * (1 + std::fabs(ref_doth))) << n;
      std::vector<float> y(a), yh(a), sw(n), sm(a);
      ops::axpy_f32(y.data(), 0.37f, b.data(), n);
      ops::axpy_f16(yh.data(), 0.37f, bh.data(), n);
      ops::swiglu(sw.data(), a.data(), b.data(), n);
      ops::softmax(sm.data(), n);
      for (int i = 0; i < n; ++i) {
        EXPECT_NEAR(y[i], ref_y[i], 1e-6f * (1 + std::fabs(ref_y[i])));
        EXPECT_NEAR(yh[i], ref_yh[i], 1e-6f * (1 + std::fabs(ref_yh[i])));
        EXPECT_NEAR(sw[i], ref_sw[i], 1e-6f * (1 + std::fabs(ref_sw[i])));
        EXPECT_NEAR(sm[i], ref_sm[i], 1e-6f);
      }
    }
  }
}

TEST(Ops, SwigluIsAccurateOverTheWholeRange) {
  for (kernels::Isa isa : {kernels::Isa::Scalar, kernels::Isa::Avx2}) {
    if (!kernels::isa_supported(isa)) continue;
    IsaGuard g(isa);
    std::vector<float> x, one;
    for (float v = -120.0f; v <= 120.0f; v += 0.0137f) x.push_back(v);
    one.assign(x.size(), 1.0f);
    std::vector<float> out(x.size());
    ops::swiglu(out.data(), x.data(), one.data(), static_cast<int>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      double want = x[i] / (1.0 + std::exp(-static_cast<double>(x[i])));
      ASSERT_NEAR(out[i], want, 4e-7 * std::fabs(want) + 1e-30) << "x=" << x[i];
    }
  }
}

TEST(Ops, RmsnormRopeSoftmax) {
  std::vector<float> x = {1, 2, 3, 4}, w = {1, 1, 2, 2}, out(4);
  ops::rmsnorm(out.data(), x.data(), w.data(), 4, 0.0f);
  float inv = 1.0f / std::sqrt((1 + 4 + 9 + 16) / 4.0f);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], x[i] * inv * w[i], 1e-6f);

  // RoPE at position 0 is the identity; a rotation keeps the norm.
  std::vector<float> c(2), s(2);
  ops::rope_angles(c.data(), s.data(), 4, 0, 10000.0f, 1.0f);
  std::vector<float> q = {1, 2, 3, 4};
  ops::rope(q.data(), 1, 4, 4, c.data(), s.data(), false);
  EXPECT_EQ(q, (std::vector<float>{1, 2, 3, 4}));
  ops::rope_angles(c.data(), s.data(), 4, 7, 10000.0f, 1.0f);
  for (bool neox : {false, true}) {
    std::vector<float> r = {1, 2, 3, 4};
    ops::rope(r.data(), 1, 4, 4, c.data(), s.data(), neox);
    EXPECT_NEAR(r[0] * r[0] + r[1] * r[1] + r[2] * r[2] + r[3] * r[3], 30.0f, 1e-4f);
  }
  // Normal RoPE rotates (x0, x1) by 7 radians (frequency 1 for the first pair).
  std::vector<float> r = {1, 0, 0, 0};
  ops::rope(r.data(), 1, 4, 4, c.data(), s.data(), false);
  EXPECT_NEAR(r[0], std::cos(7.0f), 1e-6f);
  EXPECT_NEAR(r[1], std::sin(7.0f), 1e-6f);

  std::vector<float> sm = {1000.0f, 1000.0f};  // no overflow
  ops::softmax(sm.data(), 2);
  EXPECT_FLOAT_EQ(sm[0], 0.5f);
}

}  // namespace
}  // namespace llmesh
