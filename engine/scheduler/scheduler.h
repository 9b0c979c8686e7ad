// Continuous batching: many generation requests share one model. Every step runs ONE forward
// pass holding the next token of every decoding request plus a bounded chunk of prompt tokens
// of requests still in prefill, so new requests never stall running streams.
//
// Slots are KV-cache sequences. A finished request leaves its tokens in its slot; a new request
// goes to the free slot sharing the longest prefix with its prompt and skips recomputing it
// (agents resend the whole conversation every turn). A full scheduler queues up to max_queue
// requests, then refuses (QueueFull). Cancelling frees the slot and clears its KV at once.
//
// Speculative decoding (SchedulerOptions::draft, docs/speculative.md): a decoding request's
// step carries its next token plus a window of drafted tokens, all scored in the same forward
// pass; the scheduler keeps the drafts the target agrees with, rolls the KV back over the
// rest, and emits the kept tokens plus one of the target's own. Greedy output is the same
// token for token; sampled output has the same distribution.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "model/forward.h"
#include "sampling/sampler.h"
#include "speculative/draft_source.h"
#include "speculative/window_policy.h"

namespace llmesh {

// What the scheduler drives: a batched forward pass over a KV cache with n_slots sequences.
// LocalBatchModel wraps the in-process engine; the mesh wraps a pipeline of stages; tests
// wrap scripted models.
class BatchModel {
 public:
  virtual ~BatchModel() = default;
  virtual int n_vocab() const = 0;
  virtual int n_ctx() const = 0;    // positions per slot
  virtual int n_slots() const = 0;  // sequences the cache holds
  // Logits [n_out][n_vocab] for the batch's tokens with output=1, in batch order; valid until
  // the next run(). Throws on failure (the scheduler fails the requests in the batch).
  virtual std::span<const float> run(const Batch& batch) = 0;
  // Keeps KV positions [0, n) of `slot`.
  virtual void truncate(int slot, int n) = 0;
};

class LocalBatchModel : public BatchModel {
 public:
  explicit LocalBatchModel(Forward& fwd) : fwd_(fwd) {}
  int n_vocab() const override { return fwd_.model().config().n_vocab; }
  int n_ctx() const override { return fwd_.cache().n_ctx(); }
  int n_slots() const override { return fwd_.cache().n_seq(); }
  std::span<const float> run(const Batch& batch) override { return fwd_.run(batch); }
  void truncate(int slot, int n) override { fwd_.cache().truncate(slot, n); }

 private:
  Forward& fwd_;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // non-empty
  SamplingParams sampling;
  int max_tokens = -1;  // generated tokens at most; -1: until the context is full
  std::vector<int32_t> stop_tokens;  // end generation (finish Stop) when sampled; not emitted
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the raw logits before sampling
  int top_logprobs = -1;  // -1: no logprobs; 0..20: chosen token's logprob plus that many alternatives
};

struct TokenLogprob {
  int32_t id;
  float logprob;  // log-softmax of the raw logits (before bias, penalties, temperature)
};

struct TokenEvent {
  int32_t token;
  float logprob = 0;               // of `token`; set when top_logprobs >= 0
  std::vector<TokenLogprob> top;   // top_logprobs alternatives, most likely first
  int cached_tokens = 0;           // prompt tokens this request reused from its slot (every event)
};

enum class FinishReason {
  Length,     // max_tokens reached
  Stop,       // a stop token was sampled, or the sink asked to stop (stop string)
  ContextFull,  // the slot's context filled before max_tokens
  Cancelled,  // cancel() or the sink's client went away
  Error,      // the forward pass failed (message in GenerationResult::error)
};
const char* finish_reason_name(FinishReason r);

struct GenerationResult {
  FinishReason finish = FinishReason::Stop;
  std::string error;        // for Error
  int prompt_tokens = 0;    // prompt length
  int cached_tokens = 0;    // prompt tokens reused from the slot's previous contents
  int completion_tokens = 0;  // tokens passed to on_token
  int drafted_tokens = 0;   // speculative decoding: tokens proposed for this request
  int accepted_tokens = 0;  // of which the target kept
  // queued: submit; started: given a slot; first_token: first on_token; finished: just before
  // on_done. A stage never reached (cancelled while queued, no token) keeps the default value.
  std::chrono::steady_clock::time_point queued, started, first_token, finished;
};

// Receives a request's output. Called on the scheduler thread: must be quick (no I/O).
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // A sampled token. Return false to end generation now (finish Stop): e.g. a stop string
  // matched. The token is counted as generated either way.
  virtual bool on_token(const TokenEvent& ev) = 0;
  // Exactly once, last.
  virtual void on_done(const GenerationResult& result) = 0;
};

class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SchedulerOptions {
  int n_parallel = 4;       // concurrent requests (<= BatchModel::n_slots())
  int max_queue = 64;       // waiting requests beyond the running ones; more -> QueueFull
  int step_tokens = 256;    // most prompt tokens prefilled per step (decode tokens come first)
  // The prompt budget while other requests are decoding: smaller, so a new long prompt delays
  // each running stream's next token by one short chunk, not by a whole batch.
  int busy_step_tokens = 128;
  bool prefix_reuse = true;
  // Speculative decoding: the proposer (a draft model, n-gram lookup), owned by the caller and
  // used only from the scheduler's thread. Null: off.
  DraftSource* draft = nullptr;
  WindowOptions window;  // draft_max, adaptive window
};

struct SchedulerStats {
  int active = 0;  // requests holding a slot
  int queued = 0;  // requests waiting for a slot
  int n_parallel = 0;
  uint64_t prompt_tokens = 0;     // prompt tokens received
  uint64_t cached_tokens = 0;     // of which reused from a slot's cache
  uint64_t prefill_tokens = 0;    // prompt tokens computed
  uint64_t generated_tokens = 0;
  uint64_t steps = 0;             // forward passes
  uint64_t requests_done = 0;     // on_done calls, whatever the finish reason
  uint64_t requests_cancelled = 0;  // of which Cancelled
  uint64_t requests_failed = 0;     // of which Error
  // Speculative decoding
  uint64_t spec_windows = 0;   // verifications: steps that scored a request's drafted window
  uint64_t spec_drafted = 0;   // tokens proposed
  uint64_t spec_accepted = 0;  // of which the target kept
  uint64_t spec_tokens = 0;    // tokens those verifications produced (kept drafts + the target's own)
  uint64_t spec_failures = 0;  // propose() calls that threw (those steps decoded without drafts)
  double spec_window_mean = 0; // recent mean window length chosen
  // The window policy's cost model (window_policy.h): a target step of n tokens takes
  // base + n * token seconds, a draft step draft_step seconds.
  double spec_step_base_s = 0, spec_step_token_s = 0, spec_draft_step_s = 0;
  // Realised seconds per token of decode steps that drafted / did not (0: unmeasured); when
  // drafting costs more, the scheduler decodes plainly and only probes.
  double spec_token_s = 0, plain_token_s = 0;
};

class Scheduler {
 public:
  class Request;  // opaque; held by the handle
  using Handle = std::shared_ptr<Request>;

  Scheduler(BatchModel& model, const SchedulerOptions& opt);
  // Stops the worker; every request still queued or running finishes Cancelled.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. Throws std::invalid_argument (empty prompt, prompt + max_tokens beyond
  // the context, invalid sampling, bad logit_bias ids) or QueueFull. The sink gets every token
  // and then on_done exactly once.
  Handle submit(GenerationRequest req, std::shared_ptr<GenerationSink> sink);
  // Thread-safe, idempotent: ends the request (finish Cancelled) at the next step, frees its
  // slot and clears its KV. A queued request is dropped without running.
  void cancel(const Handle& h);

  SchedulerStats stats() const;
  int n_ctx() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmesh
