#include "hardware/hardware_probe.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

#include "kernels/kernels.h"
#include "kernels/thread_pool.h"

namespace llmesh {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Whole small file (a /proc or /sys text), nullopt when unreadable. Never throws.
std::optional<std::string> read_text(const std::string& path, size_t max_bytes = 1 << 20) {
  try {
    std::ifstream f(path, std::ios::binary);
    if (!f) return std::nullopt;
    std::string out;
    char buf[4096];
    while (out.size() < max_bytes) {
      f.read(buf, sizeof buf);
      if (f.gcount() <= 0) break;
      out.append(buf, static_cast<size_t>(f.gcount()));
    }
    if (f.bad()) return std::nullopt;
    if (out.size() > max_bytes) out.resize(max_bytes);
    return out;
  } catch (...) {
    return std::nullopt;
  }
}

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec) && !ec;
}

std::string_view trim(std::string_view s) {
  const auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

// A whole unsigned decimal number (no sign, no trailing text); nullopt on overflow or junk.
std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// Splits on spaces/tabs, skipping empty pieces.
std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

template <class F>
void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    f(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

// ---- cgroups ---------------------------------------------------------------------------------

// The directories to read a controller's files from, deepest first: this process's cgroup and
// each ancestor up to the mount point (a limit anywhere on the way applies). When the process's
// path does not exist under the mount (a container that sees its own cgroup as the root), the
// missing levels are simply skipped and the mount point itself is still read.
std::vector<std::string> cgroup_dirs(const std::string& mount, std::string rel) {
  std::vector<std::string> dirs;
  if (!exists(mount)) return dirs;
  if (rel.empty() || rel[0] != '/' || rel.find("..") != std::string::npos) rel = "/";
  while (rel.size() > 1 && rel.back() == '/') rel.pop_back();
  for (int depth = 0; depth < 64; ++depth) {
    const std::string dir = rel == "/" ? mount : mount + rel;
    if (exists(dir)) dirs.push_back(dir);
    if (rel == "/") break;
    const size_t slash = rel.rfind('/');
    rel = slash == 0 ? "/" : rel.substr(0, slash);
  }
  return dirs;
}

struct CgroupPaths {
  std::optional<std::string> v2;         // the "0::" path
  std::optional<std::string> v1_memory;  // the path of the hierarchy with the memory controller
  std::optional<std::string> v1_cpu;     // ... with the cpu controller
};

CgroupPaths self_cgroups() {
  CgroupPaths out;
  const auto text = read_text("/proc/self/cgroup");
  if (!text) return out;
  for_each_line(*text, [&](std::string_view line) {
    const size_t a = line.find(':');
    if (a == std::string_view::npos) return;
    const size_t b = line.find(':', a + 1);
    if (b == std::string_view::npos) return;
    const std::string_view id = line.substr(0, a), ctrls = line.substr(a + 1, b - a - 1);
    const std::string path(trim(line.substr(b + 1)));
    if (id == "0" && ctrls.empty()) {
      out.v2 = path;
      return;
    }
    std::string_view rest = ctrls;
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      const std::string_view c = rest.substr(0, comma);
      if (c == "memory") out.v1_memory = path;
      if (c == "cpu") out.v1_cpu = path;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  });
  return out;
}

// Where the v2 hierarchy is mounted: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
std::optional<std::string> v2_mount() {
  for (const char* m : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"})
    if (exists(std::string(m) + "/cgroup.controllers")) return std::string(m);
  return std::nullopt;
}

// Where a v1 controller is mounted (the cpu controller is often co-mounted with cpuacct).
std::vector<std::string> v1_mounts(std::string_view controller) {
  std::vector<std::string> candidates{"/sys/fs/cgroup/" + std::string(controller)};
  if (controller == "cpu") {
    candidates.push_back("/sys/fs/cgroup/cpu,cpuacct");
    candidates.push_back("/sys/fs/cgroup/cpuacct,cpu");
  }
  std::vector<std::string> out;
  for (auto& m : candidates) {
    std::error_code ec;
    const auto canonical = fs::canonical(m, ec);  // /sys/fs/cgroup/cpu is often a symlink
    if (ec) continue;
    if (std::find(out.begin(), out.end(), canonical.string()) == out.end()) out.push_back(canonical.string());
  }
  return out;
}

// The lowest CPU quota (in CPUs) of this process's cgroups, nullopt when none.
std::optional<double> cgroup_cpu_quota() {
  const CgroupPaths paths = self_cgroups();
  std::optional<double> best;
  const auto take = [&](std::optional<double> q) {
    if (q && *q > 0 && (!best || *q < *best)) best = q;
  };
  if (const auto mount = v2_mount(); mount && paths.v2)
    for (const auto& dir : cgroup_dirs(*mount, *paths.v2))
      if (const auto t = read_text(dir + "/cpu.max", 4096)) take(parse_cpu_max(*t));
  if (paths.v1_cpu) {
    for (const auto& mount : v1_mounts("cpu")) {
      for (const auto& dir : cgroup_dirs(mount, *paths.v1_cpu)) {
        const auto q = read_text(dir + "/cpu.cfs_quota_us", 4096);
        const auto p = read_text(dir + "/cpu.cfs_period_us", 4096);
        if (!q || !p) continue;
        const auto quota = parse_u64(trim(*q));  // "-1" (no limit) fails to parse: skipped
        const auto period = parse_u64(trim(*p));
        if (quota && period && *period > 0) take(static_cast<double>(*quota) / static_cast<double>(*period));
      }
    }
  }
  return best;
}

struct CgroupMemory {
  std::optional<uint64_t> limit;      // the lowest limit on the way to the root
  std::optional<uint64_t> available;  // the lowest (limit - usage + inactive file cache)
};

CgroupMemory cgroup_memory() {
  CgroupMemory out;
  const auto level = [&](const std::string& dir, const char* limit_file, const char* usage_file,
                         std::initializer_list<const char*> inactive_keys) {
    const auto lt = read_text(dir + "/" + limit_file, 4096);
    if (!lt) return;
    const auto limit = parse_cgroup_bytes(*lt);
    // "max" (v2) or a page-rounded 2^63 (v1): no limit at this level
    if (!limit || *limit >= (uint64_t{1} << 62)) return;
    if (!out.limit || *limit < *out.limit) out.limit = limit;
    const auto ut = read_text(dir + "/" + usage_file, 4096);
    const auto usage = ut ? parse_cgroup_bytes(*ut) : std::nullopt;
    if (!usage) return;
    // Page cache the kernel would drop before failing an allocation does not count as used.
    uint64_t inactive = 0;
    if (const auto st = read_text(dir + "/memory.stat")) {
      for (const char* key : inactive_keys) {
        if (const auto v = parse_memory_stat_field(*st, key)) {
          inactive = *v;
          break;
        }
      }
    }
    const uint64_t working = *usage > inactive ? *usage - inactive : 0;
    const uint64_t avail = *limit > working ? *limit - working : 0;
    if (!out.available || avail < *out.available) out.available = avail;
  };
  const CgroupPaths paths = self_cgroups();
  if (const auto mount = v2_mount(); mount && paths.v2)
    for (const auto& dir : cgroup_dirs(*mount, *paths.v2))
      level(dir, "memory.max", "memory.current", {"inactive_file"});
  if (paths.v1_memory)
    for (const auto& mount : v1_mounts("memory"))
      for (const auto& dir : cgroup_dirs(mount, *paths.v1_memory))
        level(dir, "memory.limit_in_bytes", "memory.usage_in_bytes", {"total_inactive_file", "inactive_file"});
  return out;
}

// min(a, b) where 0 means unknown for `a`.
uint64_t lower(uint64_t a, std::optional<uint64_t> b) {
  if (!b) return a;
  return a == 0 ? *b : std::min(a, *b);
}

std::string cpu_model_name() {
  const auto text = read_text("/proc/cpuinfo", 4 << 20);
  if (!text) return {};
  std::string found;
  // x86 "model name"; ARM boards "Model" or "Hardware"; some ARM kernels only "Processor".
  for (const std::string_view want : {"model name", "Model", "Hardware", "Processor", "cpu model"}) {
    for_each_line(*text, [&](std::string_view line) {
      if (!found.empty()) return;
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos || trim(line.substr(0, colon)) != want) return;
      found = std::string(trim(line.substr(colon + 1)));
    });
    if (!found.empty()) break;
  }
  if (found.size() > 128) found.resize(128);
  return found;
}

}  // namespace

// ---- Parsers ---------------------------------------------------------------------------------

MemInfo parse_meminfo(std::string_view text) {
  std::optional<uint64_t> total, avail, free, buffers, cached;
  for_each_line(text, [&](std::string_view line) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return;
    const std::string_view key = trim(line.substr(0, colon));
    const auto w = words(trim(line.substr(colon + 1)));
    if (w.empty() || w.size() > 2) return;
    auto v = parse_u64(w[0]);
    if (!v) return;
    if (w.size() == 2) {
      if (w[1] != "kB") return;  // the only unit the kernel writes
      if (*v > std::numeric_limits<uint64_t>::max() / 1024) return;
      *v *= 1024;
    }
    if (key == "MemTotal") total = v;
    else if (key == "MemAvailable") avail = v;
    else if (key == "MemFree") free = v;
    else if (key == "Buffers") buffers = v;
    else if (key == "Cached") cached = v;
  });
  MemInfo m;
  m.total_bytes = total.value_or(0);
  if (avail) {
    m.available_bytes = *avail;
  } else if (free) {  // kernels before 3.14 have no MemAvailable: the usual estimate
    const uint64_t b = buffers.value_or(0), c = cached.value_or(0);
    const uint64_t max = std::numeric_limits<uint64_t>::max();
    m.available_bytes = *free > max - b ? max : *free + b;
    m.available_bytes = m.available_bytes > max - c ? max : m.available_bytes + c;
  }
  if (m.total_bytes > 0) m.available_bytes = std::min(m.available_bytes, m.total_bytes);
  return m;
}

std::optional<double> parse_cpu_max(std::string_view text) {
  const auto w = words(trim(text));
  if (w.empty() || w.size() > 2 || w[0] == "max") return std::nullopt;
  const auto quota = parse_u64(w[0]);
  const auto period = w.size() == 2 ? parse_u64(w[1]) : std::optional<uint64_t>(100000);
  if (!quota || !period || *quota == 0 || *period == 0) return std::nullopt;
  return static_cast<double>(*quota) / static_cast<double>(*period);
}

std::optional<uint64_t> parse_cgroup_bytes(std::string_view text) {
  const std::string_view t = trim(text);
  if (t == "max") return std::nullopt;
  return parse_u64(t);
}

std::optional<uint64_t> parse_memory_stat_field(std::string_view text, std::string_view key) {
  std::optional<uint64_t> out;
  for_each_line(text, [&](std::string_view line) {
    if (out) return;
    const auto w = words(trim(line));
    if (w.size() == 2 && w[0] == key) out = parse_u64(w[1]);
  });
  return out;
}

std::string parse_nvidia_model(std::string_view information) {
  std::string out;
  for_each_line(information, [&](std::string_view line) {
    if (!out.empty()) return;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || trim(line.substr(0, colon)) != "Model") return;
    out = std::string(trim(line.substr(colon + 1)));
  });
  if (out.size() > 128) out.resize(128);
  return out;
}

// ---- Probes ----------------------------------------------------------------------------------

uint32_t usable_cores() {
  uint64_t n = 0;
#ifdef __linux__
  for (int cpus = 1024; cpus <= (1 << 16) && n == 0; cpus *= 4) {
    cpu_set_t* set = CPU_ALLOC(cpus);
    if (!set) break;
    const size_t size = CPU_ALLOC_SIZE(cpus);
    CPU_ZERO_S(size, set);
    if (sched_getaffinity(0, size, set) == 0) n = static_cast<uint64_t>(CPU_COUNT_S(size, set));
    CPU_FREE(set);
  }
#endif
  if (n == 0) n = std::thread::hardware_concurrency();
  if (n == 0) n = 1;
  if (const auto quota = cgroup_cpu_quota(); quota && *quota < static_cast<double>(n))
    n = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(*quota - 1e-9)));  // 1.5 CPUs: 2 threads
  return static_cast<uint32_t>(std::min<uint64_t>(n, std::numeric_limits<uint32_t>::max()));
}

uint64_t total_ram_bytes() {
  const auto text = read_text("/proc/meminfo");
  const uint64_t host = text ? parse_meminfo(*text).total_bytes : 0;
  return lower(host, cgroup_memory().limit);
}

uint64_t available_ram_bytes() {
  const auto text = read_text("/proc/meminfo");
  const uint64_t host = text ? parse_meminfo(*text).available_bytes : 0;
  return lower(host, cgroup_memory().available);
}

std::string detect_accelerator() {
  std::error_code ec;
  const fs::path gpus = "/proc/driver/nvidia/gpus";
  if (fs::is_directory(gpus, ec)) {
    std::string model;
    int count = 0;
    for (fs::directory_iterator it(gpus, ec), end; !ec && it != end; it.increment(ec)) {
      ++count;
      if (model.empty())
        if (const auto info = read_text((it->path() / "information").string(), 64 << 10))
          model = parse_nvidia_model(*info);
    }
    if (count > 0) {
      if (model.empty()) model = "nvidia-gpu";
      return count > 1 ? model + " x" + std::to_string(count) : model;
    }
  }
  if (exists("/dev/kfd")) return "amd-gpu";
  return {};
}

double measure_matmul_gflops(ThreadPool& pool, std::chrono::milliseconds budget) {
  budget = std::clamp(budget, std::chrono::milliseconds(1), std::chrono::milliseconds(5000));
  const auto deadline = Clock::now() + budget;

  // Q4_0 2048 x 2048 (2.4 MB: the weights of one projection of a 1-3B model stream from L2/L3
  // the way a layer's do) times 32 activation rows.
  constexpr int64_t kRows = 2048, kCols = 2048, kTokens = 32;
  constexpr DType kType = DType::Q4_0;
  const size_t row_bytes = static_cast<size_t>(*dtype_row_bytes(kType, kCols));
  const size_t block_bytes = static_cast<size_t>(dtype_traits(kType).block_bytes);
  std::vector<uint8_t> w(row_bytes * kRows);
  uint64_t s = 0x9e3779b97f4a7c15ull;
  const auto next = [&s] {  // xorshift64: fast, and the values do not matter for the timing
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  };
  for (size_t i = 0; i + 8 <= w.size(); i += 8) {
    const uint64_t r = next();
    std::copy_n(reinterpret_cast<const uint8_t*>(&r), 8, w.data() + i);
  }
  for (size_t off = 0; off + block_bytes <= w.size(); off += block_bytes) {  // finite scales
    const uint16_t d = kernels::fp32_to_fp16(0.002f + static_cast<float>(next() & 1023) * 1e-5f);
    w[off] = static_cast<uint8_t>(d & 0xff);
    w[off + 1] = static_cast<uint8_t>(d >> 8);
  }
  std::vector<float> x(static_cast<size_t>(kTokens * kCols)), y(static_cast<size_t>(kTokens * kRows));
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(next() & 0xffff) - 0x8000) / 32768.0f;
  const kernels::MatView view{kType, kCols, kRows, w.data(), row_bytes};

  const auto call = [&] {
    const auto t0 = Clock::now();
    kernels::matmul(view, x.data(), kCols, kTokens, y.data(), kRows, pool);
    return Clock::now() - t0;
  };
  const double flops = 2.0 * kRows * kCols * kTokens;
  const auto rate = [&](Clock::duration d) {
    const double sec = std::chrono::duration<double>(d).count();
    return sec > 0 ? flops / sec / 1e9 : 0.0;
  };

  // Warm-up (first-touch of the scratch buffers, workers waking): its time sizes the run.
  const auto warm = call();
  std::vector<double> rates;
  if (Clock::now() + warm > deadline) {
    rates.push_back(rate(warm));  // a slow machine: one call is all the budget allows
  } else {
    auto last = warm;
    while (rates.size() < 1000 && (rates.empty() || Clock::now() + last <= deadline)) {
      last = call();
      rates.push_back(rate(last));
    }
  }
  std::erase_if(rates, [](double r) { return !(r > 0) || !std::isfinite(r); });
  if (rates.empty()) return 0;
  std::sort(rates.begin(), rates.end());
  const size_t m = rates.size() / 2;
  return rates.size() % 2 ? rates[m] : (rates[m - 1] + rates[m]) / 2;
}

double measure_matmul_gflops(int threads, std::chrono::milliseconds budget) {
  ThreadPool pool(threads > 0 ? threads : static_cast<int>(usable_cores()));
  return measure_matmul_gflops(pool, budget);
}

HardwareInfo probe_hardware(int threads, bool measure) {
  HardwareInfo h;
  h.cores = usable_cores();
  h.ram_bytes = total_ram_bytes();
  h.free_ram_bytes = available_ram_bytes();
  h.accelerator = detect_accelerator();
  h.cpu_model = cpu_model_name();
  h.isa = kernels::isa_name(kernels::active_isa());
  if (measure) h.matmul_gflops = measure_matmul_gflops(threads > 0 ? threads : static_cast<int>(h.cores));
  return h;
}

nlohmann::json to_json(const HardwareInfo& h) {
  return nlohmann::json{{"cores", h.cores},
                        {"ram_bytes", h.ram_bytes},
                        {"free_ram_bytes", h.free_ram_bytes},
                        {"matmul_gflops", h.matmul_gflops},
                        {"accelerator", h.accelerator},
                        {"cpu_model", h.cpu_model},
                        {"isa", h.isa}};
}

}  // namespace llmesh
