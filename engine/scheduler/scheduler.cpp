#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "scheduler/logprobs.h"
#include "speculative/acceptance.h"

namespace llmesh {

using Clock = std::chrono::steady_clock;

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::ContextFull: return "context_full";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "unknown";
}

struct Scheduler::Request {
  Request(GenerationRequest r, std::shared_ptr<GenerationSink> s) : req(std::move(r)), sink(std::move(s)) {}

  enum class State { Queued, Running, Done };

  GenerationRequest req;
  std::shared_ptr<GenerationSink> sink;
  GenerationResult result;
  std::atomic<bool> cancel_requested{false};
  State state = State::Queued;  // guarded by Impl::mu

  // Worker thread only from here on.
  int slot = -1;
  size_t prompt_done = 0;   // prompt tokens already in the slot's KV
  bool decoding = false;    // prompt done; next_token is fed each step
  int32_t next_token = -1;  // sampled last step, not yet in the KV
  int chunk = 0;            // prompt tokens in this step's batch
  int out_row = -1;         // logits row of this request in this step; -1: none
  std::optional<Sampler> sampler;
  // Speculative decoding
  DraftTask task;                   // this step's window, drafted after next_token
  std::vector<int32_t> context;     // the slot's tokens plus next_token, for the proposer
  AcceptanceEstimate acceptance;
  int since_probe = 0;  // decode steps without drafting because the policy said it does not pay
};

namespace {

struct Slot {
  std::vector<int32_t> tokens;  // what the slot's KV holds, position by position
  Scheduler::Handle req;        // the request using it; null when free
  uint64_t last_used = 0;       // for least-recently-used choice among equal prefixes
};

// Counters the worker accumulates between lock acquisitions.
struct PendingStats {
  uint64_t cached = 0, prefill = 0, generated = 0, steps = 0;
  uint64_t windows = 0, drafted = 0, accepted = 0, spec_tokens = 0, spec_failures = 0;
};

// How many of a row's largest logits sampling this request can look at (0: all of them):
// greedy needs the top one, top-k sampling its k; penalties, logit bias and logprobs read the
// whole row. Exact: the sampler cuts to the top k (ties: lower id) before anything else.
int32_t logits_needed(const GenerationRequest& r) {
  const SamplingParams& s = r.sampling;
  if (r.top_logprobs >= 0 || !r.logit_bias.empty()) return 0;
  if (s.repeat_penalty != 1.0f || s.frequency_penalty != 0.0f || s.presence_penalty != 0.0f) return 0;
  if (s.temperature <= 0) return 1;
  return s.top_k > 0 ? s.top_k : 0;
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

struct Scheduler::Impl {
  Impl(BatchModel& m, const SchedulerOptions& o);

  void validate(const GenerationRequest& req, const GenerationSink* sink) const;
  void loop();
  void start(const Handle& h);
  void step();
  void allocate_prefill();
  void draft_windows();
  void handle_logits(Request& r, const float* row);
  void verify_window(Request& r, const float* rows);
  const float* with_bias(const Request& r, const float* row);
  bool emit(Request& r, int32_t tok, const float* row, bool sampler_has_it = false);
  void finish(Request& r, FinishReason why, std::string error = {});
  void flush_locked();
  void shutdown();

  BatchModel& model;
  const SchedulerOptions opt;
  const int n_ctx, n_vocab;

  mutable std::mutex mu;
  std::condition_variable cv;
  // Guarded by mu.
  std::deque<Handle> queue;
  std::vector<Handle> dropped;  // cancelled while queued; the worker reports them
  bool stopping = false;
  int active = 0;  // requests admitted to a slot and not finished
  SchedulerStats totals;

  // Worker thread only.
  std::vector<Slot> slots;
  int running = 0;
  uint64_t lru_clock = 0;
  uint64_t step_count = 0;
  PendingStats pending;
  Batch batch;                     // reused every step
  std::vector<Request*> in_batch;  // requests with tokens in `batch`, in batch order
  std::vector<Request*> prefilling;
  std::vector<float> biased;       // logits row plus logit_bias
  TokenEvent event;
  // Speculative decoding
  std::unique_ptr<WindowPolicy> window;  // set when opt.draft is
  std::vector<DraftTask*> tasks;
  double window_mean = 0;
  double draft_seconds = 0;  // this step's propose() time
  bool drafted_this_step = false;
  uint64_t emitted = 0;          // tokens handed to sinks, ever (for the realised step cost)
  int steps_since_probe = 0;     // steps decoded plainly because drafting did not pay
  int steps_since_plain = 0;     // steps that drafted since the last plain one

  std::thread worker;  // last: starts after everything above exists
};

Scheduler::Impl::Impl(BatchModel& m, const SchedulerOptions& o)
    : model(m), opt(o), n_ctx(m.n_ctx()), n_vocab(m.n_vocab()) {
  if (opt.n_parallel < 1 || opt.n_parallel > model.n_slots())
    throw std::invalid_argument(fmt::format("n_parallel must be in 1..{} (the KV cache's sequences), got {}",
                                            model.n_slots(), opt.n_parallel));
  if (opt.max_queue < 0) throw std::invalid_argument(fmt::format("max_queue must be >= 0, got {}", opt.max_queue));
  if (opt.step_tokens < 1)
    throw std::invalid_argument(fmt::format("step_tokens must be >= 1, got {}", opt.step_tokens));
  if (n_ctx < 2) throw std::invalid_argument(fmt::format("context of {} positions is too small", n_ctx));
  slots.resize(opt.n_parallel);
  totals.n_parallel = opt.n_parallel;
  if (opt.draft) {
    if (opt.window.draft_max < 1 || opt.window.draft_max > 64)
      throw std::invalid_argument(fmt::format("draft_max must be in 1..64, got {}", opt.window.draft_max));
    window = std::make_unique<WindowPolicy>(opt.window);
  }
  worker = std::thread([this] { loop(); });
}

void Scheduler::Impl::validate(const GenerationRequest& req, const GenerationSink* sink) const {
  if (!sink) throw std::invalid_argument("request has no sink");
  if (req.prompt.empty()) throw std::invalid_argument("prompt is empty");
  // Checked here, not by the forward pass: a bad id there would fail every request in the batch.
  for (int32_t id : req.prompt)
    if (id < 0 || id >= n_vocab)
      throw std::invalid_argument(fmt::format("prompt token id {} is outside the vocabulary (0..{})", id, n_vocab - 1));
  const long long n_prompt = static_cast<long long>(req.prompt.size());
  if (req.max_tokens == 0 || req.max_tokens < -1)
    throw std::invalid_argument(fmt::format("max_tokens must be >= 1 or -1, got {}", req.max_tokens));
  if (req.max_tokens > 0 && n_prompt + req.max_tokens > n_ctx)
    throw std::invalid_argument(fmt::format("prompt ({} tokens) + max_tokens ({}) exceeds the context ({} tokens)",
                                            n_prompt, req.max_tokens, n_ctx));
  if (n_prompt >= n_ctx)
    throw std::invalid_argument(fmt::format("prompt ({} tokens) leaves no room to generate in the context ({} tokens)",
                                            n_prompt, n_ctx));
  if (std::string e = req.sampling.validate(); !e.empty()) throw std::invalid_argument(e);
  for (auto [id, bias] : req.logit_bias) {
    if (id < 0 || id >= n_vocab)
      throw std::invalid_argument(fmt::format("logit_bias token id {} is outside the vocabulary (0..{})", id, n_vocab - 1));
    if (std::isnan(bias) || bias == INFINITY)
      throw std::invalid_argument(fmt::format("logit_bias for token {} must be finite or -inf", id));
  }
  if (req.top_logprobs < -1 || req.top_logprobs > 20)
    throw std::invalid_argument(fmt::format("top_logprobs must be in -1..20, got {}", req.top_logprobs));
}

void Scheduler::Impl::flush_locked() {
  totals.cached_tokens += pending.cached;
  totals.prefill_tokens += pending.prefill;
  totals.generated_tokens += pending.generated;
  totals.steps += pending.steps;
  totals.spec_windows += pending.windows;
  totals.spec_drafted += pending.drafted;
  totals.spec_accepted += pending.accepted;
  totals.spec_tokens += pending.spec_tokens;
  totals.spec_failures += pending.spec_failures;
  totals.spec_window_mean = window_mean;
  if (window) {
    totals.spec_step_base_s = window->step_base();
    totals.spec_step_token_s = window->step_per_token();
    totals.spec_draft_step_s = window->draft_step();
    totals.spec_token_s = window->realised_spec_cost();
    totals.plain_token_s = window->realised_plain_cost();
  }
  pending = {};
}

void Scheduler::Impl::loop() {
  std::vector<Handle> admitted, dropped_now;
  for (;;) {
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return stopping || running > 0 || !queue.empty() || !dropped.empty(); });
      if (stopping) break;
      dropped_now.swap(dropped);
      flush_locked();
      // FIFO admission into free slots.
      while (running < opt.n_parallel && !queue.empty()) {
        admitted.push_back(std::move(queue.front()));
        queue.pop_front();
        admitted.back()->state = Request::State::Running;
        ++running;
        ++active;
      }
    }
    for (auto& h : dropped_now) finish(*h, FinishReason::Cancelled);
    dropped_now.clear();
    for (auto& h : admitted) start(h);
    admitted.clear();
    // Cancellation takes effect at the step boundary.
    for (auto& s : slots)
      if (s.req && s.req->cancel_requested.load(std::memory_order_relaxed)) finish(*s.req, FinishReason::Cancelled);
    if (running > 0) step();
  }
  shutdown();
}

void Scheduler::Impl::start(const Handle& h) {
  Request& r = *h;
  r.result.started = Clock::now();
  const auto& prompt = r.req.prompt;

  // The free slot sharing the longest prefix with the prompt; ties (and no reuse): least
  // recently used, so recent conversations stay cached longest.
  int best = -1;
  size_t best_len = 0;
  for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
    if (slots[i].req) continue;
    size_t len = opt.prefix_reuse ? common_prefix(slots[i].tokens, prompt) : 0;
    if (best < 0 || len > best_len || (len == best_len && slots[i].last_used < slots[best].last_used)) {
      best = i;
      best_len = len;
    }
  }
  // At least the last prompt token is computed: its logits give the first generated token.
  const size_t reuse = std::min(best_len, prompt.size() - 1);

  Slot& s = slots[best];
  s.req = h;
  s.last_used = ++lru_clock;
  r.slot = best;
  try {
    model.truncate(best, static_cast<int>(reuse));
  } catch (const std::exception& e) {
    finish(r, FinishReason::Error, fmt::format("KV truncate failed: {}", e.what()));
    return;
  }
  s.tokens.resize(reuse);
  r.prompt_done = reuse;
  r.result.cached_tokens = static_cast<int>(reuse);
  pending.cached += reuse;
  r.sampler.emplace(r.req.sampling, n_vocab);
  for (int32_t t : prompt) r.sampler->accept(t);  // penalties see the prompt too
}

// Shares the step's prompt-token budget among requests in prefill in equal rounds: short
// prompts finish within a step or two while a long one takes what is left, so no prompt
// starves the others. The round start rotates so leftover single tokens are spread fairly.
void Scheduler::Impl::allocate_prefill() {
  const size_t n = prefilling.size();
  for (Request* r : prefilling) r->chunk = 0;
  if (n == 0) return;
  int budget = batch.n_tokens() > 0 ? std::min(opt.step_tokens, std::max(1, opt.busy_step_tokens)) : opt.step_tokens;
  const size_t first = step_count % n;
  while (budget > 0) {
    int unsatisfied = 0;
    for (Request* r : prefilling)
      if (r->prompt_done + r->chunk < r->req.prompt.size()) ++unsatisfied;
    if (unsatisfied == 0) break;
    const int share = std::max(1, budget / unsatisfied);
    for (size_t k = 0; k < n && budget > 0; ++k) {
      Request* r = prefilling[(first + k) % n];
      const int need = static_cast<int>(r->req.prompt.size() - r->prompt_done) - r->chunk;
      const int give = std::min({share, need, budget});
      if (give <= 0) continue;
      r->chunk += give;
      budget -= give;
    }
  }
}

void Scheduler::Impl::step() {
  const auto t_step = Clock::now();
  const uint64_t emitted_before = emitted;
  draft_seconds = 0;
  drafted_this_step = false;
  batch.clear();
  in_batch.clear();
  prefilling.clear();
  int n_out = 0;
  if (window) draft_windows();
  // Decodes first: every running stream advances each step, whatever is prefilling. A
  // speculating request's drafted window follows its next token; every position gives logits.
  for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
    Request* r = slots[i].req.get();
    if (!r) continue;
    if (!r->decoding) {
      prefilling.push_back(r);
      continue;
    }
    r->chunk = 0;
    r->out_row = n_out++;
    const int32_t pos = static_cast<int32_t>(slots[i].tokens.size());
    const int32_t top = logits_needed(r->req);
    batch.add(r->next_token, pos, i, true);
    batch.out_top.push_back(top);
    for (size_t k = 0; k < r->task.tokens.size(); ++k) {
      batch.add(r->task.tokens[k], pos + 1 + static_cast<int32_t>(k), i, true);
      batch.out_top.push_back(top);
      ++n_out;
    }
    in_batch.push_back(r);
  }
  allocate_prefill();
  int prefill_in_batch = 0;
  for (Request* r : prefilling) {
    prefill_in_batch += r->chunk;
    if (r->chunk == 0) continue;
    r->out_row = -1;
    const auto& prompt = r->req.prompt;
    for (int k = 0; k < r->chunk; ++k) {
      const size_t pos = r->prompt_done + k;
      const bool last = pos + 1 == prompt.size();  // only the prompt's last token needs logits
      if (last) {
        r->out_row = n_out++;
        batch.out_top.push_back(logits_needed(r->req));
      }
      batch.add(prompt[pos], static_cast<int32_t>(pos), r->slot, last);
    }
    in_batch.push_back(r);
  }
  ++step_count;
  if (batch.n_tokens() == 0) return;

  std::span<const float> logits;
  std::string error;
  try {
    logits = model.run(batch);
    if (logits.size() < static_cast<size_t>(n_out) * n_vocab)
      error = fmt::format("model returned {} logits, expected {} rows of {}", logits.size(), n_out, n_vocab);
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "forward pass failed";
  } catch (...) {
    error = "forward pass failed (unknown exception)";
  }
  if (!error.empty()) {
    // The KV of these slots may be half written: clear it and fail only this batch's requests.
    for (Request* r : in_batch) finish(*r, FinishReason::Error, error);
    return;
  }
  ++pending.steps;

  for (Request* r : in_batch) {
    Slot& s = slots[r->slot];
    if (r->decoding) {
      s.tokens.push_back(r->next_token);
      if (!r->task.tokens.empty()) {
        // May finish (and release) r: nothing touches r after this.
        verify_window(*r, logits.data() + static_cast<size_t>(r->out_row) * n_vocab);
        continue;
      }
    } else {
      const auto& prompt = r->req.prompt;
      s.tokens.insert(s.tokens.end(), prompt.begin() + r->prompt_done, prompt.begin() + r->prompt_done + r->chunk);
      r->prompt_done += r->chunk;
      pending.prefill += r->chunk;
    }
    // May finish (and release) r: nothing touches r after this.
    if (r->out_row >= 0) handle_logits(*r, logits.data() + static_cast<size_t>(r->out_row) * n_vocab);
  }
  // The window policy's step cost: the forward pass plus sampling and handing tokens out,
  // which speculation also spreads over several tokens; not the drafting (measured apart).
  if (window) {
    const double seconds = std::chrono::duration<double>(Clock::now() - t_step).count();
    window->observe_step(batch.n_tokens(), seconds - draft_seconds);
    if (prefill_in_batch == 0)
      window->observe_outcome(drafted_this_step, static_cast<int>(emitted - emitted_before), seconds);
  }
}

// While the window policy finds that drafting does not pay at the acceptance seen, one step in
// this many still drafts a token, so acceptance keeps being measured and speculation resumes
// when it pays.
constexpr int kProbeEvery = 8;
// See draft_windows(): the realised-cost check drafts every kOutcomeProbe-th step while drafting
// does not pay, and decodes one step in kPlainRefresh plainly while it does.
constexpr int kOutcomeProbe = 32;
constexpr int kPlainRefresh = 64;

// Picks each speculating request's window length and asks the proposer for that many tokens,
// all requests in one call (a draft model batches them).
void Scheduler::Impl::draft_windows() {
  tasks.clear();
  // The realised check on the window policy's model: when drafting steps have cost more per
  // token than plain ones, decode plainly and draft only every kOutcomeProbe-th step. While it
  // pays, one step in kPlainRefresh stays plain to keep the comparison current.
  bool allow = true;
  if (!window->speculation_pays()) {
    allow = ++steps_since_probe >= kOutcomeProbe;
    if (allow) steps_since_probe = 0;
  } else if (opt.window.adaptive && ++steps_since_plain >= kPlainRefresh) {
    allow = false;
    steps_since_plain = 0;
  }
  for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
    Request* r = slots[i].req.get();
    if (!r) continue;
    r->task.tokens.clear();
    r->task.q.clear();
    if (!allow || !r->decoding || r->cancel_requested.load(std::memory_order_relaxed)) continue;
    const Slot& s = slots[i];
    // Every drafted token needs a position (next_token sits at s.tokens.size()), and the
    // window plus the target's own token must fit max_tokens.
    int room = n_ctx - 1 - static_cast<int>(s.tokens.size());
    if (r->req.max_tokens > 0) room = std::min(room, r->req.max_tokens - r->result.completion_tokens - 1);
    int k = window->choose(r->acceptance.rate(), room);
    // Keep measuring acceptance now and then, since text changes; but not when even drafts that
    // are always right would not pay (a draft as slow as the model): a probe then only costs.
    if (k <= 0 && room > 0 && ++r->since_probe >= kProbeEvery && window->choose(1.0, room) > 0) k = 1;
    if (k <= 0) continue;
    r->since_probe = 0;
    r->context.assign(s.tokens.begin(), s.tokens.end());
    r->context.push_back(r->next_token);
    r->task.slot = i;
    r->task.context = r->context;
    r->task.max_tokens = k;
    r->task.sampling = &r->req.sampling;
    tasks.push_back(&r->task);
  }
  if (tasks.empty()) return;
  const auto t0 = Clock::now();
  int steps = 0;
  try {
    opt.draft->propose(tasks);
  } catch (...) {
    ++pending.spec_failures;
    for (DraftTask* t : tasks) t->tokens.clear(), t->q.clear();
    return;
  }
  for (DraftTask* t : tasks) {
    // The proposer is ours, but a bad id would fail the whole batch: cut the window there.
    size_t keep = 0;
    const size_t limit = std::min(t->tokens.size(), static_cast<size_t>(t->max_tokens));
    while (keep < limit && t->tokens[keep] >= 0 && t->tokens[keep] < n_vocab) ++keep;
    // A sampled draft is judged against the distribution it came from: no q, no judging.
    if (!t->q.empty()) keep = std::min(keep, t->q.size());
    t->tokens.resize(keep);
    if (!t->q.empty()) t->q.resize(keep);
    steps = std::max(steps, static_cast<int>(keep));
    window_mean = window_mean == 0 ? keep : 0.95 * window_mean + 0.05 * keep;
  }
  draft_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  drafted_this_step = steps > 0;
  window->observe_draft(std::max(1, steps), draft_seconds);
}

const float* Scheduler::Impl::with_bias(const Request& r, const float* row) {
  if (r.req.logit_bias.empty()) return row;
  biased.assign(row, row + n_vocab);  // the raw row stays intact for logprobs
  for (auto [id, bias] : r.req.logit_bias) biased[id] += bias;
  return biased.data();
}

void Scheduler::Impl::handle_logits(Request& r, const float* row) {
  if (r.cancel_requested.load(std::memory_order_relaxed)) {
    finish(r, FinishReason::Cancelled);
    return;
  }
  const int32_t tok = r.sampler->sample(with_bias(r, row));
  emit(r, tok, row);
}

// Rows [0, k] hold the target's logits after next_token and after each of the k drafts. Walks
// the window with the acceptance rule, keeps the accepted drafts in the KV, rolls back the
// rest, then emits the accepted drafts and the target's own token one by one.
void Scheduler::Impl::verify_window(Request& r, const float* rows) {
  if (r.cancel_requested.load(std::memory_order_relaxed)) {
    finish(r, FinishReason::Cancelled);
    return;
  }
  const std::vector<int32_t>& drafts = r.task.tokens;
  const int k = static_cast<int>(drafts.size());
  const bool greedy = r.req.sampling.temperature <= 0;
  struct Out {
    int32_t tok;
    const float* row;
  };
  std::vector<Out> out;
  out.reserve(k + 1);
  int accepted = 0;
  for (int i = 0; i <= k; ++i) {
    const float* row = rows + static_cast<size_t>(i) * n_vocab;
    const float* to_sample = with_bias(r, row);
    int32_t tok;
    bool kept = false;
    if (i == k) {
      tok = r.sampler->sample(to_sample);  // every draft stood: the target's next token is free
    } else if (greedy) {
      tok = r.sampler->sample(to_sample);
      kept = tok == drafts[i];
    } else {
      const std::vector<TokenProb> p = r.sampler->distribution(to_sample);
      std::span<const TokenProb> q;
      if (!r.task.q.empty()) q = r.task.q[i];
      const Verdict v = speculative_accept(p, drafts[i], q, r.sampler->rng());
      tok = v.token;
      kept = v.accepted;
    }
    out.push_back({tok, row});
    if (std::find(r.req.stop_tokens.begin(), r.req.stop_tokens.end(), tok) != r.req.stop_tokens.end()) break;
    r.sampler->accept(tok);
    if (!kept) break;
    ++accepted;
  }
  r.acceptance.update(k, accepted);
  r.result.drafted_tokens += k;
  r.result.accepted_tokens += accepted;
  ++pending.windows;
  pending.drafted += k;
  pending.accepted += accepted;
  const bool ends_in_stop = std::find(r.req.stop_tokens.begin(), r.req.stop_tokens.end(), out.back().tok) !=
                           r.req.stop_tokens.end();
  pending.spec_tokens += out.size() - (ends_in_stop ? 1 : 0);

  // The KV holds next_token and all k drafts: keep next_token and the accepted ones.
  Slot& s = slots[r.slot];
  s.tokens.insert(s.tokens.end(), drafts.begin(), drafts.begin() + accepted);
  if (accepted < k) {
    try {
      model.truncate(r.slot, static_cast<int>(s.tokens.size()));
    } catch (const std::exception& e) {
      finish(r, FinishReason::Error, fmt::format("KV rollback after speculation failed: {}", e.what()));
      return;
    }
  }
  for (const Out& o : out)
    if (!emit(r, o.tok, o.row, /*sampler_has_it=*/true)) return;  // finished: r may be released
}

// Hands a sampled token to the request: stop tokens end it unseen; otherwise the sink gets it
// and the limits are checked. Returns whether the request goes on (false: finished, and r may
// have been released).
bool Scheduler::Impl::emit(Request& r, int32_t tok, const float* row, bool sampler_has_it) {
  if (std::find(r.req.stop_tokens.begin(), r.req.stop_tokens.end(), tok) != r.req.stop_tokens.end()) {
    finish(r, FinishReason::Stop);
    return false;
  }
  if (!sampler_has_it) r.sampler->accept(tok);
  if (r.result.completion_tokens == 0) r.result.first_token = Clock::now();
  ++r.result.completion_tokens;
  ++emitted;
  ++pending.generated;

  event.token = tok;
  event.cached_tokens = r.result.cached_tokens;
  event.logprob = 0;
  event.top.clear();
  if (r.req.top_logprobs >= 0) fill_logprobs(row, n_vocab, tok, r.req.top_logprobs, event);
  bool more;
  try {
    more = r.sink->on_token(event);
  } catch (const std::exception& e) {
    finish(r, FinishReason::Error, fmt::format("sink failed: {}", e.what()));
    return false;
  } catch (...) {
    finish(r, FinishReason::Error, "sink failed");
    return false;
  }
  const int generated = r.result.completion_tokens;
  if (!more) {
    finish(r, FinishReason::Stop);
  } else if (r.req.max_tokens > 0 && generated >= r.req.max_tokens) {
    finish(r, FinishReason::Length);
  } else if (static_cast<int>(r.req.prompt.size()) + generated >= n_ctx) {
    // The sampled token would need position n_ctx: no room to feed it.
    finish(r, FinishReason::ContextFull);
  } else {
    r.decoding = true;
    r.next_token = tok;
    return true;
  }
  return false;
}

void Scheduler::Impl::finish(Request& r, FinishReason why, std::string error) {
  Handle keep;  // the slot may hold the last reference: keep r alive until on_done returns
  const bool had_slot = r.slot >= 0;
  if (had_slot) {
    Slot& s = slots[r.slot];
    if (why == FinishReason::Cancelled || why == FinishReason::Error) {
      // Its contents are partial or unwanted: don't offer them for reuse.
      try {
        model.truncate(r.slot, 0);
      } catch (...) {
      }
      s.tokens.clear();
    }
    s.last_used = ++lru_clock;
    if (opt.draft) opt.draft->release(r.slot);
    keep = std::move(s.req);
    r.slot = -1;
    --running;
  }
  r.result.finish = why;
  r.result.error = std::move(error);
  r.result.finished = Clock::now();
  r.sampler.reset();
  {
    std::lock_guard lk(mu);
    if (had_slot) --active;
    r.state = Request::State::Done;
    ++totals.requests_done;
    if (why == FinishReason::Cancelled) ++totals.requests_cancelled;
    if (why == FinishReason::Error) ++totals.requests_failed;
    flush_locked();  // stats read after on_done include this request
  }
  try {
    r.sink->on_done(r.result);
  } catch (...) {
    // A sink that throws from on_done must not take the scheduler down.
  }
}

void Scheduler::Impl::shutdown() {
  std::deque<Handle> waiting;
  std::vector<Handle> dropped_now;
  {
    std::lock_guard lk(mu);
    waiting.swap(queue);
    dropped_now.swap(dropped);
  }
  for (auto& h : dropped_now) finish(*h, FinishReason::Cancelled);
  for (auto& h : waiting) finish(*h, FinishReason::Cancelled);
  for (auto& s : slots)
    if (s.req) finish(*s.req, FinishReason::Cancelled);
}

Scheduler::Scheduler(BatchModel& model, const SchedulerOptions& opt) : impl_(std::make_unique<Impl>(model, opt)) {}

Scheduler::~Scheduler() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->worker.join();
}

Scheduler::Handle Scheduler::submit(GenerationRequest req, std::shared_ptr<GenerationSink> sink) {
  impl_->validate(req, sink.get());
  const int n_prompt = static_cast<int>(req.prompt.size());
  auto h = std::make_shared<Request>(std::move(req), std::move(sink));
  h->result.queued = Clock::now();
  h->result.prompt_tokens = n_prompt;
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->stopping) throw std::runtime_error("scheduler is shutting down");
    // Requests that will get a free slot at the next step don't count as waiting.
    const size_t free_slots = static_cast<size_t>(impl_->opt.n_parallel - impl_->active);
    if (impl_->queue.size() >= static_cast<size_t>(impl_->opt.max_queue) + free_slots)
      throw QueueFull(fmt::format("request queue is full ({} waiting)", impl_->opt.max_queue));
    impl_->queue.push_back(h);
    impl_->totals.prompt_tokens += n_prompt;
  }
  impl_->cv.notify_one();
  return h;
}

void Scheduler::cancel(const Handle& h) {
  if (!h) return;
  {
    std::lock_guard lk(impl_->mu);
    if (h->state == Request::State::Queued) {
      auto it = std::find(impl_->queue.begin(), impl_->queue.end(), h);
      if (it == impl_->queue.end()) return;  // another scheduler's request
      impl_->queue.erase(it);
      h->state = Request::State::Done;
      impl_->dropped.push_back(h);
    } else if (h->state == Request::State::Running) {
      h->cancel_requested.store(true, std::memory_order_relaxed);
    } else {
      return;
    }
  }
  impl_->cv.notify_one();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lk(impl_->mu);
  SchedulerStats s = impl_->totals;
  s.active = impl_->active;
  s.queued = static_cast<int>(impl_->queue.size());
  return s;
}

int Scheduler::n_ctx() const { return impl_->n_ctx; }

}  // namespace llmesh
