#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <string>
#include <vector>

#include "kernel_test_support.h"

using namespace llmesh;
using namespace llmesh::kernels;

namespace {

struct Problem {
  DType t;
  int64_t rows, n, tokens;
  std::vector<uint8_t> w;
  std::vector<float> x;
  int64_t x_stride, y_stride;
  MatView view() const {
    return MatView{t, n, rows, w.data(), static_cast<size_t>(*dtype_row_bytes(t, n))};
  }
};

bool is_kquant(DType t) { return t == DType::Q4_K || t == DType::Q6_K; }

// Random Q4_K / Q6_K rows: random bytes with small finite super-block scales.
std::vector<uint8_t> random_kquant_rows(DType t, int64_t rows, int64_t n, std::mt19937& rng) {
  const int64_t rb = *dtype_row_bytes(t, n), bb = dtype_traits(t).block_bytes;
  std::vector<uint8_t> v(static_cast<size_t>(rb * rows));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.0005f, 0.005f);
  for (auto& b : v) b = static_cast<uint8_t>(byte(rng));
  for (int64_t off = 0; off < static_cast<int64_t>(v.size()); off += bb) {
    if (t == DType::Q4_K) {
      test::put_u16(&v[off], fp32_to_fp16(scale(rng)));
      test::put_u16(&v[off + 2], fp32_to_fp16(scale(rng)));
    } else {
      test::put_u16(&v[off + 208], fp32_to_fp16(scale(rng)));
    }
  }
  return v;
}

std::vector<float> decode(DType t, const uint8_t* row, int64_t n) {
  if (!is_kquant(t)) return test::decode_row(t, row, n);
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t, row, out.data(), n);
  return out;
}

Problem make_problem(DType t, int64_t rows, int64_t n, int64_t tokens, std::mt19937& rng) {
  Problem p{t, rows, n, tokens,
            is_kquant(t) ? random_kquant_rows(t, rows, n, rng) : test::random_rows(t, rows, n, rng),
            {}, n + 3, rows + 5};
  p.x = test::random_floats(p.x_stride * tokens, rng);
  return p;
}

// Scalar reference: Y[t][r] = scalar vec_dot, and the magnitude sum used for tolerances.
void reference(const Problem& p, std::vector<float>& y, std::vector<double>& mag) {
  test::IsaGuard guard;
  force_isa(Isa::Scalar);
  const size_t ab = act_row_bytes(p.t, p.n);
  std::vector<uint8_t> a(ab);
  std::vector<float> ad(p.n);
  const auto rb = *dtype_row_bytes(p.t, p.n);
  y.assign(p.y_stride * p.tokens, 0.0f);
  mag.assign(p.y_stride * p.tokens, 0.0);
  std::vector<std::vector<float>> wd(p.rows);
  for (int64_t r = 0; r < p.rows; ++r) wd[r] = decode(p.t, p.w.data() + r * rb, p.n);
  for (int64_t t = 0; t < p.tokens; ++t) {
    quantize_act_row(p.t, p.x.data() + t * p.x_stride, a.data(), p.n);
    for (int64_t i = 0; i < p.n; ++i) ad[i] = std::fabs(p.x[t * p.x_stride + i]);
    for (int64_t r = 0; r < p.rows; ++r) {
      y[t * p.y_stride + r] = vec_dot(p.t, p.n, p.w.data() + r * rb, a.data());
      double m = 0;
      for (int64_t i = 0; i < p.n; ++i) m += std::fabs(double(wd[r][i])) * ad[i];
      mag[t * p.y_stride + r] = m;
    }
  }
}

std::vector<float> run_matmul(const Problem& p, ThreadPool& pool) {
  std::vector<float> y(p.y_stride * p.tokens, -7.0f);
  matmul(p.view(), p.x.data(), p.x_stride, p.tokens, y.data(), p.y_stride, pool);
  return y;
}

// Float sums in a different order: relative to the sum of |terms| (activation rounding included).
constexpr double kRelTol = 2e-5;

}  // namespace

TEST(VecDot, EveryIsaMatchesScalarAndQuantizesIdentically) {
  test::IsaGuard guard;
  std::mt19937 rng(10);
  for (DType t : test::kLegacyTypes) {
    for (int64_t n : {32, 64, 96, 160, 288, 1024, 4096}) {
      const auto w = test::random_rows(t, 1, n, rng);
      const auto x = test::random_floats(n, rng, 3.0f);
      force_isa(Isa::Scalar);
      std::vector<uint8_t> a_ref(act_row_bytes(t, n));
      quantize_act_row(t, x.data(), a_ref.data(), n);
      const float want = vec_dot(t, n, w.data(), a_ref.data());
      const auto wd = test::decode_row(t, w.data(), n);
      double mag = 0;
      for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(wd[i]) * x[i]);
      for (Isa isa : test::available_isas()) {
        force_isa(isa);
        std::vector<uint8_t> a(act_row_bytes(t, n));
        quantize_act_row(t, x.data(), a.data(), n);
        ASSERT_EQ(a, a_ref) << dtype_name(t) << " " << isa_name(isa) << " n=" << n;
        const float got = vec_dot(t, n, w.data(), a.data());
        EXPECT_NEAR(got, want, kRelTol * mag) << dtype_name(t) << " " << isa_name(isa) << " n=" << n;
      }
    }
  }
}

TEST(Matmul, EveryIsaMatchesScalarOnOddShapes) {
  test::IsaGuard guard;
  std::mt19937 rng(11);
  ThreadPool pool1(1);
  struct Shape {
    int64_t rows, n, tokens;
  };
  const Shape shapes[] = {{1, 32, 1},   {3, 64, 2},    {5, 96, 3},     {17, 160, 5},  {33, 32, 7},
                          {67, 256, 1}, {13, 128, 13}, {29, 512, 16},  {50, 96, 37},  {7, 4096, 4},
                          {19, 2048, 9}, {131, 64, 1}, {100, 320, 33}, {9, 1024, 17}, {261, 128, 2}};
  for (DType t : test::kLegacyTypes) {
    for (const Shape& s : shapes) {
      const Problem p = make_problem(t, s.rows, s.n, s.tokens, rng);
      std::vector<float> want;
      std::vector<double> mag;
      reference(p, want, mag);
      for (Isa isa : test::available_isas()) {
        force_isa(isa);
        const auto y1 = run_matmul(p, pool1);
        const std::string what = dtype_name(t) + " " + isa_name(isa) + " rows=" + std::to_string(s.rows) +
                                 " n=" + std::to_string(s.n) + " tokens=" + std::to_string(s.tokens);
        for (int64_t tk = 0; tk < p.tokens; ++tk) {
          for (int64_t r = 0; r < p.y_stride; ++r) {
            const size_t i = tk * p.y_stride + r;
            if (r >= p.rows) {
              ASSERT_EQ(y1[i], -7.0f) << what << " wrote outside the rows";
              continue;
            }
            ASSERT_NEAR(y1[i], want[i], kRelTol * mag[i] + 1e-6) << what << " token " << tk << " row " << r;
          }
        }
        // Threads only split rows: results are bit-identical to one thread. (Pools live only
        // this long: idle workers spin for a while and would slow the single-thread runs.)
        for (int threads : {2}) {
          ThreadPool pool(threads);
          EXPECT_EQ(run_matmul(p, pool), y1) << what << " threads=" << threads;
        }
      }
    }
  }
}

// Many tokens: the packed-panel path where a type has one (rows not a multiple of the panel,
// token counts around the panel's minimum and its microkernel width, long rows).
TEST(Matmul, ManyTokensMatchScalar) {
  test::IsaGuard guard;
  std::mt19937 rng(14);
  ThreadPool pool1(1);
  struct Shape {
    int64_t rows, n, tokens;
  };
  const Shape shapes[] = {{33, 32, 2},  {1, 5632, 16},  {45, 5632, 17}, {70, 2048, 128}, {31, 96, 300},
                          {65, 160, 23}, {97, 1024, 64}, {32, 256, 15}, {5, 64, 19}};
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q5_0, DType::F16, DType::Q4_K, DType::Q6_K}) {
    for (const Shape& s : shapes) {
      if (s.n % dtype_traits(t).block_elems) continue;
      const Problem p = make_problem(t, s.rows, s.n, s.tokens, rng);
      std::vector<float> want;
      std::vector<double> mag;
      reference(p, want, mag);
      for (Isa isa : test::available_isas()) {
        force_isa(isa);
        const auto y1 = run_matmul(p, pool1);
        const std::string what = dtype_name(t) + " " + isa_name(isa) + " rows=" + std::to_string(s.rows) +
                                 " n=" + std::to_string(s.n) + " tokens=" + std::to_string(s.tokens);
        for (int64_t tk = 0; tk < p.tokens; ++tk)
          for (int64_t r = 0; r < p.y_stride; ++r) {
            const size_t i = tk * p.y_stride + r;
            if (r >= p.rows) {
              ASSERT_EQ(y1[i], -7.0f) << what << " wrote outside the rows";
              continue;
            }
            ASSERT_NEAR(y1[i], want[i], kRelTol * mag[i] + 1e-6) << what << " token " << tk << " row " << r;
          }
        ThreadPool pool(2);
        EXPECT_EQ(run_matmul(p, pool), y1) << what << " threads=2";
      }
    }
  }
}

TEST(Matmul, RowsSubsetWritesOnlyThoseRows) {
  test::IsaGuard guard;
  std::mt19937 rng(12);
  ThreadPool pool(2);
  for (Isa isa : test::available_isas()) {
    force_isa(isa);
    for (auto [t, tokens] : {std::pair{DType::Q4_0, 6}, {DType::Q8_0, 6}, {DType::F16, 6}, {DType::Q4_0, 20},
                             {DType::Q8_0, 20}}) {
      const Problem p = make_problem(t, 70, 128, tokens, rng);
      const auto full = run_matmul(p, pool);
      std::vector<float> y(p.y_stride * p.tokens, -7.0f);
      matmul_rows(p.view(), 9, 45, p.x.data(), p.x_stride, p.tokens, y.data(), p.y_stride, pool);
      for (int64_t tk = 0; tk < p.tokens; ++tk)
        for (int64_t r = 0; r < p.y_stride; ++r) {
          const size_t i = tk * p.y_stride + r;
          if (r >= 9 && r < 45) ASSERT_EQ(y[i], full[i]) << isa_name(isa);
          else ASSERT_EQ(y[i], -7.0f) << isa_name(isa);
        }
    }
  }
}

TEST(Dispatch, ForcingAnUnsupportedIsaThrows) {
  test::IsaGuard guard;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
    if (isa_supported(isa)) EXPECT_NO_THROW(force_isa(isa));
    else EXPECT_THROW(force_isa(isa), std::runtime_error);
  }
  EXPECT_TRUE(isa_supported(detected_isa()));
  EXPECT_STREQ(isa_name(Isa::Avx512), "avx512");
}

// With unit scales and integer activations whose block maximum is 127 (so the activation scale
// is exactly 1), every product and partial sum is an integer below 2^24: each ISA, tile and
// thread count must then give the exact integer, whatever its summation order.
TEST(Matmul, IntegerProductsAreExactOnEveryIsa) {
  test::IsaGuard guard;
  std::mt19937 rng(13);
  // |sum of a block| <= 31 * 60 + 127 < 2048, so the fp16 `s` of Q8_1 stays exact.
  std::uniform_int_distribution<int> act(-60, 60), small(-8, 8);
  ThreadPool pool(2);
  for (DType t : test::kLegacyTypes) {
    for (auto [rows, n, tokens] : {std::tuple<int64_t, int64_t, int64_t>{1, 32, 1}, {13, 96, 7}, {29, 1024, 13},
                                   {40, 256, 1}, {7, 512, 37}}) {
      auto w = test::random_rows(t, rows, n, rng);
      const int64_t rb = *dtype_row_bytes(t, n);
      const bool quant = dtype_traits(t).block_elems == 32;
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* row = w.data() + r * rb;
        if (quant) {
          for (int64_t b = 0; b < n / 32; ++b) {
            test::put_u16(row + b * dtype_traits(t).block_bytes, fp32_to_fp16(1.0f));
            if (t == DType::Q4_1 || t == DType::Q5_1)
              test::put_u16(row + b * dtype_traits(t).block_bytes + 2, fp32_to_fp16(float(small(rng))));
          }
        } else {
          for (int64_t i = 0; i < n; ++i) {
            const float v = float(small(rng));
            if (t == DType::F32) std::memcpy(row + 4 * i, &v, 4);
            else test::put_u16(row + 2 * i, t == DType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v));
          }
        }
      }
      std::vector<float> x(n * tokens);
      for (int64_t i = 0; i < n * tokens; ++i) x[i] = float(act(rng));
      for (int64_t i = 0; i < n * tokens; i += 32) x[i + (i / 32) % 32] = (i / 32) % 2 ? 127.0f : -127.0f;
      std::vector<int64_t> want(rows * tokens);
      for (int64_t r = 0; r < rows; ++r) {
        const auto wd = test::decode_row(t, w.data() + r * rb, n);
        for (int64_t tk = 0; tk < tokens; ++tk) {
          int64_t s = 0;
          for (int64_t i = 0; i < n; ++i) s += int64_t(wd[i]) * int64_t(x[tk * n + i]);
          want[tk * rows + r] = s;
        }
      }
      const MatView view{t, n, rows, w.data(), static_cast<size_t>(rb)};
      for (Isa isa : test::available_isas()) {
        force_isa(isa);
        std::vector<float> y(rows * tokens);
        matmul(view, x.data(), n, tokens, y.data(), rows, pool);
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_EQ(double(y[i]), double(want[i])) << dtype_name(t) << " " << isa_name(isa) << " n=" << n << " i=" << i;
        std::vector<uint8_t> a(act_row_bytes(t, n));
        quantize_act_row(t, x.data(), a.data(), n);
        ASSERT_EQ(double(vec_dot(t, n, w.data(), a.data())), double(want[0])) << dtype_name(t) << " " << isa_name(isa);
      }
    }
  }
}
