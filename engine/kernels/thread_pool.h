// A persistent pool of worker threads for the forward pass. `run` hands one function to every
// thread (the caller is thread 0) and returns when all have finished. Workers spin briefly
// between jobs (a decode step issues hundreds of small jobs) and then sleep on a futex.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace llmesh {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads <= 0: one per hardware thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Calls fn(ith, nth) on every thread, ith in [0, nth); blocks until all return.
  // Not reentrant: fn must not call run() on the same pool.
  void run(const std::function<void(int ith, int nth)>& fn);

  // Like run(), but for jobs whose threads share the work through their own atomic counter:
  // fn runs on the caller and on every worker that picks the job up before the caller's own
  // call returns. A worker that was descheduled (a busy machine) is not waited for, so one
  // slow thread never stalls the step. fn must not assume all nth threads take part.
  void run_dynamic(const std::function<void(int ith, int nth)>& fn);

  // Splits [0, n) in chunks of `grain` handed out dynamically; fn(begin, end, ith).
  void parallel_for(int64_t n, int64_t grain,
                    const std::function<void(int64_t begin, int64_t end, int ith)>& fn);

 private:
  void worker(int ith);

  int n_threads_;
  std::vector<std::thread> threads_;
  bool join_dynamic(uint64_t g);
  uint64_t publish(bool dynamic);

  const std::function<void(int, int)>* job_ = nullptr;
  // Job sequence number << 1 | 1 when the job is dynamic. Workers act on the value they saw.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  // Dynamic jobs: [generation:32 | open:1 | joined:31]; done counts joined workers finished.
  std::atomic<uint64_t> join_state_{0};
  std::atomic<uint32_t> done_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace llmesh
