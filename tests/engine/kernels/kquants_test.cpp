// K-quant kernels (Q2_K..Q6_K with Q8_K activations): dequantization against a decoder written
// here from the format definitions, every ISA's dot product against the scalar one and against
// a double-precision product of the dequantized rows, Q8_K quantization, and the Q4_K/Q6_K
// reference quantizers' round-trip error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/kquant_blocks.h"
#include "kernels/registry.h"

namespace llmesh::kernels {
namespace {

constexpr DType kKTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// ---------------------------------------------------------------- independent decoder
// binary16 by its definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024.
double half_value(const uint8_t* p) {
  const unsigned h = p[0] | (p[1] << 8);
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(m / 1024.0, -14) : std::ldexp(1.0 + m / 1024.0, e - 15);
  return s ? -v : v;
}

// Decodes one 256-element block of type t from its bytes, walking the fields in storage order
// (the way the format is usually described), into out[256].
void decode_block(DType t, const uint8_t* p, double* out) {
  switch (t) {
    case DType::Q2_K: {  // scales[16] qs[64] d dmin
      const uint8_t* sc = p;
      const uint8_t* qs = p + 16;
      const double d = half_value(p + 80), dmin = half_value(p + 82);
      int is = 0;
      double* y = out;
      for (int half = 0; half < 2; ++half, qs += 32) {
        for (int shift = 0; shift < 8; shift += 2) {
          for (int part = 0; part < 2; ++part, ++is) {  // two groups of 16 per shift
            const double dl = d * (sc[is] & 15), ml = dmin * (sc[is] >> 4);
            for (int l = 0; l < 16; ++l) *y++ = dl * ((qs[16 * part + l] >> shift) & 3) - ml;
          }
        }
      }
      return;
    }
    case DType::Q3_K: {  // hmask[32] qs[64] scales[12] d
      const uint8_t* hm = p;
      const uint8_t* qs = p + 32;
      const uint8_t* s = p + 96;
      const double d = half_value(p + 108);
      int scales[16];
      for (int i = 0; i < 16; ++i) {
        // low nibbles: bytes 0..7 (low halves) then bytes 0..7 (high halves);
        // high 2-bit pairs: bytes 8..11, two bits per scale, 4 scales per bit position
        const int lo = i < 8 ? s[i] & 15 : s[i - 8] >> 4;
        const int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        scales[i] = (lo | (hi << 4)) - 32;
      }
      int is = 0, bit = 0;
      double* y = out;
      for (int half = 0; half < 2; ++half, qs += 32) {
        for (int shift = 0; shift < 8; shift += 2, ++bit) {
          for (int part = 0; part < 2; ++part, ++is) {
            for (int l = 16 * part; l < 16 * part + 16; ++l) {
              const int low = (qs[l] >> shift) & 3;
              const int v = low - ((hm[l] >> bit) & 1 ? 0 : 4);
              *y++ = d * scales[is] * v;
            }
          }
        }
      }
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K: {  // d dmin scales[12] (qh[32]) qs[128]
      const bool five = t == DType::Q5_K;
      const double d = half_value(p), dmin = half_value(p + 2);
      const uint8_t* s = p + 4;
      const uint8_t* qh = p + 16;
      const uint8_t* qs = p + (five ? 48 : 16);
      double* y = out;
      for (int sub = 0; sub < 8; ++sub) {
        int sc, mn;
        if (sub < 4) {
          sc = s[sub] & 63;
          mn = s[sub + 4] & 63;
        } else {
          sc = (s[sub + 4] & 15) | ((s[sub - 4] >> 6) << 4);
          mn = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
        }
        const uint8_t* q = qs + 32 * (sub / 2);
        for (int l = 0; l < 32; ++l) {
          int v = sub % 2 ? q[l] >> 4 : q[l] & 15;
          if (five && (qh[l] & (1 << sub))) v += 16;
          *y++ = d * sc * v - dmin * mn;
        }
      }
      return;
    }
    case DType::Q6_K: {  // ql[128] qh[64] scales[16] d
      const uint8_t* ql = p;
      const uint8_t* qh = p + 128;
      const auto* sc = reinterpret_cast<const int8_t*>(p + 192);
      const double d = half_value(p + 208);
      for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, out += 128) {
        for (int l = 0; l < 32; ++l) {
          const int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          const int is = l / 16;
          out[l] = d * sc[is] * q1;
          out[l + 32] = d * sc[is + 2] * q2;
          out[l + 64] = d * sc[is + 4] * q3;
          out[l + 96] = d * sc[is + 6] * q4;
        }
      }
      return;
    }
    default: FAIL() << "not a K-quant type";
  }
}

// ---------------------------------------------------------------- random data
void put_half(uint8_t* p, float f) {
  const uint16_t h = kq::float_to_half(f);
  std::memcpy(p, &h, 2);
}

// Random blocks: random bytes, then sane fp16 super-block scales (some negative for the
// symmetric types, as real files have).
std::vector<uint8_t> random_blocks(DType t, int64_t n, std::mt19937& rng) {
  const int64_t bb = dtype_traits(t).block_bytes;
  std::vector<uint8_t> v(static_cast<size_t>(n / 256 * bb));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> mag(0.0005f, 0.003f);
  for (auto& b : v) b = static_cast<uint8_t>(byte(rng));
  for (size_t off = 0; off < v.size(); off += bb) {
    uint8_t* p = v.data() + off;
    const float sign = byte(rng) & 1 ? 1.0f : -1.0f;
    switch (t) {
      case DType::Q2_K: put_half(p + 80, mag(rng)); put_half(p + 82, mag(rng)); break;
      case DType::Q3_K: put_half(p + 108, sign * mag(rng)); break;
      case DType::Q4_K:
      case DType::Q5_K: put_half(p, mag(rng)); put_half(p + 2, mag(rng)); break;
      case DType::Q6_K: put_half(p + 208, sign * mag(rng)); break;
      default: break;
    }
  }
  return v;
}

std::vector<float> random_floats(int64_t n, std::mt19937& rng, float outlier = 0.0f) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& f : x) f = g(rng);
  if (outlier != 0.0f && n > 37) x[37] = outlier;  // a large entry of either sign sets the scale
  return x;
}

std::vector<Isa> isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon})
    if (isa_supported(i)) v.push_back(i);
  return v;
}

const TypeKernels& kernels(DType t, Isa isa) {
  const TypeKernels* k = type_kernels(t, isa);
  EXPECT_NE(k, nullptr) << dtype_name(t) << " " << isa_name(isa);
  return *k;
}

// ---------------------------------------------------------------- tests
TEST(KQuants, BlockSizesMatchTheTypeTable) {
  EXPECT_EQ(sizeof(kq::BlockQ2K), static_cast<size_t>(dtype_traits(DType::Q2_K).block_bytes));
  EXPECT_EQ(sizeof(kq::BlockQ3K), static_cast<size_t>(dtype_traits(DType::Q3_K).block_bytes));
  EXPECT_EQ(sizeof(kq::BlockQ4K), static_cast<size_t>(dtype_traits(DType::Q4_K).block_bytes));
  EXPECT_EQ(sizeof(kq::BlockQ5K), static_cast<size_t>(dtype_traits(DType::Q5_K).block_bytes));
  EXPECT_EQ(sizeof(kq::BlockQ6K), static_cast<size_t>(dtype_traits(DType::Q6_K).block_bytes));
  EXPECT_EQ(sizeof(kq::BlockQ8K), static_cast<size_t>(dtype_traits(DType::Q8_K).block_bytes));
  for (DType t : kKTypes) {
    for (Isa isa : isas()) {
      const TypeKernels* k = type_kernels(t, isa);
      ASSERT_NE(k, nullptr) << dtype_name(t) << " " << isa_name(isa);
      EXPECT_EQ(k->act, DType::Q8_K);
    }
  }
}

TEST(KQuants, HalfConversionIsExact) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint8_t b[2] = {static_cast<uint8_t>(h), static_cast<uint8_t>(h >> 8)};
    if (((h >> 10) & 31) == 31) continue;  // inf / nan
    ASSERT_EQ(kq::half_to_float(static_cast<uint16_t>(h)), static_cast<float>(half_value(b))) << h;
    ASSERT_EQ(kq::float_to_half(kq::half_to_float(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_EQ(kq::float_to_half(1.0f + 1.0f / 2048), 0x3c00);  // tie -> even
  EXPECT_EQ(kq::float_to_half(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_EQ(kq::float_to_half(70000.0f), 0x7c00);
}

TEST(KQuants, DequantizeMatchesTheFormatDefinition) {
  std::mt19937 rng(1);
  const int64_t n = 256 * 6;
  for (DType t : kKTypes) {
    const auto w = random_blocks(t, n, rng);
    const int64_t bb = dtype_traits(t).block_bytes;
    for (Isa isa : isas()) {
      std::vector<float> got(n);
      kernels(t, isa).dequantize(w.data(), got.data(), n);
      for (int64_t b = 0; b < n / 256; ++b) {
        double want[256];
        decode_block(t, w.data() + b * bb, want);
        for (int e = 0; e < 256; ++e) {
          ASSERT_NEAR(got[b * 256 + e], want[e], 1e-6 * (1.0 + std::fabs(want[e])))
              << dtype_name(t) << " " << isa_name(isa) << " block " << b << " elem " << e;
        }
      }
    }
  }
}

TEST(KQuants, Q8KQuantizationFollowsTheDefinition) {
  std::mt19937 rng(2);
  for (float outlier : {0.0f, 9.0f, -9.0f}) {
    const int64_t n = 1024;
    const auto x = random_floats(n, rng, outlier);
    std::vector<kq::BlockQ8K> ref(n / 256);
    kq::quantize_q8_k(x.data(), ref.data(), n);
    for (int64_t b = 0; b < n / 256; ++b) {
      const kq::BlockQ8K& q = ref[b];
      float amax = 0.0f;
      for (int j = 0; j < 256; ++j) amax = std::max(amax, std::fabs(x[b * 256 + j]));
      EXPECT_FLOAT_EQ(std::fabs(q.d), amax / 127.0f);
      for (int j = 0; j < 256; ++j) {
        ASSERT_LE(std::fabs(q.d * q.qs[j] - x[b * 256 + j]), 0.5f * std::fabs(q.d) * 1.0001f);
      }
      for (int g = 0; g < 16; ++g) {
        int s = 0;
        for (int j = 0; j < 16; ++j) s += q.qs[16 * g + j];
        EXPECT_EQ(q.bsums[g], s);
      }
    }
    // every ISA produces the same bytes
    for (Isa isa : isas()) {
      std::vector<kq::BlockQ8K> got(n / 256);
      kernels(DType::Q4_K, isa).quantize_act(x.data(), got.data(), n);
      EXPECT_EQ(std::memcmp(got.data(), ref.data(), sizeof(kq::BlockQ8K) * ref.size()), 0) << isa_name(isa);
    }
  }
  std::vector<float> zeros(256, 0.0f);
  kq::BlockQ8K z;
  std::memset(&z, 0x55, sizeof z);
  kq::quantize_q8_k(zeros.data(), &z, 256);
  EXPECT_EQ(z.d, 0.0f);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(z.qs[j], 0);
}

// Each ISA's dot product equals the double-precision product of the dequantized weight row and
// the dequantized Q8_K row (to float rounding), and agrees with the scalar kernel.
TEST(KQuants, VecDotAllIsasMatchReference) {
  std::mt19937 rng(3);
  for (DType t : kKTypes) {
    for (int64_t n : {256, 512, 768, 2048, 4096, 8192}) {
      for (int rep = 0; rep < 3; ++rep) {
        const auto w = random_blocks(t, n, rng);
        const auto x = random_floats(n, rng, rep == 1 ? 20.0f : 0.0f);
        std::vector<kq::BlockQ8K> a(n / 256);
        kq::quantize_q8_k(x.data(), a.data(), n);
        std::vector<float> wd(n);
        kernels(t, Isa::Scalar).dequantize(w.data(), wd.data(), n);
        double want = 0.0, mag = 0.0;
        for (int64_t e = 0; e < n; ++e) {
          const double term = static_cast<double>(wd[e]) * a[e / 256].d * a[e / 256].qs[e % 256];
          want += term;
          mag += std::fabs(term);
        }
        const float scalar = kernels(t, Isa::Scalar).vec_dot(n, w.data(), a.data());
        for (Isa isa : isas()) {
          const float got = kernels(t, isa).vec_dot(n, w.data(), a.data());
          EXPECT_NEAR(got, want, 2e-6 * mag + 1e-6)
              << dtype_name(t) << " " << isa_name(isa) << " n=" << n << " rep=" << rep;
          EXPECT_NEAR(got, scalar, 2e-6 * mag + 1e-6)
              << dtype_name(t) << " " << isa_name(isa) << " vs scalar, n=" << n;
        }
      }
    }
  }
}

// Extreme codes: all-max weights against all +-127 activations (int16 pair sums near their
// limits must not saturate).
TEST(KQuants, VecDotExtremeValues) {
  for (DType t : kKTypes) {
    const int64_t n = 512;
    std::vector<uint8_t> w(static_cast<size_t>(n / 256 * dtype_traits(t).block_bytes), 0xff);
    const int64_t bb = dtype_traits(t).block_bytes;
    for (int64_t off = 0; off < static_cast<int64_t>(w.size()); off += bb) {
      switch (t) {
        case DType::Q2_K: put_half(&w[off + 80], 0.01f); put_half(&w[off + 82], 0.01f); break;
        case DType::Q3_K: put_half(&w[off + 108], 0.01f); break;
        case DType::Q4_K:
        case DType::Q5_K: put_half(&w[off], 0.01f); put_half(&w[off + 2], 0.01f); break;
        case DType::Q6_K:
          put_half(&w[off + 208], 0.01f);
          for (int s = 0; s < 16; ++s) w[off + 192 + s] = s % 2 ? 0x80 : 0x7f;  // -128 / 127
          break;
        default: break;
      }
    }
    for (float sign : {1.0f, -1.0f}) {
      std::vector<float> x(n);
      for (int64_t e = 0; e < n; ++e) x[e] = (e % 3 == 0 ? -sign : sign);
      std::vector<kq::BlockQ8K> a(n / 256);
      kq::quantize_q8_k(x.data(), a.data(), n);
      std::vector<float> wd(n);
      kernels(t, Isa::Scalar).dequantize(w.data(), wd.data(), n);
      double want = 0.0, mag = 0.0;
      for (int64_t e = 0; e < n; ++e) {
        const double term = static_cast<double>(wd[e]) * a[e / 256].d * a[e / 256].qs[e % 256];
        want += term;
        mag += std::fabs(term);
      }
      for (Isa isa : isas()) {
        EXPECT_NEAR(kernels(t, isa).vec_dot(n, w.data(), a.data()), want, 2e-6 * mag + 1e-6)
            << dtype_name(t) << " " << isa_name(isa);
      }
    }
  }
}

// The register-blocked tiles give every (row, column) product of the tile, equal to vec_dot,
// and write nothing else.
TEST(KQuants, TilesMatchVecDot) {
  std::mt19937 rng(5);
  int tested = 0;
  for (DType t : kKTypes) {
    for (Isa isa : isas()) {
      const TypeKernels& k = kernels(t, isa);
      if (!k.tile) continue;
      ASSERT_GT(k.tile_rows, 0);
      ASSERT_GT(k.tile_cols, 0);
      for (int64_t n : {256, 1024, 5632}) {
        const int R = k.tile_rows, C = k.tile_cols;
        const int64_t rb = *dtype_row_bytes(t, n);
        const auto w = random_blocks(t, n * R, rng);
        std::vector<kq::BlockQ8K> a(static_cast<size_t>(n / 256 * C));
        for (int c = 0; c < C; ++c) {
          const auto x = random_floats(n, rng, c == 1 ? -15.0f : 0.0f);
          k.quantize_act(x.data(), a.data() + c * (n / 256), n);
        }
        const size_t a_stride = sizeof(kq::BlockQ8K) * (n / 256);
        for (int nr = 1; nr <= R; ++nr) {
          for (int nc = 1; nc <= C; ++nc) {
            const size_t ys = R + 3;
            std::vector<float> y(ys * C, -777.0f);
            k.tile(n, w.data(), rb, nr, a.data(), a_stride, nc, y.data(), ys);
            for (int c = 0; c < C; ++c) {
              for (size_t r = 0; r < ys; ++r) {
                const float got = y[c * ys + r];
                if (c >= nc || static_cast<int>(r) >= nr) {
                  ASSERT_EQ(got, -777.0f) << "wrote outside the tile";
                  continue;
                }
                const auto* ac = reinterpret_cast<const uint8_t*>(a.data()) + c * a_stride;
                const float want = k.vec_dot(n, w.data() + r * rb, ac);
                ASSERT_NEAR(got, want, 1e-4f * (1.0f + std::fabs(want)))
                    << dtype_name(t) << " " << isa_name(isa) << " n=" << n << " tile " << nr << "x" << nc
                    << " at " << r << "," << c;
              }
            }
          }
        }
        ++tested;
      }
    }
  }
  if (tested == 0) GTEST_SKIP() << "no ISA here has a K-quant tile kernel";
}

// Through the public entry points (dispatch, matmul with its tiles and threads): a K-quant
// matrix times several tokens equals the per-row dot products, on every ISA.
TEST(KQuants, MatmulUsesTheKernelsConsistently) {
  std::mt19937 rng(6);
  ThreadPool pool(2);
  const Isa saved = active_isa();
  for (DType t : kKTypes) {
    const int64_t n = 1024, rows = 37, tokens = 7;
    const int64_t rb = *dtype_row_bytes(t, n);
    const auto w = random_blocks(t, n * rows, rng);
    const auto x = random_floats(n * tokens, rng);
    for (Isa isa : isas()) {
      force_isa(isa);
      std::vector<uint8_t> act(act_row_bytes(t, n));
      MatView W{t, n, rows, w.data(), static_cast<size_t>(rb)};
      std::vector<float> y(rows * tokens);
      matmul(W, x.data(), n, tokens, y.data(), rows, pool);
      for (int64_t tok = 0; tok < tokens; ++tok) {
        quantize_act_row(t, x.data() + tok * n, act.data(), n);
        for (int64_t r = 0; r < rows; ++r) {
          const float want = vec_dot(t, n, w.data() + r * rb, act.data());
          ASSERT_NEAR(y[tok * rows + r], want, 1e-4f * (1.0f + std::fabs(want)))
              << dtype_name(t) << " " << isa_name(isa) << " token " << tok << " row " << r;
        }
      }
    }
  }
  force_isa(saved);
}

double rel_rms_error(DType t, void (*quant)(const float*, void*, int64_t), const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(static_cast<size_t>(n / 256 * dtype_traits(t).block_bytes));
  quant(x.data(), q.data(), n);
  std::vector<float> y(n);
  kernels(t, Isa::Scalar).dequantize(q.data(), y.data(), n);
  double err = 0, sig = 0;
  for (int64_t i = 0; i < n; ++i) {
    err += (x[i] - y[i]) * static_cast<double>(x[i] - y[i]);
    sig += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(err / sig);
}

TEST(KQuants, ReferenceQuantizersRoundTrip) {
  std::mt19937 rng(4);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> x(256 * 64);
  for (auto& f : x) f = g(rng);
  // 4-bit affine codes: about 1/15 of a sub-block's range per step
  const double e4 = rel_rms_error(DType::Q4_K, kq::quantize_q4_k_ref, x);
  const double e6 = rel_rms_error(DType::Q6_K, kq::quantize_q6_k_ref, x);
  EXPECT_LT(e4, 0.09);  // measured 0.076
  EXPECT_LT(e6, 0.025);  // measured 0.019
  EXPECT_LT(e6, e4);
  // offsets and zero blocks survive
  std::vector<float> shifted(x);
  for (auto& f : shifted) f += 0.05f;
  EXPECT_LT(rel_rms_error(DType::Q4_K, kq::quantize_q4_k_ref, shifted), 0.05);
  std::vector<float> zeros(512, 0.0f);
  std::vector<uint8_t> q4(2 * 144), q6(2 * 210);
  std::vector<float> back(512, 1.0f);
  kq::quantize_q4_k_ref(zeros.data(), q4.data(), 512);
  kq::dequantize_q4_k(q4.data(), back.data(), 512);
  for (float f : back) EXPECT_EQ(f, 0.0f);
  kq::quantize_q6_k_ref(zeros.data(), q6.data(), 512);
  kq::dequantize_q6_k(q6.data(), back.data(), 512);
  for (float f : back) EXPECT_EQ(f, 0.0f);
}

}  // namespace
}  // namespace llmesh::kernels
