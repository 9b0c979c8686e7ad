// Test doubles for the scheduler: a scripted BatchModel and a recording sink.
#pragma once
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/scheduler.h"

namespace llmesh::test {

// Keeps its own per-slot "KV" (the tokens at each position) and checks every batch the way
// Forward does (slot range, no gaps, consecutive positions, room). The next token depends on
// the slot's whole history, so a wrong truncate or a misplaced token changes the output.
// Generated tokens are >= kGenBase, so tests can tell decode tokens from prompt tokens
// (prompts use ids below kGenBase).
class FakeModel : public BatchModel {
 public:
  static constexpr int kGenBase = 1000;

  FakeModel(int n_vocab = 2000, int n_ctx = 256, int n_slots = 4)
      : n_vocab_(n_vocab), n_ctx_(n_ctx), n_slots_(n_slots), kv_(n_slots) {}

  int n_vocab() const override { return n_vocab_; }
  int n_ctx() const override { return n_ctx_; }
  int n_slots() const override { return n_slots_; }

  std::span<const float> run(const Batch& b) override {
    std::unique_lock lk(mu_);
    ++started_;
    cv_.notify_all();
    cv_.wait(lk, [&] { return gate_open_ || permits_ > 0; });
    if (!gate_open_) --permits_;
    batches_.push_back(b);
    if (fail_if && fail_if(b)) {
      ++failed_;
      throw std::runtime_error("scripted failure");
    }
    // Validate first, then apply (like Forward: a malformed batch changes nothing).
    std::vector<int> next(n_slots_, -1);
    for (int t = 0; t < b.n_tokens(); ++t) {
      int s = b.seq[t], p = b.pos[t];
      if (s < 0 || s >= n_slots_) throw std::logic_error("bad slot");
      if (p < 0 || p >= n_ctx_) throw std::logic_error("position beyond context");
      if (next[s] < 0 ? p > static_cast<int>(kv_[s].size()) : p != next[s]) throw std::logic_error("position gap");
      next[s] = p + 1;
    }
    logits_.clear();
    for (int t = 0; t < b.n_tokens(); ++t) {
      auto& h = kv_[b.seq[t]];
      h.resize(b.pos[t]);
      h.push_back(b.tokens[t]);
      if (!b.output[t]) continue;
      size_t row = logits_.size();
      logits_.resize(row + n_vocab_);
      float* l = logits_.data() + row;
      // A smooth background (for logprob tests) plus a clear winner from the history.
      for (int v = 0; v < n_vocab_; ++v) l[v] = static_cast<float>((v * 7 + h.size()) % 13) * 0.1f;
      l[next_token(h)] = 10.0f;
    }
    ++steps_;
    cv_.notify_all();
    return logits_;
  }

  void truncate(int slot, int n) override {
    std::lock_guard lk(mu_);
    if (n > static_cast<int>(kv_.at(slot).size())) throw std::logic_error("truncate beyond length");
    kv_[slot].resize(n);
    truncates_.push_back({slot, n});
  }

  // The greedy continuation of a history (what the scheduler should produce).
  int next_token(const std::vector<int32_t>& h) const {
    if (next_fn) return next_fn(h);
    uint64_t x = 1469598103934665603ull;
    for (int32_t t : h) x = (x ^ static_cast<uint64_t>(t)) * 1099511628211ull;
    return kGenBase + static_cast<int>(x % static_cast<uint64_t>(n_vocab_ - kGenBase));
  }
  // Greedy generation without a scheduler: the reference output.
  std::vector<int32_t> reference(std::vector<int32_t> h, int n) const {
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
      out.push_back(next_token(h));
      h.push_back(out.back());
    }
    return out;
  }

  // Gate: when closed, each run() waits for a permit.
  void close_gate() { std::lock_guard lk(mu_); gate_open_ = false; }
  void open_gate() { std::lock_guard lk(mu_); gate_open_ = true; cv_.notify_all(); }
  void permit(int n = 1) { std::lock_guard lk(mu_); permits_ += n; cv_.notify_all(); }
  // Waits until `n` runs have started (entered run()).
  void wait_started(int n) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return started_ >= n; });
  }

  std::vector<Batch> batches() const { std::lock_guard lk(mu_); return batches_; }
  std::vector<std::pair<int, int>> truncates() const { std::lock_guard lk(mu_); return truncates_; }
  std::vector<int32_t> kv(int slot) const { std::lock_guard lk(mu_); return kv_[slot]; }
  int steps() const { std::lock_guard lk(mu_); return steps_; }

  std::function<bool(const Batch&)> fail_if;  // set before submitting
  std::function<int(const std::vector<int32_t>&)> next_fn;

 private:
  int n_vocab_, n_ctx_, n_slots_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool gate_open_ = true;
  int permits_ = 0, started_ = 0, steps_ = 0, failed_ = 0;
  std::vector<std::vector<int32_t>> kv_;
  std::vector<float> logits_;
  std::vector<Batch> batches_;
  std::vector<std::pair<int, int>> truncates_;
};

// Records tokens and the result; checks on_done comes once and last.
class RecordingSink : public GenerationSink {
 public:
  explicit RecordingSink(int stop_after = -1) : stop_after_(stop_after) {}

  bool on_token(const TokenEvent& ev) override {
    std::lock_guard lk(mu_);
    if (done_count_ > 0) token_after_done_ = true;
    tokens_.push_back(ev.token);
    events_.push_back(ev);
    return stop_after_ < 0 || static_cast<int>(tokens_.size()) < stop_after_;
  }
  void on_done(const GenerationResult& r) override {
    if (before_done) before_done();
    std::lock_guard lk(mu_);
    ++done_count_;
    result_ = r;
    cv_.notify_all();
  }

  // Waits for on_done (fails the test after a generous timeout instead of hanging).
  bool wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return done_count_ > 0; });
  }
  GenerationResult result() const { std::lock_guard lk(mu_); return result_; }
  std::vector<int32_t> tokens() const { std::lock_guard lk(mu_); return tokens_; }
  std::vector<TokenEvent> events() const { std::lock_guard lk(mu_); return events_; }
  int done_count() const { std::lock_guard lk(mu_); return done_count_; }
  bool token_after_done() const { std::lock_guard lk(mu_); return token_after_done_; }

  std::function<void()> before_done;  // runs on the scheduler thread inside on_done

 private:
  int stop_after_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int32_t> tokens_;
  std::vector<TokenEvent> events_;
  GenerationResult result_;
  int done_count_ = 0;
  bool token_after_done_ = false;
};

}  // namespace llmesh::test
