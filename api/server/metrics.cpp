#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace llmesh::api {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  std::lock_guard<std::mutex> l(mu_);
  counts_[i]++;
  sum_ += v;
  count_++;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> l(mu_);
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); i++) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cum);
  }
  cum += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cum, name, sum_,
                     name, count_);
}

Metrics::Metrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      tpot_({0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56}),
      duration_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
      start_(std::chrono::steady_clock::now()) {}

void Metrics::request_done(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> l(mu_);
  requests_[{endpoint, status}]++;
}

void Metrics::tokens(uint64_t prompt, uint64_t cached, uint64_t completion) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> l(mu_);
  prompt_tokens_ += prompt;
  cached_tokens_ += cached;
  completion_tokens_ += completion;
  if (completion) recent_.emplace_back(now, completion);
  while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10)) recent_.pop_front();
}

double Metrics::recent_tokens_per_second() const {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> l(mu_);
  uint64_t n = 0;
  for (auto& [t, c] : recent_)
    if (now - t <= std::chrono::seconds(10)) n += c;
  double window = std::min(10.0, std::chrono::duration<double>(now - start_).count());
  return window > 0 ? n / window : 0;
}

std::string Metrics::render(const GaugeSnapshot& g) const {
  std::string out;
  {
    std::lock_guard<std::mutex> l(mu_);
    out += "# HELP llmesh_requests_total HTTP API requests answered, by endpoint and status.\n";
    out += "# TYPE llmesh_requests_total counter\n";
    for (auto& [k, v] : requests_)
      out += fmt::format("llmesh_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, v);
    out += fmt::format(
        "# HELP llmesh_prompt_tokens_total Prompt tokens received.\n# TYPE llmesh_prompt_tokens_total counter\n"
        "llmesh_prompt_tokens_total {}\n"
        "# HELP llmesh_prompt_tokens_cached_total Prompt tokens reused from a slot's KV cache.\n"
        "# TYPE llmesh_prompt_tokens_cached_total counter\nllmesh_prompt_tokens_cached_total {}\n"
        "# HELP llmesh_generated_tokens_total Tokens generated.\n# TYPE llmesh_generated_tokens_total counter\n"
        "llmesh_generated_tokens_total {}\n",
        prompt_tokens_, cached_tokens_, completion_tokens_);
  }
  out += fmt::format(
      "# HELP llmesh_client_disconnects_total Requests cancelled because the client went away.\n"
      "# TYPE llmesh_client_disconnects_total counter\nllmesh_client_disconnects_total {}\n",
      disconnects_.load());
  out += fmt::format(
      "# HELP llmesh_tokens_per_second Generated tokens per second over the last 10 s.\n"
      "# TYPE llmesh_tokens_per_second gauge\nllmesh_tokens_per_second {:.3f}\n"
      "# HELP llmesh_requests_active Requests holding a slot.\n# TYPE llmesh_requests_active gauge\n"
      "llmesh_requests_active {}\n"
      "# HELP llmesh_queue_depth Requests waiting for a slot.\n# TYPE llmesh_queue_depth gauge\n"
      "llmesh_queue_depth {}\n"
      "# HELP llmesh_slots Parallel slots.\n# TYPE llmesh_slots gauge\nllmesh_slots {}\n"
      "# HELP llmesh_forward_steps_total Batched forward passes run.\n# TYPE llmesh_forward_steps_total counter\n"
      "llmesh_forward_steps_total {}\n"
      "# HELP llmesh_prefill_tokens_total Prompt tokens computed.\n# TYPE llmesh_prefill_tokens_total counter\n"
      "llmesh_prefill_tokens_total {}\n",
      recent_tokens_per_second(), g.active, g.queued, g.parallel, g.steps, g.prefill_tokens);
  if (!g.speculative.empty()) {
    std::string label = g.speculative;
    for (char& c : label)
      if (c == '"' || c == '\\' || c == '\n') c = '_';
    out += fmt::format(
        "# HELP llmesh_spec_info Speculative decoding's proposer.\n# TYPE llmesh_spec_info gauge\n"
        "llmesh_spec_info{{proposer=\"{}\"}} 1\n"
        "# HELP llmesh_spec_windows_total Verifications: drafted windows the model scored.\n"
        "# TYPE llmesh_spec_windows_total counter\nllmesh_spec_windows_total {}\n"
        "# HELP llmesh_spec_drafted_tokens_total Tokens the proposer drafted.\n"
        "# TYPE llmesh_spec_drafted_tokens_total counter\nllmesh_spec_drafted_tokens_total {}\n"
        "# HELP llmesh_spec_accepted_tokens_total Drafted tokens the model kept.\n"
        "# TYPE llmesh_spec_accepted_tokens_total counter\nllmesh_spec_accepted_tokens_total {}\n"
        "# HELP llmesh_spec_tokens_total Tokens the verifications produced (kept drafts plus the model's own).\n"
        "# TYPE llmesh_spec_tokens_total counter\nllmesh_spec_tokens_total {}\n"
        "# HELP llmesh_spec_failures_total Draft calls that failed (those steps decoded one token).\n"
        "# TYPE llmesh_spec_failures_total counter\nllmesh_spec_failures_total {}\n"
        "# HELP llmesh_spec_acceptance_ratio Drafted tokens kept, since start.\n"
        "# TYPE llmesh_spec_acceptance_ratio gauge\nllmesh_spec_acceptance_ratio {:.4f}\n"
        "# HELP llmesh_spec_tokens_per_verification Tokens per verification, since start.\n"
        "# TYPE llmesh_spec_tokens_per_verification gauge\nllmesh_spec_tokens_per_verification {:.4f}\n"
        "# HELP llmesh_spec_window_mean Recent mean window length drafted.\n"
        "# TYPE llmesh_spec_window_mean gauge\nllmesh_spec_window_mean {:.3f}\n",
        label, g.spec_windows, g.spec_drafted, g.spec_accepted, g.spec_tokens, g.spec_failures,
        g.spec_drafted ? double(g.spec_accepted) / g.spec_drafted : 0.0,
        g.spec_windows ? double(g.spec_tokens) / g.spec_windows : 0.0, g.spec_window_mean);
  }
  ttft_.write(out, "llmesh_time_to_first_token_seconds", "Time from request to first generated token.");
  tpot_.write(out, "llmesh_time_per_output_token_seconds", "Time between consecutive generated tokens.");
  duration_.write(out, "llmesh_request_duration_seconds", "Time from request to last token.");
  return out;
}

}  // namespace llmesh::api
