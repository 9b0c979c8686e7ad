#include "kernels/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LLMESH_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define LLMESH_PAUSE() asm volatile("yield")
#else
#define LLMESH_PAUSE() ((void)0)
#endif

namespace llmesh {
namespace {
constexpr int kSpinIterations = 1 << 17;  // ~ a few hundred microseconds before sleeping
constexpr uint64_t kOpen = 1ull << 31;
constexpr uint64_t kDynamic = 1;

// Busy-wait step: pause first; after a while yield the core, in case the thread we wait for
// is waiting for it (more threads than free cores).
inline void backoff(int& spins) {
  if (++spins < 2048) LLMESH_PAUSE();
  else std::this_thread::yield();
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  publish(false);
  for (auto& t : threads_) t.join();
}

// Starts the next job: bumps the sequence number and wakes sleeping workers.
uint64_t ThreadPool::publish(bool dynamic) {
  uint64_t g = ((generation_.load(std::memory_order_relaxed) >> 1) + 1) << 1 | (dynamic ? kDynamic : 0);
  if (dynamic) join_state_.store(((g & 0xffffffffu) << 32) | kOpen, std::memory_order_release);
  generation_.store(g, std::memory_order_release);
  generation_.notify_all();
  return g;
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  publish(false);
  fn(0, n_threads_);
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0;) backoff(spins);
  job_ = nullptr;
}

void ThreadPool::run_dynamic(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  done_.store(0, std::memory_order_relaxed);
  publish(true);
  fn(0, n_threads_);
  // Close the job: workers that have not joined by now skip it.
  const uint64_t s = join_state_.fetch_and(~kOpen, std::memory_order_acq_rel);
  const uint32_t joined = static_cast<uint32_t>(s & (kOpen - 1));
  for (int spins = 0; done_.load(std::memory_order_acquire) != joined;) backoff(spins);
  job_ = nullptr;
}

// A worker joins dynamic job `g` only while it is open and still the current one.
bool ThreadPool::join_dynamic(uint64_t g) {
  uint64_t s = join_state_.load(std::memory_order_acquire);
  for (;;) {
    if ((s >> 32) != (g & 0xffffffffu) || !(s & kOpen)) return false;
    if (join_state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) return true;
  }
}

void ThreadPool::worker(int ith) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spins = 0; g == seen && spins < kSpinIterations;) {
      backoff(spins);
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    if (g & kDynamic) {
      // The caller may have finished without us: join only the job we saw, if still open.
      if (!join_dynamic(g)) continue;
      (*job_)(ith, n_threads_);
      done_.fetch_add(1, std::memory_order_acq_rel);
    } else {
      // Static jobs wait for every worker, so the job we saw is still the current one.
      (*job_)(ith, n_threads_);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (n_threads_ == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  run_dynamic([&](int ith, int) {
    for (;;) {
      int64_t b = next.fetch_add(grain, std::memory_order_relaxed);
      if (b >= n) break;
      fn(b, std::min(n, b + grain), ith);
    }
  });
}

}  // namespace llmesh
