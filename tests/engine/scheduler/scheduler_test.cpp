// The continuous-batching scheduler against a scripted model: batch composition, prefix
// reuse, queueing, cancellation, finish reasons, failures and concurrent use.
#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "fake_model.h"
#include "scheduler/scheduler.h"

namespace llmesh {
namespace {

using test::FakeModel;
using test::RecordingSink;
using namespace std::chrono_literals;

std::vector<int32_t> range(int first, int n) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

GenerationRequest greedy(std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

SchedulerOptions options(int n_parallel, int step_tokens = 256, int max_queue = 64) {
  SchedulerOptions o;
  o.n_parallel = n_parallel;
  o.step_tokens = step_tokens;
  o.max_queue = max_queue;
  return o;
}

// on_done came exactly once, after every token.
void expect_clean(const RecordingSink& s) {
  EXPECT_EQ(s.done_count(), 1);
  EXPECT_FALSE(s.token_after_done());
  EXPECT_EQ(static_cast<int>(s.tokens().size()), s.result().completion_tokens);
}

TEST(Scheduler, ConstructorChecksOptions) {
  FakeModel m(2000, 64, 2);
  EXPECT_THROW(Scheduler(m, options(3)), std::invalid_argument);
  EXPECT_THROW(Scheduler(m, options(0)), std::invalid_argument);
  EXPECT_THROW(Scheduler(m, options(1, 0)), std::invalid_argument);
  EXPECT_THROW(Scheduler(m, options(1, 8, -1)), std::invalid_argument);
  Scheduler s(m, options(2));
  EXPECT_EQ(s.n_ctx(), 64);
  EXPECT_EQ(s.stats().n_parallel, 2);
}

TEST(Scheduler, SubmitValidates) {
  FakeModel m(2000, 16, 1);
  Scheduler s(m, options(1));
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THROW(s.submit(greedy({}, 1), sink), std::invalid_argument);
  EXPECT_THROW(s.submit(greedy({5}, 1), nullptr), std::invalid_argument);
  EXPECT_THROW(s.submit(greedy({5, 2000}, 1), sink), std::invalid_argument);
  EXPECT_THROW(s.submit(greedy({5}, 0), sink), std::invalid_argument);
  EXPECT_THROW(s.submit(greedy({5}, -2), sink), std::invalid_argument);
  EXPECT_THROW(s.submit(greedy(range(1, 16), -1), sink), std::invalid_argument);
  try {
    s.submit(greedy(range(1, 10), 7), sink);
    FAIL() << "prompt + max_tokens beyond the context was accepted";
  } catch (const std::invalid_argument& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("10"), std::string::npos) << msg;
    EXPECT_NE(msg.find("7"), std::string::npos) << msg;
    EXPECT_NE(msg.find("16"), std::string::npos) << msg;
  }
  auto bad_sampling = greedy({5}, 1);
  bad_sampling.sampling.top_p = 0;
  EXPECT_THROW(s.submit(bad_sampling, sink), std::invalid_argument);
  auto bad_bias = greedy({5}, 1);
  bad_bias.logit_bias = {{2000, 1.0f}};
  EXPECT_THROW(s.submit(bad_bias, sink), std::invalid_argument);
  bad_bias.logit_bias = {{3, NAN}};
  EXPECT_THROW(s.submit(bad_bias, sink), std::invalid_argument);
  auto bad_top = greedy({5}, 1);
  bad_top.top_logprobs = 21;
  EXPECT_THROW(s.submit(bad_top, sink), std::invalid_argument);
  EXPECT_EQ(sink->done_count(), 0);
  EXPECT_EQ(s.stats().prompt_tokens, 0u);
}

TEST(Scheduler, BatchesDecodesFirstThenFairPromptChunks) {
  FakeModel m(2000, 256, 4);
  m.close_gate();
  Scheduler s(m, options(4, /*step_tokens=*/8));
  // Owner of a prompt token = id / 100; generated tokens are >= 1000.
  std::map<int, std::vector<int32_t>> prompts = {{1, range(100, 40)}, {2, range(200, 3)}, {3, range(300, 10)}};
  std::map<int, std::shared_ptr<RecordingSink>> sinks;
  for (auto& [id, p] : prompts) sinks[id] = std::make_shared<RecordingSink>();
  s.submit(greedy(prompts[1], 5), sinks[1]);
  m.wait_started(1);  // the long prompt is already being prefilled when the others arrive
  s.submit(greedy(prompts[2], 4), sinks[2]);
  s.submit(greedy(prompts[3], 4), sinks[3]);
  m.open_gate();
  for (auto& [id, sink] : sinks) {
    ASSERT_TRUE(sink->wait());
    expect_clean(*sink);
    EXPECT_EQ(sink->result().finish, FinishReason::Length);
    EXPECT_EQ(sink->tokens(), m.reference(prompts[id], id == 1 ? 5 : 4)) << "request " << id;
  }

  auto batches = m.batches();
  ASSERT_FALSE(batches.empty());
  // The first step: only the long prompt, one full chunk, no logits yet.
  EXPECT_EQ(batches[0].n_tokens(), 8);
  EXPECT_EQ(batches[0].pos, range(0, 8));
  EXPECT_EQ(std::count(batches[0].output.begin(), batches[0].output.end(), 1), 0);

  std::map<int, size_t> prompt_end_batch;  // owner -> batch with its last prompt token
  std::map<int, int> owner_of_seq;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const Batch& b = batches[bi];
    int prompt_tokens = 0;
    bool seen_prompt = false;
    for (int t = 0; t < b.n_tokens(); ++t) {
      if (b.tokens[t] >= FakeModel::kGenBase) {
        EXPECT_FALSE(seen_prompt) << "decode after a prompt token in batch " << bi;
        EXPECT_EQ(b.output[t], 1);
        continue;
      }
      seen_prompt = true;
      ++prompt_tokens;
      int owner = b.tokens[t] / 100;
      owner_of_seq[b.seq[t]] = owner;
      bool last = b.pos[t] + 1 == static_cast<int>(prompts[owner].size());
      EXPECT_EQ(b.output[t], last ? 1 : 0) << "batch " << bi << " token " << t;
      if (last) prompt_end_batch[owner] = bi;
    }
    EXPECT_LE(prompt_tokens, 8) << "batch " << bi;
  }
  // Short prompts arriving later are not starved by the long one.
  EXPECT_LT(prompt_end_batch[2], prompt_end_batch[1]);
  EXPECT_LT(prompt_end_batch[3], prompt_end_batch[1]);
  // Once generating, a request has a decode token in every step until it finishes.
  for (auto [seq, owner] : owner_of_seq) {
    int generated = static_cast<int>(sinks[owner]->tokens().size());
    for (int k = 1; k < generated; ++k) {
      const Batch& b = batches.at(prompt_end_batch[owner] + k);
      bool found = false;
      for (int t = 0; t < b.n_tokens(); ++t) found |= b.seq[t] == seq && b.tokens[t] >= FakeModel::kGenBase;
      EXPECT_TRUE(found) << "request " << owner << " skipped step " << k;
    }
  }
}

TEST(Scheduler, PrefixReuseSkipsCachedTokensAndKeepsOutput) {
  FakeModel m(2000, 256, 2);
  Scheduler s(m, options(2));
  const auto p = range(10, 10);
  auto first = std::make_shared<RecordingSink>();
  s.submit(greedy(p, 4), first);
  ASSERT_TRUE(first->wait());
  EXPECT_EQ(first->result().cached_tokens, 0);
  const auto out1 = first->tokens();
  ASSERT_EQ(out1.size(), 4u);

  // The next turn of the conversation: the slot holds the prompt plus the first 3 generated
  // tokens (the last one was never fed).
  auto turn2 = p;
  turn2.insert(turn2.end(), out1.begin(), out1.end());
  turn2.push_back(50);
  turn2.push_back(51);
  auto second = std::make_shared<RecordingSink>();
  s.submit(greedy(turn2, 4), second);
  ASSERT_TRUE(second->wait());
  expect_clean(*second);
  EXPECT_EQ(second->result().cached_tokens, 13);
  EXPECT_EQ(second->result().prompt_tokens, 16);
  EXPECT_EQ(second->tokens(), m.reference(turn2, 4));
  EXPECT_EQ(m.truncates().back(), std::make_pair(0, 13));

  // An unrelated prompt takes the least recently used slot, leaving slot 0's cache alone.
  auto other = std::make_shared<RecordingSink>();
  s.submit(greedy(range(500, 6), 2), other);
  ASSERT_TRUE(other->wait());
  EXPECT_EQ(m.truncates().back(), std::make_pair(1, 0));
  EXPECT_EQ(other->result().cached_tokens, 0);

  // The same prompt again: everything but its last token is reused.
  auto again = std::make_shared<RecordingSink>();
  s.submit(greedy(turn2, 4), again);
  ASSERT_TRUE(again->wait());
  EXPECT_EQ(again->result().cached_tokens, 15);
  EXPECT_EQ(m.truncates().back(), std::make_pair(0, 15));
  EXPECT_EQ(again->tokens(), second->tokens());

  auto st = s.stats();
  EXPECT_EQ(st.prompt_tokens, 10u + 16 + 6 + 16);
  EXPECT_EQ(st.cached_tokens, 13u + 15);
  EXPECT_EQ(st.prefill_tokens, st.prompt_tokens - st.cached_tokens);
  EXPECT_EQ(st.generated_tokens, 4u + 4 + 2 + 4);
  EXPECT_EQ(st.requests_done, 4u);
  EXPECT_EQ(st.steps, static_cast<uint64_t>(m.steps()));

  // Without reuse: the same output, nothing cached.
  FakeModel m2(2000, 256, 2);
  auto o = options(2);
  o.prefix_reuse = false;
  Scheduler s2(m2, o);
  auto fresh = std::make_shared<RecordingSink>();
  s2.submit(greedy(p, 4), fresh);
  ASSERT_TRUE(fresh->wait());
  auto fresh2 = std::make_shared<RecordingSink>();
  s2.submit(greedy(turn2, 4), fresh2);
  ASSERT_TRUE(fresh2->wait());
  EXPECT_EQ(fresh2->result().cached_tokens, 0);
  EXPECT_EQ(fresh2->tokens(), second->tokens());
}

TEST(Scheduler, QueueFullAndCancelQueued) {
  FakeModel m(2000, 256, 1);
  m.close_gate();
  Scheduler s(m, options(1, 256, /*max_queue=*/2));
  auto a = std::make_shared<RecordingSink>(), b = std::make_shared<RecordingSink>(),
       c = std::make_shared<RecordingSink>(), d = std::make_shared<RecordingSink>();
  s.submit(greedy(range(100, 4), 3), a);
  m.wait_started(1);
  auto hb = s.submit(greedy(range(200, 4), 3), b);
  s.submit(greedy(range(300, 4), 3), c);
  EXPECT_THROW(s.submit(greedy(range(400, 4), 3), d), QueueFull);
  auto st = s.stats();
  EXPECT_EQ(st.active, 1);
  EXPECT_EQ(st.queued, 2);

  s.cancel(hb);
  s.cancel(hb);  // idempotent
  EXPECT_EQ(s.stats().queued, 1);
  s.submit(greedy(range(400, 4), 3), d);  // room again
  m.open_gate();
  for (auto& x : {a, b, c, d}) {
    ASSERT_TRUE(x->wait());
    expect_clean(*x);
  }
  s.cancel(hb);
  EXPECT_EQ(b->done_count(), 1);
  EXPECT_EQ(b->result().finish, FinishReason::Cancelled);
  EXPECT_TRUE(b->tokens().empty());
  EXPECT_EQ(b->result().started, std::chrono::steady_clock::time_point{});
  for (const Batch& batch : m.batches())
    for (int32_t t : batch.tokens) EXPECT_FALSE(t >= 200 && t < 300) << "cancelled request ran";
  EXPECT_EQ(c->result().finish, FinishReason::Length);
  EXPECT_EQ(d->result().finish, FinishReason::Length);
  EXPECT_EQ(s.stats().requests_cancelled, 1u);
}

TEST(Scheduler, CancelRunningFreesSlotAndClearsKv) {
  FakeModel m(2000, 256, 2);
  m.close_gate();
  Scheduler s(m, options(2));
  auto a = std::make_shared<RecordingSink>();
  const auto prompt = range(100, 5);
  auto h = s.submit(greedy(prompt, -1), a);
  m.permit(3);
  m.wait_started(4);  // three steps done, the fourth is in flight
  s.cancel(h);
  m.open_gate();
  ASSERT_TRUE(a->wait());
  expect_clean(*a);
  EXPECT_EQ(a->result().finish, FinishReason::Cancelled);
  EXPECT_GE(a->tokens().size(), 3u);
  EXPECT_LE(a->tokens().size(), 4u);
  EXPECT_EQ(m.truncates().back(), std::make_pair(0, 0));
  EXPECT_TRUE(m.kv(0).empty());
  auto st = s.stats();
  EXPECT_EQ(st.active, 0);
  EXPECT_EQ(st.requests_cancelled, 1u);
  s.cancel(h);
  EXPECT_EQ(a->done_count(), 1);

  // The cleared slot offers nothing for reuse.
  auto again = std::make_shared<RecordingSink>();
  s.submit(greedy(prompt, 2), again);
  ASSERT_TRUE(again->wait());
  EXPECT_EQ(again->result().cached_tokens, 0);
  EXPECT_EQ(again->tokens(), m.reference(prompt, 2));
}

TEST(Scheduler, StopTokenEndsWithoutEmitting) {
  FakeModel m;
  Scheduler s(m, options(2));
  const auto prompt = range(100, 5);
  const auto ref = m.reference(prompt, 5);
  auto req = greedy(prompt, 5);
  req.stop_tokens = {ref[2]};
  auto sink = std::make_shared<RecordingSink>();
  s.submit(req, sink);
  ASSERT_TRUE(sink->wait());
  expect_clean(*sink);
  EXPECT_EQ(sink->result().finish, FinishReason::Stop);
  EXPECT_EQ(sink->tokens(), std::vector<int32_t>(ref.begin(), ref.begin() + 2));
  EXPECT_EQ(sink->result().completion_tokens, 2);

  // logit_bias forces a stop token as the very first sample.
  auto forced = greedy(prompt, 5);
  forced.logit_bias = {{1500, 100.0f}};
  forced.stop_tokens = {1500};
  auto sink2 = std::make_shared<RecordingSink>();
  s.submit(forced, sink2);
  ASSERT_TRUE(sink2->wait());
  EXPECT_EQ(sink2->result().finish, FinishReason::Stop);
  EXPECT_TRUE(sink2->tokens().empty());
  EXPECT_EQ(sink2->result().first_token, std::chrono::steady_clock::time_point{});
}

TEST(Scheduler, SinkStopCountsTheToken) {
  FakeModel m;
  Scheduler s(m, options(1));
  auto sink = std::make_shared<RecordingSink>(/*stop_after=*/2);
  const auto prompt = range(100, 5);
  s.submit(greedy(prompt, 10), sink);
  ASSERT_TRUE(sink->wait());
  expect_clean(*sink);
  EXPECT_EQ(sink->result().finish, FinishReason::Stop);
  EXPECT_EQ(sink->result().completion_tokens, 2);
  EXPECT_EQ(sink->tokens(), m.reference(prompt, 2));
}

TEST(Scheduler, MaxTokensAndTimestamps) {
  FakeModel m;
  Scheduler s(m, options(1));
  auto sink = std::make_shared<RecordingSink>();
  const auto prompt = range(100, 7);
  s.submit(greedy(prompt, 5), sink);
  ASSERT_TRUE(sink->wait());
  expect_clean(*sink);
  auto r = sink->result();
  EXPECT_EQ(r.finish, FinishReason::Length);
  EXPECT_EQ(r.completion_tokens, 5);
  EXPECT_EQ(r.prompt_tokens, 7);
  EXPECT_EQ(sink->tokens(), m.reference(prompt, 5));
  EXPECT_LE(r.queued, r.started);
  EXPECT_LE(r.started, r.first_token);
  EXPECT_LE(r.first_token, r.finished);
  EXPECT_NE(r.queued, std::chrono::steady_clock::time_point{});
}

TEST(Scheduler, ContextFullWhenUnbounded) {
  FakeModel m(2000, 16, 2);
  Scheduler s(m, options(2));
  const auto prompt = range(100, 10);
  auto sink = std::make_shared<RecordingSink>();
  s.submit(greedy(prompt, -1), sink);
  ASSERT_TRUE(sink->wait());
  expect_clean(*sink);
  EXPECT_EQ(sink->result().finish, FinishReason::ContextFull);
  EXPECT_EQ(sink->tokens(), m.reference(prompt, 6));  // prompt + output fill the 16 positions

  // Exactly filling the context with max_tokens is a Length finish.
  auto exact = std::make_shared<RecordingSink>();
  s.submit(greedy(prompt, 6), exact);
  ASSERT_TRUE(exact->wait());
  EXPECT_EQ(exact->result().finish, FinishReason::Length);
}

TEST(Scheduler, LogprobsAreOfRawLogits) {
  FakeModel m;
  Scheduler s(m, options(1));
  const auto prompt = range(100, 5);
  const auto ref = m.reference(prompt, 1);
  auto req = greedy(prompt, 1);
  req.top_logprobs = 3;
  req.logit_bias = {{7, 50.0f}};  // sampling picks 7, logprobs still describe the model
  auto sink = std::make_shared<RecordingSink>();
  s.submit(req, sink);
  ASSERT_TRUE(sink->wait());
  auto ev = sink->events().at(0);
  EXPECT_EQ(ev.token, 7);

  // The fake's row for a history of 5 tokens.
  std::vector<double> l(2000);
  for (int v = 0; v < 2000; ++v) l[v] = static_cast<float>((v * 7 + 5) % 13) * 0.1f;
  l[ref[0]] = 10.0;
  double z = 0;
  for (double x : l) z += std::exp(x);
  EXPECT_NEAR(ev.logprob, l[7] - std::log(z), 1e-4);
  ASSERT_EQ(ev.top.size(), 3u);
  EXPECT_EQ(ev.top[0].id, ref[0]);
  EXPECT_NEAR(ev.top[0].logprob, 10.0 - std::log(z), 1e-4);
  EXPECT_GE(ev.top[1].logprob, ev.top[2].logprob);
  EXPECT_NEAR(ev.top[1].logprob, 1.2 - std::log(z), 1e-4);
  EXPECT_LT(ev.top[1].id, ev.top[2].id);  // equal logits: lower id first

  // top_logprobs = 0: the chosen token's logprob only; -1: none.
  auto only = greedy(prompt, 1);
  only.top_logprobs = 0;
  auto sink2 = std::make_shared<RecordingSink>();
  s.submit(only, sink2);
  ASSERT_TRUE(sink2->wait());
  EXPECT_TRUE(sink2->events().at(0).top.empty());
  EXPECT_NEAR(sink2->events().at(0).logprob, 10.0 - std::log(z), 1e-4);
}

TEST(Scheduler, PenaltiesSeePromptAndOutput) {
  FakeModel m;
  m.next_fn = [](const std::vector<int32_t>&) { return 1500; };
  Scheduler s(m, options(1));
  auto req = greedy({1500, 1500, 1500, 1500, 1500, 1500}, 3);
  req.sampling.frequency_penalty = 2.0f;
  req.sampling.repeat_last_n = -1;
  auto sink = std::make_shared<RecordingSink>();
  s.submit(req, sink);
  ASSERT_TRUE(sink->wait());
  EXPECT_NE(sink->tokens().at(0), 1500);  // 10 - 6 * 2 is below the background

  auto fresh = greedy({5}, 8);
  fresh.sampling.frequency_penalty = 2.0f;
  fresh.sampling.repeat_last_n = -1;
  auto sink2 = std::make_shared<RecordingSink>();
  s.submit(fresh, sink2);
  ASSERT_TRUE(sink2->wait());
  auto toks = sink2->tokens();
  EXPECT_EQ(toks.at(0), 1500);
  EXPECT_NE(std::count(toks.begin(), toks.end(), 1500), 8);  // generated tokens are penalised too
}

TEST(Scheduler, SameSeedSameTokensWhenBatched) {
  FakeModel m;
  Scheduler s(m, options(3));
  auto sampled = [](uint64_t seed) {
    auto r = greedy(range(100, 4), 20);
    r.sampling.temperature = 1.5f;
    r.sampling.top_k = 0;
    r.sampling.top_p = 1.0f;
    r.sampling.min_p = 0;
    r.sampling.seed = seed;
    return r;
  };
  auto a = std::make_shared<RecordingSink>(), b = std::make_shared<RecordingSink>(),
       c = std::make_shared<RecordingSink>();
  s.submit(sampled(1), a);
  s.submit(sampled(1), b);
  s.submit(sampled(2), c);
  for (auto& x : {a, b, c}) ASSERT_TRUE(x->wait());
  EXPECT_EQ(a->tokens(), b->tokens());
  EXPECT_NE(a->tokens(), c->tokens());
}

TEST(Scheduler, ModelErrorFailsOnlyThatBatch) {
  FakeModel m(2000, 256, 2);
  int runs = 0;
  m.fail_if = [&](const Batch&) { return ++runs == 3; };  // the step where both decode
  m.close_gate();
  Scheduler s(m, options(2));
  auto a = std::make_shared<RecordingSink>(), b = std::make_shared<RecordingSink>();
  s.submit(greedy(range(100, 4), 20), a);
  m.wait_started(1);
  s.submit(greedy(range(200, 4), 20), b);
  m.open_gate();
  for (auto& x : {a, b}) {
    ASSERT_TRUE(x->wait());
    expect_clean(*x);
    EXPECT_EQ(x->result().finish, FinishReason::Error);
    EXPECT_NE(x->result().error.find("scripted failure"), std::string::npos);
  }
  EXPECT_TRUE(m.kv(0).empty());
  EXPECT_TRUE(m.kv(1).empty());
  EXPECT_EQ(s.stats().requests_failed, 2u);
  EXPECT_EQ(s.stats().active, 0);

  // The scheduler keeps serving.
  auto c = std::make_shared<RecordingSink>();
  s.submit(greedy(range(300, 4), 3), c);
  ASSERT_TRUE(c->wait());
  EXPECT_EQ(c->result().finish, FinishReason::Length);
  EXPECT_EQ(c->tokens(), m.reference(range(300, 4), 3));
}

TEST(Scheduler, ModelErrorSparesRequestsOutsideTheBatch) {
  FakeModel m(2000, 256, 3);
  m.fail_if = [](const Batch& b) { return std::find(b.tokens.begin(), b.tokens.end(), 666) != b.tokens.end(); };
  m.close_gate();
  // One prompt token per step: the two prompts below are never in the same batch.
  Scheduler s(m, options(3, /*step_tokens=*/1));
  auto blocker = std::make_shared<RecordingSink>(), bad = std::make_shared<RecordingSink>(),
       good = std::make_shared<RecordingSink>();
  s.submit(greedy({1}, 1), blocker);
  m.wait_started(1);
  s.submit(greedy({666}, 3), bad);
  s.submit(greedy({5, 6, 7}, 3), good);
  m.open_gate();
  for (auto& x : {blocker, bad, good}) {
    ASSERT_TRUE(x->wait());
    expect_clean(*x);
  }
  EXPECT_EQ(bad->result().finish, FinishReason::Error);
  EXPECT_EQ(good->result().finish, FinishReason::Length);
  EXPECT_EQ(good->tokens(), m.reference({5, 6, 7}, 3));
}

TEST(Scheduler, DestructorCancelsQueuedAndRunning) {
  FakeModel m(2000, 256, 1);
  m.close_gate();
  auto s = std::make_unique<Scheduler>(m, options(1));
  auto a = std::make_shared<RecordingSink>(), b = std::make_shared<RecordingSink>();
  s->submit(greedy(range(100, 4), -1), a);
  m.wait_started(1);
  s->submit(greedy(range(200, 4), -1), b);
  std::thread opener([&] {
    std::this_thread::sleep_for(50ms);
    m.open_gate();
  });
  s.reset();
  opener.join();
  for (auto& x : {a, b}) {
    EXPECT_EQ(x->done_count(), 1);
    EXPECT_FALSE(x->token_after_done());
    EXPECT_EQ(x->result().finish, FinishReason::Cancelled);
  }
  EXPECT_TRUE(m.kv(0).empty());
}

TEST(Scheduler, SinksMayCallBackIntoTheScheduler) {
  FakeModel m;
  Scheduler s(m, options(2));
  auto second = std::make_shared<RecordingSink>();
  auto first = std::make_shared<RecordingSink>();
  Scheduler::Handle h2;
  first->before_done = [&] {
    h2 = s.submit(greedy(range(300, 3), 2), second);
    s.cancel(h2);
    s.stats();
  };
  s.submit(greedy(range(100, 3), 2), first);
  ASSERT_TRUE(first->wait());
  ASSERT_TRUE(second->wait());
  EXPECT_EQ(second->result().finish, FinishReason::Cancelled);
}

TEST(Scheduler, IdleWorkerDoesNotSpin) {
  FakeModel m;
  Scheduler s(m, options(2));
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(s.stats().steps, 0u);
  auto sink = std::make_shared<RecordingSink>();
  s.submit(greedy({1, 2}, 2), sink);
  ASSERT_TRUE(sink->wait());
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(s.stats().steps, 2u);
}

TEST(Scheduler, ConcurrentSubmitAndCancel) {
  FakeModel m(2000, 128, 4);
  Scheduler s(m, options(4, 16, /*max_queue=*/8));
  struct Entry {
    std::vector<int32_t> prompt;
    int max_tokens;
    std::shared_ptr<RecordingSink> sink;
  };
  std::mutex mu;
  std::vector<Entry> accepted;
  std::atomic<int> rejected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 40; ++i) {
        std::vector<int32_t> prompt(1 + rng() % 30);
        for (auto& id : prompt) id = 1 + rng() % 50;  // small alphabet: shared prefixes happen
        int max_tokens = 1 + rng() % 10;
        auto sink = std::make_shared<RecordingSink>();
        Scheduler::Handle h;
        try {
          h = s.submit(greedy(prompt, max_tokens), sink);
        } catch (const QueueFull&) {
          ++rejected;
          std::this_thread::sleep_for(1ms);
          continue;
        }
        {
          std::lock_guard lk(mu);
          accepted.push_back({prompt, max_tokens, sink});
        }
        switch (rng() % 3) {
          case 0: s.cancel(h); break;
          case 1:
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
            s.cancel(h);
            s.cancel(h);
            break;
          default: break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& e : accepted) {
    ASSERT_TRUE(e.sink->wait());
    expect_clean(*e.sink);
    auto r = e.sink->result();
    if (r.finish == FinishReason::Length) {
      EXPECT_EQ(e.sink->tokens(), m.reference(e.prompt, e.max_tokens));
    } else {
      EXPECT_EQ(r.finish, FinishReason::Cancelled);
    }
  }
  auto st = s.stats();
  EXPECT_EQ(st.requests_done, accepted.size());
  EXPECT_EQ(st.active, 0);
  EXPECT_EQ(st.queued, 0);
  EXPECT_EQ(accepted.size() + rejected.load(), 320u);
}

}  // namespace
}  // namespace llmesh

namespace llmesh {
namespace {

TEST(SchedulerBusyChunk, PromptChunkShrinksWhileOthersDecode) {
  test::FakeModel m(2000, 512, 2);
  SchedulerOptions o;
  o.n_parallel = 2;
  o.step_tokens = 64;
  o.busy_step_tokens = 8;
  m.close_gate();  // steps run only when permitted, so the first request is still decoding later
  Scheduler s(m, o);
  auto a = std::make_shared<test::RecordingSink>();
  GenerationRequest ra;
  ra.prompt = {1, 2, 3};
  ra.max_tokens = 200;
  ra.sampling.temperature = 0;
  s.submit(ra, a);
  m.permit(3);  // prefill, then two decode steps
  while (a->tokens().size() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto b = std::make_shared<test::RecordingSink>();
  GenerationRequest rb;
  for (int i = 0; i < 100; i++) rb.prompt.push_back(100 + i);
  rb.max_tokens = 2;
  rb.sampling.temperature = 0;
  s.submit(rb, b);
  m.open_gate();
  ASSERT_TRUE(b->wait());
  ASSERT_TRUE(a->wait());
  int steps_with_b_prompt = 0;
  for (const Batch& batch : m.batches()) {
    int prompt_tokens = 0;
    bool decode = false;
    for (int t = 0; t < batch.n_tokens(); ++t) {
      if (batch.tokens[t] >= 100 && batch.tokens[t] < 200) prompt_tokens++;
      if (batch.tokens[t] >= test::FakeModel::kGenBase) decode = true;
    }
    if (prompt_tokens == 0) continue;
    steps_with_b_prompt++;
    if (decode) {
      EXPECT_LE(prompt_tokens, 8);
    }
  }
  EXPECT_GE(steps_with_b_prompt, 100 / 8);
}

}  // namespace
}  // namespace llmesh
