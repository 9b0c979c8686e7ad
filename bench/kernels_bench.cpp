// Microbenchmarks of the matmul kernels: decode (1 token, bandwidth bound) and prefill
// (128 tokens, compute bound) on 2048x2048 and 5632x2048 weights (rows x columns) in Q4_0,
// Q8_0 and F16, per ISA the CPU has. Threads: LLMESH_BENCH_THREADS (default 2).
// Decode cycles through enough weight copies (>= 256 MiB) that every call streams from DRAM,
// as in a real decode step (LLMESH_BENCH_HOT=1 keeps one copy, cache-resident); it reports
// GB/s of weights read. Prefill reports GFLOP/s.
//
//   build-kernels/bin/llmesh_microbench --benchmark_filter=matmul
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

using namespace llmesh;
using namespace llmesh::kernels;

namespace {

int bench_threads() {
  const char* e = std::getenv("LLMESH_BENCH_THREADS");
  return e ? std::max(1, std::atoi(e)) : 2;
}

ThreadPool& pool() {
  static ThreadPool p(bench_threads());
  return p;
}

// Random weight bytes with finite, small fp16 scales at the start of every block.
std::vector<uint8_t> random_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  const int64_t rb = *dtype_row_bytes(t, cols);
  std::vector<uint8_t> v(static_cast<size_t>(rb * rows));
  std::mt19937 rng(seed);
  for (size_t i = 0; i < v.size(); i += 4) {
    const uint32_t r = rng();
    std::memcpy(&v[i], &r, std::min<size_t>(4, v.size() - i));
  }
  const auto& tr = dtype_traits(t);
  if (t == DType::F16) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      const uint16_t h = fp32_to_fp16(static_cast<float>(static_cast<int>(rng() % 2001) - 1000) * 1e-3f);
      std::memcpy(&v[2 * i], &h, 2);
    }
  } else {
    const uint16_t d = fp32_to_fp16(0.01f);
    for (size_t off = 0; off < v.size(); off += tr.block_bytes) std::memcpy(&v[off], &d, 2);
  }
  return v;
}

void bm_matmul(benchmark::State& state, DType t, Isa isa, int64_t rows, int64_t cols, int64_t tokens) {
  if (!isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  force_isa(isa);
  const int64_t rb = *dtype_row_bytes(t, cols);
  const size_t bytes = static_cast<size_t>(rb * rows);
  // Decode: enough copies to defeat the caches; prefill: one (it is reused 128 times anyway).
  // (LLMESH_BENCH_HOT=1: a single copy, to see the kernel's speed from the caches)
  const bool hot = std::getenv("LLMESH_BENCH_HOT") != nullptr;
  const size_t copies = tokens == 1 && !hot ? std::max<size_t>(1, (256u << 20) / bytes) : 1;
  std::vector<std::vector<uint8_t>> w;
  for (size_t i = 0; i < copies; ++i) w.push_back(random_weights(t, rows, cols, static_cast<uint32_t>(i)));
  std::vector<float> x(static_cast<size_t>(cols * tokens)), y(static_cast<size_t>(rows * tokens));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& f : x) f = nd(rng);
  size_t k = 0;
  for (auto _ : state) {
    const MatView view{t, cols, rows, w[k].data(), static_cast<size_t>(rb)};
    matmul(view, x.data(), cols, tokens, y.data(), rows, pool());
    benchmark::ClobberMemory();
    k = (k + 1) % copies;
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9 * state.iterations(),
                                              benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * cols * tokens * 1e-9 * state.iterations(),
                                                 benchmark::Counter::kIsRate);
  state.SetLabel(std::string(isa_name(isa)) + " threads=" + std::to_string(pool().size()));
}

struct Registrar {
  Registrar() {
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
      if (!isa_supported(isa)) continue;
      for (DType t : {DType::Q4_0, DType::Q8_0, DType::F16}) {
        for (auto [rows, cols] : {std::pair<int64_t, int64_t>{2048, 2048}, {5632, 2048}}) {
          for (int64_t tokens : {1, 128}) {
            if (isa == Isa::Scalar && tokens > 1) continue;  // seconds per call; not informative
            const std::string name = std::string("matmul/") + (tokens == 1 ? "decode/" : "prefill/") +
                                     dtype_name(t) + "/" + std::to_string(rows) + "x" + std::to_string(cols) +
                                     "/" + isa_name(isa);
            benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) {
              bm_matmul(s, t, isa, rows, cols, tokens);
            })->Unit(benchmark::kMicrosecond)->UseRealTime();
          }
        }
      }
    }
  }
} registrar;

}  // namespace
