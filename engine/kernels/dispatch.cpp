// Run-time choice of the instruction set the kernels use.
//   Avx2 tier:   avx2 + fma + f16c.
//   Avx512 tier: avx512f + bw + vl + dq + vnni (AVX-512 without VNNI stays on the Avx2 tier).
// LLMESH_ISA=scalar|avx2|avx512 picks a narrower one (a wider one than the CPU has is ignored
// with a warning); force_isa() overrides both (tests, benchmarks).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "kernels/kernels.h"
#include "log/event_log.h"

namespace llmesh::kernels {
namespace {

Isa detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vnni");
  if (avx512) return Isa::Avx512;
  if (avx2) return Isa::Avx2;
  return Isa::Scalar;
#elif defined(__aarch64__) && defined(__ARM_NEON)
  return Isa::Neon;
#else
  return Isa::Scalar;
#endif
}

Isa from_env(Isa detected) {
  const char* env = std::getenv("LLMESH_ISA");
  if (!env || !*env) return detected;
  const std::string_view v(env);
  Isa want;
  if (v == "scalar") want = Isa::Scalar;
  else if (v == "avx2") want = Isa::Avx2;
  else if (v == "avx512") want = Isa::Avx512;
  else if (v == "neon") want = Isa::Neon;
  else {
    logs::warn("kernels", "isa_unknown",
               std::string("LLMESH_ISA=") + env + " is not one of scalar|avx2|avx512|neon; using " + isa_name(detected),
               {{"requested", env}, {"isa", isa_name(detected)}});
    return detected;
  }
  if (!isa_supported(want)) {
    logs::warn("kernels", "isa_unsupported",
               std::string("LLMESH_ISA=") + env + " is not supported by this CPU; using " + isa_name(detected),
               {{"requested", env}, {"isa", isa_name(detected)}});
    return detected;
  }
  return want;
}

std::atomic<int> g_forced{-1};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
  }
  return "unknown";
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

bool isa_supported(Isa isa) {
  const Isa d = detected_isa();
  if (isa == Isa::Scalar) return true;
  if (d == Isa::Neon) return isa == Isa::Neon;
  if (isa == Isa::Neon) return false;
  return static_cast<int>(isa) <= static_cast<int>(d);
}

Isa active_isa() {
  const int f = g_forced.load(std::memory_order_relaxed);
  if (f >= 0) return static_cast<Isa>(f);
  static const Isa env_isa = from_env(detected_isa());
  return env_isa;
}

void force_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::runtime_error(std::string("ISA ") + isa_name(isa) + " is not supported by this CPU");
  g_forced.store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace llmesh::kernels
