#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/thread_pool.h"

namespace llmesh {
namespace {

TEST(ThreadPool, RunCallsEveryThreadOnce) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.run([&](int ith, int nth) {
        EXPECT_EQ(nth, n);
        hits[ith].fetch_add(1);
      });
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1);
    }
  }
}

TEST(ThreadPool, ParallelForCoversEachIndexOnce) {
  ThreadPool pool(3);
  for (int rep = 0; rep < 500; ++rep) {
    const int64_t n = 1 + rep * 7 % 1000;
    std::vector<std::atomic<int>> seen(n);
    pool.parallel_for(n, 1 + rep % 13, [&](int64_t b, int64_t e, int ith) {
      ASSERT_GE(ith, 0);
      ASSERT_LT(ith, 3);
      for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

// Dynamic jobs interleaved with static ones, while other threads keep the cores busy so that
// workers are descheduled and skip jobs: every job still completes exactly, no thread index
// runs twice at once.
TEST(ThreadPool, MixedJobsUnderContention) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> hogs;
  for (int i = 0; i < 2; ++i)
    hogs.emplace_back([&] {
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  ThreadPool pool(2);
  for (int rep = 0; rep < 3000; ++rep) {
    std::atomic<int64_t> sum{0};
    std::vector<std::atomic<int>> busy(2);
    pool.parallel_for(64, 4, [&](int64_t b, int64_t e, int ith) {
      ASSERT_EQ(busy[ith].fetch_add(1), 0) << "thread index used twice at once";
      for (int64_t i = b; i < e; ++i) sum += i;
      busy[ith].fetch_sub(1);
    });
    ASSERT_EQ(sum.load(), 64 * 63 / 2);
    if (rep % 3 == 0) {
      std::atomic<int> calls{0};
      pool.run([&](int, int) { calls++; });
      ASSERT_EQ(calls.load(), 2);
    }
  }
  stop = true;
  for (auto& t : hogs) t.join();
}

}  // namespace
}  // namespace llmesh
