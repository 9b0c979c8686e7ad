// llmesh_membw: sustained memory READ bandwidth, the ceiling for a bandwidth-bound decode.
//
// Streams a buffer much larger than the last-level cache (default 1 GiB) with K threads,
// each summing a contiguous 1/K slice with 256-bit loads (AVX2 when the CPU has it, a
// scalar 4-accumulator loop otherwise), and reports the median (and best) of several
// passes in GB/s (1 GB = 1e9 bytes). Thread start-up is outside the timed region; the
// timed region is from releasing the already-running threads until the last one is done.
//
// usage: llmesh_membw [--size-mib 1024] [--threads 1,2] [--passes 9] [--json]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LLMESH_MEMBW_X86 1
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

uint64_t sum_scalar(const uint64_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
  }
  for (; i < n; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3;
}

#ifdef LLMESH_MEMBW_X86
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, size_t n) {
  // 4 independent accumulators x 32 bytes = 128 bytes (two cache lines) per iteration.
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  uint64_t r = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) r += p[i];
  return r;
}
#endif

using SumFn = uint64_t (*)(const uint64_t*, size_t);

struct Result {
  int threads = 0;
  std::vector<double> gbs;  // one per pass
  double median = 0, best = 0;
};

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// One timed pass over buf with k threads.
double run_pass(const uint64_t* buf, size_t n, int k, SumFn fn, uint64_t& sink) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<uint64_t> partial(static_cast<size_t>(k) * 8, 0);  // padded, no false sharing
  std::vector<std::thread> th;
  size_t chunk = (n / k) & ~size_t(15);  // keep slices 128-byte aligned
  for (int t = 0; t < k; ++t) {
    size_t b = chunk * t, e = (t == k - 1) ? n : chunk * (t + 1);
    th.emplace_back([&, b, e, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      partial[static_cast<size_t>(t) * 8] = fn(buf + b, e - b);
    });
  }
  while (ready.load() != k) {
  }
  auto t0 = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& x : th) x.join();
  auto t1 = std::chrono::steady_clock::now();
  for (int t = 0; t < k; ++t) sink += partial[static_cast<size_t>(t) * 8];
  double s = std::chrono::duration<double>(t1 - t0).count();
  return static_cast<double>(n * sizeof(uint64_t)) / s / 1e9;
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> v;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    int x = std::atoi(s.substr(i, j - i).c_str());
    if (x <= 0) {
      std::fprintf(stderr, "bad thread count in '%s'\n", s.c_str());
      std::exit(2);
    }
    v.push_back(x);
    i = j + 1;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  size_t size_mib = 1024;
  std::vector<int> threads = {1, 2};
  int passes = 9;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--size-mib") size_mib = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--threads") threads = parse_list(next());
    else if (a == "--passes") passes = std::atoi(next().c_str());
    else if (a == "--json") json = true;
    else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: llmesh_membw [--size-mib 1024] [--threads 1,2] [--passes 9] [--json]\n"
          "Memory read bandwidth (GB/s = 1e9 B/s), median of passes, per thread count.\n");
      return 0;
    } else {
      std::fprintf(stderr, "unknown argument %s (try --help)\n", a.c_str());
      return 2;
    }
  }
  if (size_mib < 64 || passes < 1) {
    std::fprintf(stderr, "--size-mib must be >= 64 and --passes >= 1\n");
    return 2;
  }

  const size_t bytes = size_mib << 20;
  const size_t n = bytes / sizeof(uint64_t);
  auto* buf = static_cast<uint64_t*>(std::aligned_alloc(2u << 20, bytes));
  if (!buf) {
    std::fprintf(stderr, "cannot allocate %zu MiB\n", size_mib);
    return 1;
  }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(buf, bytes, MADV_HUGEPAGE);  // fewer TLB misses, like a large mmap'd model
#endif
  for (size_t i = 0; i < n; ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;  // fault in + non-zero

  SumFn fn = sum_scalar;
  const char* kernel = "scalar";
#ifdef LLMESH_MEMBW_X86
  if (__builtin_cpu_supports("avx2")) {
    fn = sum_avx2;
    kernel = "avx2";
  }
#endif

  uint64_t sink = 0;
  std::vector<Result> results;
  for (int k : threads) {
    Result r;
    r.threads = k;
    run_pass(buf, n, k, fn, sink);  // warm-up (TLB, frequency)
    for (int p = 0; p < passes; ++p) r.gbs.push_back(run_pass(buf, n, k, fn, sink));
    r.median = median_of(r.gbs);
    r.best = *std::max_element(r.gbs.begin(), r.gbs.end());
    results.push_back(r);
  }
  std::free(buf);

  if (json) {
    std::printf("{\"buffer_bytes\": %zu, \"kernel\": \"%s\", \"passes\": %d, \"hw_threads\": %u, "
                "\"checksum\": %llu, \"results\": [",
                bytes, kernel, passes, std::thread::hardware_concurrency(),
                static_cast<unsigned long long>(sink));
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      std::printf("%s{\"threads\": %d, \"median_gb_s\": %.3f, \"best_gb_s\": %.3f, \"passes_gb_s\": [",
                  i ? ", " : "", r.threads, r.median, r.best);
      for (size_t j = 0; j < r.gbs.size(); ++j) std::printf("%s%.3f", j ? ", " : "", r.gbs[j]);
      std::printf("]}");
    }
    std::printf("]}\n");
  } else {
    std::printf("memory read bandwidth, %zu MiB buffer, %s loads, %d passes (GB/s = 1e9 B/s)\n",
                size_mib, kernel, passes);
    for (const auto& r : results)
      std::printf("  threads %2d: median %7.2f GB/s   best %7.2f GB/s\n", r.threads, r.median,
                  r.best);
    if ((sink & 0xffff) == 0xdead) std::printf(" \n");  // keep the sums alive
  }
  return 0;
}
