// Speculative decoding in the scheduler against the scripted model: a scripted proposer drafts
// the model's true continuation with chosen positions corrupted, so the test decides what is
// accepted. Greedy output must equal plain decoding whatever is accepted; the KV is rolled
// back over rejected drafts; max_tokens, stop tokens, sink stops, a full context and cancel
// end a request exactly where they would without speculation; a failing or misbehaving
// proposer changes nothing but the speed.
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fake_model.h"
#include "scheduler/scheduler.h"

namespace llmesh {
namespace {

using test::FakeModel;
using test::RecordingSink;
using V = std::vector<int32_t>;

V range(int first, int n) {
  V v(n);
  for (int i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

V concat(V a, const V& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

V head(const V& v, size_t n) { return V(v.begin(), v.begin() + std::min(n, v.size())); }

GenerationRequest greedy(V prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

// Proposes the FakeModel's greedy continuation of the context, with the positions `corrupt`
// picks replaced by another (valid) token; `edit` may then change the proposal freely.
class ScriptedDraft : public DraftSource {
 public:
  // i: position in the window, k: the window (max_tokens), len: context length.
  using Corrupt = std::function<bool(int i, int k, size_t len)>;

  ScriptedDraft(const FakeModel& m, Corrupt corrupt = {}) : m_(m), corrupt_(std::move(corrupt)) {}

  std::string name() const override { return "scripted"; }

  void propose(std::span<DraftTask* const> tasks) override {
    std::lock_guard lk(mu_);
    ++calls_;
    if (throw_if && throw_if(calls_)) {
      ++thrown_;
      // Half-written output must not leak into the step.
      for (DraftTask* t : tasks) t->tokens = {1, 2, 3};
      throw std::runtime_error("scripted proposer failure");
    }
    for (DraftTask* t : tasks) {
      EXPECT_GE(t->max_tokens, 1);
      min_window_ = std::min(min_window_, t->max_tokens);
      max_window_ = std::max(max_window_, t->max_tokens);
      contexts_.emplace_back(t->context.begin(), t->context.end());
      const V ctx(t->context.begin(), t->context.end());
      t->tokens = m_.reference(ctx, t->max_tokens);
      t->q.clear();
      for (int i = 0; i < t->max_tokens; ++i)
        if (corrupt_ && corrupt_(i, t->max_tokens, ctx.size())) t->tokens[i] = wrong(t->tokens[i]);
      if (edit) edit(*t);
    }
  }

  void release(int slot) override {
    std::lock_guard lk(mu_);
    ++released_[slot];
  }

  int wrong(int32_t tok) const {
    return FakeModel::kGenBase + (tok - FakeModel::kGenBase + 1) % (m_.n_vocab() - FakeModel::kGenBase);
  }

  std::function<bool(int call)> throw_if;  // set before use
  std::function<void(DraftTask&)> edit;

  int calls() const { std::lock_guard lk(mu_); return calls_; }
  int thrown() const { std::lock_guard lk(mu_); return thrown_; }
  int min_window() const { std::lock_guard lk(mu_); return min_window_; }
  int max_window() const { std::lock_guard lk(mu_); return max_window_; }
  std::vector<V> contexts() const { std::lock_guard lk(mu_); return contexts_; }
  std::map<int, int> released() const { std::lock_guard lk(mu_); return released_; }

 private:
  const FakeModel& m_;
  Corrupt corrupt_;
  mutable std::mutex mu_;
  int calls_ = 0, thrown_ = 0, min_window_ = 1 << 30, max_window_ = 0;
  std::vector<V> contexts_;
  std::map<int, int> released_;
};

struct Pattern {
  const char* name;
  ScriptedDraft::Corrupt corrupt;
  bool all_kept;        // no draft is ever wrong
  bool none_kept;       // the first draft of every window is wrong
  bool always_rejects;  // every window has a wrong draft
};

std::vector<Pattern> patterns() {
  return {
      {"all_right", {}, true, false, false},
      {"all_wrong", [](int, int, size_t) { return true; }, false, true, true},
      {"first_wrong", [](int i, int, size_t) { return i == 0; }, false, true, true},
      {"last_wrong", [](int i, int k, size_t) { return i == k - 1; }, false, false, true},
      {"second_wrong", [](int i, int, size_t) { return i == 1; }, false, false, false},
      {"mixed", [](int i, int, size_t len) { return (len + i) % 3 == 0; }, false, false, false},
  };
}

SchedulerOptions spec_options(DraftSource* d, int draft_max, bool adaptive, int n_parallel = 1) {
  SchedulerOptions o;
  o.n_parallel = n_parallel;
  o.draft = d;
  o.window = WindowOptions{draft_max, adaptive};
  return o;
}

struct Outcome {
  V tokens;
  std::vector<TokenEvent> events;
  GenerationResult result;
  SchedulerStats stats;
};

Outcome run_one(FakeModel& m, DraftSource* d, const GenerationRequest& req, int draft_max = 4, bool adaptive = false,
                std::shared_ptr<RecordingSink> sink = nullptr) {
  if (!sink) sink = std::make_shared<RecordingSink>();
  Scheduler s(m, spec_options(d, draft_max, adaptive));
  s.submit(req, sink);
  EXPECT_TRUE(sink->wait());
  EXPECT_EQ(sink->done_count(), 1);
  EXPECT_FALSE(sink->token_after_done());
  Outcome o{sink->tokens(), sink->events(), sink->result(), s.stats()};
  EXPECT_EQ(static_cast<int>(o.tokens.size()), o.result.completion_tokens);
  return o;
}

// Counters that must agree whatever happened (no window ended at a stop token).
void expect_stats_consistent(const SchedulerStats& st, uint64_t windows_ending_in_stop = 0) {
  EXPECT_LE(st.spec_accepted, st.spec_drafted);
  EXPECT_LE(st.spec_windows, st.spec_drafted);  // every window drafts at least one token
  EXPECT_EQ(st.spec_tokens, st.spec_accepted + st.spec_windows - windows_ending_in_stop);
}

// The highest position any batch fed for `slot`.
int max_position(const FakeModel& m, int slot) {
  int mx = -1;
  for (const Batch& b : m.batches())
    for (int t = 0; t < b.n_tokens(); ++t)
      if (b.seq[t] == slot) mx = std::max(mx, b.pos[t]);
  return mx;
}

// Rollbacks: truncates to a non-zero length (start() truncates to the reused prefix, 0 here).
int rollbacks(const FakeModel& m) {
  int n = 0;
  for (auto [slot, len] : m.truncates()) n += len > 0;
  return n;
}

TEST(SchedulerSpec, GreedyOutputEqualsPlainDecodingForEveryAcceptancePattern) {
  const V prompt = range(100, 5);
  constexpr int kMax = 40;
  FakeModel ref_model;
  const V ref = ref_model.reference(prompt, kMax);
  {
    FakeModel m;
    Outcome plain = run_one(m, nullptr, greedy(prompt, kMax));
    ASSERT_EQ(plain.tokens, ref);
    EXPECT_EQ(plain.stats.spec_windows, 0u);
  }
  for (const Pattern& pat : patterns()) {
    for (int draft_max : {1, 3, 8}) {
      for (bool adaptive : {false, true}) {
        SCOPED_TRACE(testing::Message() << pat.name << " draft_max " << draft_max << " adaptive " << adaptive);
        FakeModel m;
        ScriptedDraft d(m, pat.corrupt);
        Outcome o = run_one(m, &d, greedy(prompt, kMax), draft_max, adaptive);
        EXPECT_EQ(o.tokens, ref);
        EXPECT_EQ(o.result.finish, FinishReason::Length);
        // The KV holds the prompt and every generated token but the last (never fed): the
        // rejected drafts were rolled back.
        EXPECT_EQ(m.kv(0), concat(prompt, head(ref, kMax - 1)));
        const SchedulerStats& st = o.stats;
        EXPECT_GT(st.spec_windows, 0u);
        EXPECT_GT(st.spec_drafted, 0u);
        expect_stats_consistent(st);
        EXPECT_EQ(st.generated_tokens, static_cast<uint64_t>(kMax));
        EXPECT_EQ(st.spec_failures, 0u);
        EXPECT_EQ(static_cast<uint64_t>(o.result.drafted_tokens), st.spec_drafted);
        EXPECT_EQ(static_cast<uint64_t>(o.result.accepted_tokens), st.spec_accepted);
        if (pat.all_kept) {
          EXPECT_EQ(st.spec_accepted, st.spec_drafted);
          EXPECT_EQ(rollbacks(m), 0);
          if (!adaptive) {
            // Every verification yields draft_max + 1 tokens: far fewer forward passes.
            EXPECT_LE(st.steps, 1u + (kMax - 1 + draft_max) / (draft_max + 1));
          }
        } else if (pat.always_rejects) {
          // Every window has a wrong draft: every verification rolls the KV back.
          EXPECT_LT(st.spec_accepted, st.spec_drafted);
          EXPECT_EQ(rollbacks(m), static_cast<int>(st.spec_windows));
        } else if (!adaptive && draft_max >= 3) {
          EXPECT_LT(st.spec_accepted, st.spec_drafted);
        }
        // A rollback exactly when some draft was rejected.
        EXPECT_EQ(rollbacks(m) == 0, st.spec_accepted == st.spec_drafted);
        if (pat.none_kept) {
          EXPECT_EQ(st.spec_accepted, 0u);
        }
        // The proposer saw the true sequence: prompt, output so far, and the token about to be fed.
        for (const V& ctx : d.contexts()) {
          ASSERT_GT(ctx.size(), prompt.size());
          EXPECT_EQ(head(ctx, prompt.size()), prompt);
          EXPECT_EQ(V(ctx.begin() + prompt.size(), ctx.end()), head(ref, ctx.size() - prompt.size()));
        }
        EXPECT_LE(d.max_window(), draft_max);
        EXPECT_EQ(d.released(), (std::map<int, int>{{0, 1}}));
      }
    }
  }
}

TEST(SchedulerSpec, MaxTokensIsExactWhenAWindowWouldOvershoot) {
  const V prompt = range(200, 6);
  for (const Pattern& pat : patterns()) {
    for (int max_tokens : {1, 2, 3, 4, 5, 9, 10, 17}) {
      SCOPED_TRACE(testing::Message() << pat.name << " max_tokens " << max_tokens);
      FakeModel m;
      ScriptedDraft d(m, pat.corrupt);
      Outcome o = run_one(m, &d, greedy(prompt, max_tokens), /*draft_max=*/8);
      EXPECT_EQ(o.tokens, m.reference(prompt, max_tokens));
      EXPECT_EQ(o.result.finish, FinishReason::Length);
      // Generated token g sits at position P + g; the last one is never fed, and no draft
      // reaches past it.
      EXPECT_EQ(max_position(m, 0), static_cast<int>(prompt.size()) + max_tokens - 2);
      if (max_tokens <= 2) {
        EXPECT_EQ(o.stats.spec_windows, 0u) << "no room for a draft";
        EXPECT_EQ(d.calls(), 0);
      } else {
        EXPECT_LE(d.max_window(), max_tokens - 2);
        EXPECT_GT(o.stats.spec_windows, 0u);
      }
      EXPECT_EQ(m.kv(0), concat(prompt, head(m.reference(prompt, max_tokens), max_tokens - 1)));
      expect_stats_consistent(o.stats);
    }
  }
}

TEST(SchedulerSpec, OverlongProposalsAreCutToTheWindow) {
  const V prompt = range(300, 4);
  FakeModel m;
  ScriptedDraft d(m);
  // Propose the right continuation, but 6 tokens more than asked for.
  d.edit = [&](DraftTask& t) {
    V ctx(t.context.begin(), t.context.end());
    t.tokens = m.reference(ctx, t.max_tokens + 6);
  };
  Outcome o = run_one(m, &d, greedy(prompt, 11), /*draft_max=*/3);
  EXPECT_EQ(o.tokens, m.reference(prompt, 11));
  EXPECT_EQ(max_position(m, 0), 4 + 11 - 2);
  // Each window: next token plus at most 3 drafts for the slot.
  for (const Batch& b : m.batches()) EXPECT_LE(b.n_tokens(), 4);
  EXPECT_LE(o.stats.spec_drafted, 3u * o.stats.spec_windows);
  expect_stats_consistent(o.stats);
}

TEST(SchedulerSpec, StopTokenInsideAnAcceptedWindowEndsThere) {
  const V prompt = range(100, 5);
  FakeModel m0;
  const V ref = m0.reference(prompt, 20);
  // Token 0 comes from the prompt's logits; the first window (next token ref[0]) drafts
  // ref[1..4]. The stop token ref[3] is accepted-territory: ref[1], ref[2] are emitted, then
  // the request stops without emitting ref[3] or anything after.
  ASSERT_EQ(std::count(ref.begin(), ref.begin() + 4, ref[3]), 1) << "test design: ref[3] must be new";
  {
    FakeModel m;
    ScriptedDraft d(m);
    auto req = greedy(prompt, 20);
    req.stop_tokens = {ref[3]};
    Outcome o = run_one(m, &d, req, /*draft_max=*/4);
    EXPECT_EQ(o.result.finish, FinishReason::Stop);
    EXPECT_EQ(o.tokens, head(ref, 3));
    EXPECT_EQ(o.result.completion_tokens, 3);
    EXPECT_EQ(o.stats.spec_windows, 1u);
    EXPECT_EQ(o.stats.spec_drafted, 4u);
    EXPECT_EQ(o.stats.spec_accepted, 2u);  // the drafts before the stop token
    expect_stats_consistent(o.stats, /*windows_ending_in_stop=*/1);
    EXPECT_EQ(m.kv(0), concat(prompt, head(ref, 3)));
    // The same without speculation.
    FakeModel p;
    Outcome plain = run_one(p, nullptr, req);
    EXPECT_EQ(plain.tokens, o.tokens);
    EXPECT_EQ(plain.result.finish, FinishReason::Stop);
  }
  // The stop token is the target's own token after a rejected draft.
  {
    FakeModel m;
    ScriptedDraft d(m, [](int i, int, size_t) { return i == 1; });
    auto req = greedy(prompt, 20);
    req.stop_tokens = {ref[2]};
    ASSERT_EQ(std::count(ref.begin(), ref.begin() + 3, ref[2]), 1);
    Outcome o = run_one(m, &d, req, /*draft_max=*/4);
    EXPECT_EQ(o.result.finish, FinishReason::Stop);
    EXPECT_EQ(o.tokens, head(ref, 2));
    EXPECT_EQ(o.stats.spec_accepted, 1u);
    expect_stats_consistent(o.stats, 1);
    EXPECT_EQ(m.kv(0), concat(prompt, head(ref, 2)));
  }
  // The stop token is the free token after a fully accepted window.
  {
    FakeModel m;
    ScriptedDraft d(m);
    auto req = greedy(prompt, 20);
    req.stop_tokens = {ref[5]};
    ASSERT_EQ(std::count(ref.begin(), ref.begin() + 6, ref[5]), 1);
    Outcome o = run_one(m, &d, req, /*draft_max=*/4);
    EXPECT_EQ(o.result.finish, FinishReason::Stop);
    EXPECT_EQ(o.tokens, head(ref, 5));
    EXPECT_EQ(o.stats.spec_accepted, 4u);
    expect_stats_consistent(o.stats, 1);
  }
}

TEST(SchedulerSpec, SinkStoppingMidWindowEndsThere) {
  const V prompt = range(100, 5);
  FakeModel m;
  const V ref = m.reference(prompt, 20);
  ScriptedDraft d(m);
  SchedulerOptions o = spec_options(&d, 4, false);
  Scheduler s(m, o);
  // Token 0, then a window of 4 drafts all kept: the sink stops at the 3rd token.
  auto sink = std::make_shared<RecordingSink>(/*stop_after=*/3);
  s.submit(greedy(prompt, 20), sink);
  ASSERT_TRUE(sink->wait());
  EXPECT_EQ(sink->result().finish, FinishReason::Stop);
  EXPECT_EQ(sink->tokens(), head(ref, 3));
  EXPECT_EQ(sink->result().completion_tokens, 3);
  EXPECT_FALSE(sink->token_after_done());
  auto st = s.stats();
  EXPECT_EQ(st.generated_tokens, 3u);
  expect_stats_consistent(st);
  // What the slot holds (kept drafts past the stop included) stays reusable and right: a
  // follow-up that continues the conversation gets the true continuation.
  const V prompt2 = concat(prompt, head(ref, 3));
  auto sink2 = std::make_shared<RecordingSink>();
  s.submit(greedy(prompt2, 8), sink2);
  ASSERT_TRUE(sink2->wait());
  EXPECT_GT(sink2->result().cached_tokens, 0);
  EXPECT_EQ(sink2->tokens(), m.reference(prompt2, 8));
  EXPECT_EQ(m.kv(0), concat(prompt2, head(m.reference(prompt2, 8), 7)));
}

TEST(SchedulerSpec, ContextFullAtTheSameTokenCountAsWithoutSpeculation) {
  const V prompt = range(100, 5);
  constexpr int kCtx = 32;
  FakeModel p(2000, kCtx, 4);
  Outcome plain = run_one(p, nullptr, greedy(prompt, -1));
  ASSERT_EQ(plain.result.finish, FinishReason::ContextFull);
  ASSERT_EQ(plain.tokens.size(), static_cast<size_t>(kCtx - 5));
  for (const Pattern& pat : patterns()) {
    for (int draft_max : {2, 5, 8}) {
      SCOPED_TRACE(testing::Message() << pat.name << " draft_max " << draft_max);
      FakeModel m(2000, kCtx, 4);
      ScriptedDraft d(m, pat.corrupt);
      Outcome o = run_one(m, &d, greedy(prompt, -1), draft_max);
      EXPECT_EQ(o.result.finish, FinishReason::ContextFull);
      EXPECT_EQ(o.tokens, plain.tokens);
      EXPECT_LE(max_position(m, 0), kCtx - 1);
      EXPECT_GT(o.stats.spec_windows, 0u);
      expect_stats_consistent(o.stats);
    }
  }
}

TEST(SchedulerSpec, CancelWhileSpeculating) {
  FakeModel m(2000, 256, 2);
  m.close_gate();
  ScriptedDraft d(m, [](int i, int, size_t) { return i == 2; });
  Scheduler s(m, spec_options(&d, 4, false, 2));
  auto a = std::make_shared<RecordingSink>();
  const V prompt = range(100, 5);
  auto h = s.submit(greedy(prompt, -1), a);
  m.permit(3);
  m.wait_started(4);  // prefill and two verifications done, the third is in flight
  s.cancel(h);
  m.open_gate();
  ASSERT_TRUE(a->wait());
  EXPECT_EQ(a->done_count(), 1);
  EXPECT_FALSE(a->token_after_done());
  EXPECT_EQ(a->result().finish, FinishReason::Cancelled);
  const V got = a->tokens();
  // The prefill's token, then twice two drafts kept plus the target's own; the third
  // verification was in flight when cancel came and emits nothing.
  EXPECT_EQ(got.size(), 7u);
  EXPECT_EQ(got, m.reference(prompt, static_cast<int>(got.size())));
  EXPECT_EQ(m.truncates().back(), std::make_pair(0, 0));
  EXPECT_TRUE(m.kv(0).empty());
  const auto batches = m.batches();
  ASSERT_GE(batches.size(), 2u);
  EXPECT_EQ(batches[1].n_tokens(), 5) << "the second step carries the next token and 4 drafts";
  auto st = s.stats();
  EXPECT_EQ(st.active, 0);
  EXPECT_EQ(st.requests_cancelled, 1u);
  expect_stats_consistent(st);

  // The scheduler goes on speculating for the next request.
  auto b = std::make_shared<RecordingSink>();
  s.submit(greedy(prompt, 12), b);
  ASSERT_TRUE(b->wait());
  EXPECT_EQ(b->tokens(), m.reference(prompt, 12));
  EXPECT_EQ(b->result().cached_tokens, 0);
}

TEST(SchedulerSpec, ThrowingProposerIsCountedAndChangesNothingButSpeed) {
  const V prompt = range(100, 5);
  for (int every : {1, 2, 3}) {
    SCOPED_TRACE(testing::Message() << "throws on every " << every << " call");
    FakeModel m;
    ScriptedDraft d(m, [](int i, int, size_t) { return i == 1; });
    d.throw_if = [every](int call) { return call % every == 0; };
    Outcome o = run_one(m, &d, greedy(prompt, 30), 4);
    EXPECT_EQ(o.tokens, m.reference(prompt, 30));
    EXPECT_EQ(o.result.finish, FinishReason::Length);
    EXPECT_GT(d.thrown(), 0);
    EXPECT_EQ(o.stats.spec_failures, static_cast<uint64_t>(d.thrown()));
    EXPECT_EQ(m.kv(0), concat(prompt, head(m.reference(prompt, 30), 29)));
    if (every == 1) {
      EXPECT_EQ(o.stats.spec_windows, 0u);
      EXPECT_EQ(o.stats.spec_drafted, 0u);
      // Nothing the failing proposer wrote reached a batch: one token per step.
      for (const Batch& b : m.batches()) EXPECT_TRUE(b.n_tokens() == 1 || b.n_tokens() == 5) << b.n_tokens();
    } else {
      EXPECT_GT(o.stats.spec_windows, 0u);
    }
    expect_stats_consistent(o.stats);
  }
}

TEST(SchedulerSpec, OutOfVocabularyDraftsCutTheWindow) {
  const V prompt = range(100, 5);
  for (int bad_at : {0, 1, 2}) {
    for (int32_t bad : {2000, 2005, -1, -100000}) {
      SCOPED_TRACE(testing::Message() << "bad id " << bad << " at " << bad_at);
      FakeModel m;  // n_vocab 2000
      ScriptedDraft d(m);
      d.edit = [&](DraftTask& t) {
        if (static_cast<int>(t.tokens.size()) > bad_at) t.tokens[bad_at] = bad;
      };
      Outcome o = run_one(m, &d, greedy(prompt, 25), 4);
      EXPECT_EQ(o.tokens, m.reference(prompt, 25));
      EXPECT_EQ(o.result.finish, FinishReason::Length);
      for (const Batch& b : m.batches()) {
        for (int32_t t : b.tokens) {
          EXPECT_GE(t, 0);
          EXPECT_LT(t, 2000);
        }
        if (b.n_tokens() > 0 && b.pos[0] >= static_cast<int>(prompt.size())) {
          EXPECT_LE(b.n_tokens(), 1 + bad_at) << "drafts past the bad id were fed";
        }
      }
      EXPECT_LE(o.stats.spec_drafted, static_cast<uint64_t>(bad_at) * o.stats.spec_windows);
      if (bad_at == 0) {
        EXPECT_EQ(o.stats.spec_windows, 0u);
      }
      expect_stats_consistent(o.stats);
    }
  }
}

TEST(SchedulerSpec, TopLogprobsMatchDecodingWithoutSpeculation) {
  const V prompt = range(100, 6);
  auto req = greedy(prompt, 20);
  req.top_logprobs = 5;
  FakeModel p;
  Outcome plain = run_one(p, nullptr, req);
  ASSERT_EQ(plain.events.size(), 20u);
  for (const Pattern& pat : patterns()) {
    SCOPED_TRACE(pat.name);
    FakeModel m;
    ScriptedDraft d(m, pat.corrupt);
    Outcome o = run_one(m, &d, req, 4);
    ASSERT_EQ(o.events.size(), plain.events.size());
    for (size_t i = 0; i < o.events.size(); ++i) {
      const TokenEvent &a = o.events[i], &b = plain.events[i];
      EXPECT_EQ(a.token, b.token) << i;
      EXPECT_EQ(a.logprob, b.logprob) << i;
      ASSERT_EQ(a.top.size(), b.top.size()) << i;
      ASSERT_EQ(a.top.size(), 5u);
      for (size_t j = 0; j < a.top.size(); ++j) {
        EXPECT_EQ(a.top[j].id, b.top[j].id) << i << "," << j;
        EXPECT_EQ(a.top[j].logprob, b.top[j].logprob) << i << "," << j;
      }
    }
    EXPECT_GT(o.stats.spec_windows, 0u);
  }
}

TEST(SchedulerSpec, ConcurrentRequestsGetTheSameTokensAsAlone) {
  std::vector<V> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(range(10 + 37 * i, 3 + i % 4));
  // Two requests share a prompt prefix with an earlier one (prefix reuse under speculation).
  prompts.push_back(concat(prompts[0], {7, 8}));
  prompts.push_back(prompts[1]);
  for (const Pattern& pat : patterns()) {
    for (bool adaptive : {false, true}) {
      SCOPED_TRACE(testing::Message() << pat.name << " adaptive " << adaptive);
      FakeModel m(2000, 256, 4);
      ScriptedDraft d(m, pat.corrupt);
      Scheduler s(m, spec_options(&d, 5, adaptive, 4));
      std::vector<std::shared_ptr<RecordingSink>> sinks;
      std::vector<int> lens;
      for (size_t i = 0; i < prompts.size(); ++i) {
        sinks.push_back(std::make_shared<RecordingSink>());
        lens.push_back(10 + static_cast<int>(i) * 3);
        s.submit(greedy(prompts[i], lens.back()), sinks.back());
      }
      for (size_t i = 0; i < sinks.size(); ++i) {
        ASSERT_TRUE(sinks[i]->wait());
        EXPECT_EQ(sinks[i]->tokens(), m.reference(prompts[i], lens[i])) << "request " << i;
        EXPECT_EQ(sinks[i]->result().finish, FinishReason::Length);
        EXPECT_EQ(sinks[i]->done_count(), 1);
      }
      auto st = s.stats();
      EXPECT_GT(st.spec_windows, 0u);
      expect_stats_consistent(st);
      uint64_t drafted = 0, accepted = 0;
      for (auto& k : sinks) drafted += k->result().drafted_tokens, accepted += k->result().accepted_tokens;
      EXPECT_EQ(drafted, st.spec_drafted);
      EXPECT_EQ(accepted, st.spec_accepted);
      // Every slot's KV is some finished request's prompt + output but the last token.
      std::set<V> finished;
      for (size_t i = 0; i < sinks.size(); ++i) {
        const V out = sinks[i]->tokens();
        finished.insert(concat(prompts[i], head(out, out.size() - 1)));
      }
      for (int slot = 0; slot < 4; ++slot) {
        const V kv = m.kv(slot);
        if (!kv.empty()) {
          EXPECT_TRUE(finished.count(kv)) << "slot " << slot;
        }
      }
      int releases = 0;
      for (auto [slot, n] : d.released()) releases += n;
      EXPECT_EQ(releases, static_cast<int>(prompts.size()));
    }
  }
}

TEST(SchedulerSpec, DraftMaxIsValidated) {
  FakeModel m;
  ScriptedDraft d(m);
  EXPECT_THROW(Scheduler(m, spec_options(&d, 0, false)), std::invalid_argument);
  EXPECT_THROW(Scheduler(m, spec_options(&d, 65, false)), std::invalid_argument);
  EXPECT_NO_THROW(Scheduler(m, spec_options(&d, 64, true)));
  // Without a proposer the window options are not looked at.
  EXPECT_NO_THROW(Scheduler(m, spec_options(nullptr, 0, false)));
}

}  // namespace
}  // namespace llmesh
