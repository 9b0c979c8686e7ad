#include "hardware/hardware_probe.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "kernels/thread_pool.h"

using namespace llmesh;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kKiB = 1024;

TEST(Meminfo, ParsesKernelText) {
  const auto m = parse_meminfo(
      "MemTotal:       24684084 kB\n"
      "MemFree:        23980128 kB\n"
      "MemAvailable:   24236584 kB\n"
      "Buffers:            4860 kB\n"
      "Cached:           342128 kB\n"
      "HugePages_Total:       0\n"
      "Hugepagesize:       2048 kB\n");
  EXPECT_EQ(m.total_bytes, 24684084 * kKiB);
  EXPECT_EQ(m.available_bytes, 24236584 * kKiB);
}

TEST(Meminfo, OldKernelWithoutMemAvailableEstimates) {
  const auto m = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n");
  EXPECT_EQ(m.total_bytes, 1000 * kKiB);
  EXPECT_EQ(m.available_bytes, 420 * kKiB);
}

TEST(Meminfo, MalformedTextGivesZeroNeverThrows) {
  for (const char* text : {"", "\n\n\n", "garbage", ":::::", "MemTotal:", "MemTotal: kB",
                           "MemTotal: -5 kB\nMemAvailable: 12abc kB",
                           "MemTotal: 99999999999999999999999 kB",   // overflows uint64
                           "MemTotal: 18446744073709551615 kB",      // overflows once scaled
                           "MemTotal: 100 MB\nMemAvailable: 5 GB",  // units the kernel never writes
                           "MemTotal: 1 2 3 kB", "\0\0\0"}) {
    MemInfo m;
    EXPECT_NO_THROW(m = parse_meminfo(text)) << text;
    EXPECT_EQ(m.total_bytes, 0u) << text;
    EXPECT_EQ(m.available_bytes, 0u) << text;
  }
}

TEST(Meminfo, ToleratesOddSpacingCrlfAndMissingNewline) {
  const auto m = parse_meminfo("junk line\r\nMemTotal:\t2048 kB\r\n  MemAvailable :  1024 kB");
  EXPECT_EQ(m.total_bytes, 2048 * kKiB);
  EXPECT_EQ(m.available_bytes, 1024 * kKiB);
}

TEST(Meminfo, AvailableNeverExceedsTotal) {
  const auto m = parse_meminfo("MemTotal: 100 kB\nMemAvailable: 200 kB\n");
  EXPECT_EQ(m.available_bytes, 100 * kKiB);
  // without a total, what is there is kept
  EXPECT_EQ(parse_meminfo("MemAvailable: 200 kB\n").available_bytes, 200 * kKiB);
  // a unitless value is bytes
  EXPECT_EQ(parse_meminfo("MemTotal: 4096\n").total_bytes, 4096u);
}

TEST(CpuMax, Parses) {
  EXPECT_DOUBLE_EQ(*parse_cpu_max("200000 100000\n"), 2.0);
  EXPECT_DOUBLE_EQ(*parse_cpu_max("150000 100000"), 1.5);
  EXPECT_DOUBLE_EQ(*parse_cpu_max("50000"), 0.5);  // period defaults to 100000
  EXPECT_FALSE(parse_cpu_max("max 100000\n"));
  EXPECT_FALSE(parse_cpu_max("max"));
  for (const char* bad : {"", " ", "0 100000", "100000 0", "-1 100000", "abc 100000", "1 2 3",
                          "100000 x", "99999999999999999999999 100000"})
    EXPECT_FALSE(parse_cpu_max(bad)) << bad;
}

TEST(CgroupFiles, BytesAndStat) {
  EXPECT_EQ(*parse_cgroup_bytes("1073741824\n"), 1073741824u);
  EXPECT_FALSE(parse_cgroup_bytes("max\n"));
  EXPECT_FALSE(parse_cgroup_bytes(""));
  EXPECT_FALSE(parse_cgroup_bytes("12 34"));
  const char* stat = "anon 100\nfile 900\nactive_file 300\ninactive_file 600\ntotal_inactive_file 700\n";
  EXPECT_EQ(*parse_memory_stat_field(stat, "inactive_file"), 600u);
  EXPECT_EQ(*parse_memory_stat_field(stat, "total_inactive_file"), 700u);
  EXPECT_FALSE(parse_memory_stat_field(stat, "shmem"));
  EXPECT_FALSE(parse_memory_stat_field("inactive_file x\n", "inactive_file"));
}

TEST(Nvidia, ModelLine) {
  EXPECT_EQ(parse_nvidia_model("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   123\nGPU UUID: GPU-x\n"),
            "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(parse_nvidia_model("IRQ: 1\n"), "");
  EXPECT_EQ(parse_nvidia_model(""), "");
}

TEST(Probe, CoresArePlausible) {
  const uint32_t c = usable_cores();
  EXPECT_GE(c, 1u);
  EXPECT_LE(c, 4096u);
}

#ifdef __linux__
TEST(Probe, RamIsPlausible) {
  const uint64_t total = total_ram_bytes(), avail = available_ram_bytes();
  EXPECT_GT(total, 16ull << 20);  // more than 16 MiB
  EXPECT_GT(avail, 0u);
  EXPECT_GT(total, avail);
}
#endif

TEST(Probe, MatmulRateIsPositiveAndBudgetIsKept) {
  for (const auto budget : {1ms, 50ms, 150ms}) {
    const auto t0 = std::chrono::steady_clock::now();
    const double g = measure_matmul_gflops(2, budget);
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_GT(g, 0.0);
    EXPECT_TRUE(std::isfinite(g));
    // generous: at least one warm-up and one timed call always run, and the machine may be busy
    EXPECT_LT(took, 5 * std::max<std::chrono::nanoseconds>(budget, 150ms))
        << "budget " << budget.count() << " ms";
  }
}

TEST(Probe, MatmulOnAnExistingPool) {
  ThreadPool pool(1);
  const double g = measure_matmul_gflops(pool, 20ms);
  EXPECT_GT(g, 0.0);
  EXPECT_TRUE(std::isfinite(g));
}

TEST(Probe, ProbeHardwareAndJson) {
  const auto t0 = std::chrono::steady_clock::now();
  const HardwareInfo h = probe_hardware(0);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(h.cores, 1u);
  EXPECT_GT(h.matmul_gflops, 0.0);
  EXPECT_FALSE(h.isa.empty());
  const auto j = to_json(h);
  EXPECT_EQ(j.at("cores").get<uint32_t>(), h.cores);
  EXPECT_EQ(j.at("ram_bytes").get<uint64_t>(), h.ram_bytes);
  EXPECT_EQ(j.at("free_ram_bytes").get<uint64_t>(), h.free_ram_bytes);
  EXPECT_DOUBLE_EQ(j.at("matmul_gflops").get<double>(), h.matmul_gflops);
  EXPECT_EQ(j.at("accelerator").get<std::string>(), h.accelerator);
  EXPECT_EQ(j.at("cpu_model").get<std::string>(), h.cpu_model);
  EXPECT_EQ(j.at("isa").get<std::string>(), h.isa);
  // What this machine looks like, for the log (no assertion on the figures).
  std::printf("probe_hardware (%.0f ms): %s\n", ms, j.dump().c_str());

  const HardwareInfo quick = probe_hardware(1, /*measure=*/false);
  EXPECT_EQ(quick.matmul_gflops, 0.0);
  EXPECT_EQ(quick.cores, h.cores);
}

}  // namespace
