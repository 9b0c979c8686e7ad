// Serving metrics in Prometheus text format (GET /metrics): requests by endpoint and status,
// tokens, throughput, queue depth, and latency histograms (time to first token, time per
// output token, request duration).
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace llmesh::api {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Appends the _bucket/_sum/_count lines for `name`.
  void write(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct GaugeSnapshot {
  int active = 0, queued = 0, parallel = 0;
  uint64_t steps = 0, prefill_tokens = 0;
  // Speculative decoding (rendered when `speculative` names a proposer)
  std::string speculative;
  uint64_t spec_windows = 0, spec_drafted = 0, spec_accepted = 0, spec_tokens = 0, spec_failures = 0;
  double spec_window_mean = 0;
};

class Metrics {
 public:
  Metrics();
  void request_done(const std::string& endpoint, int status);
  void tokens(uint64_t prompt, uint64_t cached, uint64_t completion);
  void first_token(double seconds) { ttft_.observe(seconds); }
  void token_interval(double seconds) { tpot_.observe(seconds); }
  void request_duration(double seconds) { duration_.observe(seconds); }
  void disconnect() { disconnects_++; }
  // Generated tokens per second over the last ~10 s (all requests together).
  double recent_tokens_per_second() const;

  std::string render(const GaugeSnapshot& g) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, cached_tokens_ = 0, completion_tokens_ = 0;
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> recent_;  // (time, tokens)
  std::atomic<uint64_t> disconnects_{0};
  Histogram ttft_, tpot_, duration_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace llmesh::api
