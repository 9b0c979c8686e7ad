// What a node has, measured rather than configured: usable cores, RAM, an accelerator if any,
// and how fast the engine's own matmul kernel runs here. The figures fill the `hardware` part
// of the gossip NodeState (mesh/gossip/node_state.h), so other nodes can weigh this one when
// they place layers and route requests.
//
// Everything here is defensive: odd or missing /proc and /sys files give 0 (or an empty string)
// for "unknown", never an exception. Container limits (cgroup v2 cpu.max, memory.max, and the
// cgroup v1 equivalents) count when they are lower than what the host reports.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace llmesh {

class ThreadPool;

struct HardwareInfo {
  uint32_t cores = 0;            // usable_cores()
  uint64_t ram_bytes = 0;        // total_ram_bytes(); 0: unknown
  uint64_t free_ram_bytes = 0;   // available_ram_bytes(); 0: unknown
  double matmul_gflops = 0;      // measure_matmul_gflops(); 0: not measured
  std::string accelerator;       // detect_accelerator(); empty: none
  std::string cpu_model;         // /proc/cpuinfo "model name" (or the ARM equivalent); may be empty
  std::string isa;               // the kernel ISA in use: "scalar", "avx2", "avx512", "neon"
};

// CPUs this process may run on: the sched_getaffinity set (std::thread::hardware_concurrency
// when that fails), lowered to ceil(quota / period) of a cgroup CPU quota. Always >= 1.
uint32_t usable_cores();

// MemTotal from /proc/meminfo, lowered to a cgroup memory limit (memory.max, or v1
// memory.limit_in_bytes) of this process's cgroup or any ancestor. 0: unknown.
uint64_t total_ram_bytes();
// MemAvailable from /proc/meminfo, lowered to (limit - usage + inactive file cache) of any
// limited cgroup on the way to the root. 0: unknown.
uint64_t available_ram_bytes();

// "" when the node has no accelerator the mesh should know about. With NVIDIA's driver loaded,
// the model name from /proc/driver/nvidia/gpus/*/information ("NVIDIA H100 80GB HBM3", with
// " x2" etc. for several); "amd-gpu" when /dev/kfd exists. Informational only: the engine runs
// on the CPU and does not use accelerators yet.
std::string detect_accelerator();

// A short benchmark of the engine's own matmul (kernels::matmul, the call the forward pass
// makes) on Q4_0 weights of 2048 x 2048 times a batch of 32 activation rows, the shape of a
// prefill chunk or a busy decode batch of a 1-3B model, run on `threads` threads of a ThreadPool
// (threads <= 0: usable_cores()). Returns the median rate in GFLOP/s, 2 * rows * cols * tokens
// per call. Setup and a warm-up call count against `budget` (clamped to [1 ms, 5 s]); timed
// calls then repeat while the next one (predicted from the last) still fits, so the whole call
// takes about the budget. At least one call always runs: when the warm-up alone uses up the
// budget its own time is the measurement, so a machine slower than the budget takes the setup
// (about 3 ms) plus one call. 0 only when no timing could be taken.
inline constexpr std::chrono::milliseconds kDefaultMatmulBudget{150};
double measure_matmul_gflops(int threads, std::chrono::milliseconds budget = kDefaultMatmulBudget);
// The same on an existing pool (a serving node's own, so no threads are created).
double measure_matmul_gflops(ThreadPool& pool, std::chrono::milliseconds budget = kDefaultMatmulBudget);

// All of the above; measure = false leaves matmul_gflops 0 (no benchmark, near-instant).
HardwareInfo probe_hardware(int threads, bool measure = true);

// {"cores", "ram_bytes", "free_ram_bytes", "matmul_gflops", "accelerator", "cpu_model", "isa"}
nlohmann::json to_json(const HardwareInfo& h);

// ---- Parsers, exposed for tests -------------------------------------------------------------

struct MemInfo {
  uint64_t total_bytes = 0;      // MemTotal; 0: missing or malformed
  uint64_t available_bytes = 0;  // MemAvailable (MemFree + Buffers + Cached on kernels without
                                 // it); 0: missing or malformed
};
// /proc/meminfo text ("MemTotal:       24684084 kB" lines). Unparseable lines are skipped.
MemInfo parse_meminfo(std::string_view text);

// cgroup v2 cpu.max ("200000 100000", "max 100000", "150000"): the quota in CPUs (2.0), or
// nullopt for no limit or malformed text.
std::optional<double> parse_cpu_max(std::string_view text);

// A cgroup byte count file (memory.max, memory.current, memory.limit_in_bytes): the value, or
// nullopt for "max" or malformed text.
std::optional<uint64_t> parse_cgroup_bytes(std::string_view text);

// One field ("inactive_file") of a cgroup memory.stat text; nullopt when absent or malformed.
std::optional<uint64_t> parse_memory_stat_field(std::string_view text, std::string_view key);

// The "Model:" line of an NVIDIA /proc/driver/nvidia/gpus/*/information file; "" if absent.
std::string parse_nvidia_model(std::string_view information);

}  // namespace llmesh
