// ForcedAcceptanceDraft (the benchmarking aid behind `llmesh bench --spec-accept`): the inner
// proposer still runs, rate 1 proposes the reference continuation, rate 0 never does, rates in
// between are met per token, and through the scheduler (FakeModel) greedy output is unchanged
// while the measured acceptance follows the forced rate.
#include <memory>

#include <gtest/gtest.h>

#include "../scheduler/fake_model.h"
#include "scheduler/scheduler.h"
#include "speculative/forced_draft.h"

namespace llmesh {
namespace {

// Proposes max_tokens copies of one token and counts its calls.
struct StubDraft : DraftSource {
  int calls = 0;
  int32_t token = 7;
  std::string name() const override { return "stub"; }
  void propose(std::span<DraftTask* const> tasks) override {
    ++calls;
    for (DraftTask* t : tasks) t->tokens.assign(t->max_tokens, token);
  }
};

constexpr int kVocab = 100;

std::vector<int32_t> make_reference(int n) {
  std::vector<int32_t> r;
  for (int i = 0; i < n; ++i) r.push_back((i * 37 + 11) % kVocab);
  return r;
}

// Proposes a window of k after a context of prompt_len + generated tokens.
std::vector<int32_t> propose(ForcedAcceptanceDraft& d, int prompt_len, int generated, int k) {
  std::vector<int32_t> context(prompt_len + generated, 1);
  DraftTask t;
  t.context = context;
  t.max_tokens = k;
  DraftTask* tasks[] = {&t};
  d.propose(tasks);
  return t.tokens;
}

TEST(ForcedDraft, RateOneProposesTheReferenceAtTheRightPosition) {
  StubDraft inner;
  const auto ref = make_reference(50);
  ForcedAcceptanceDraft d(inner, ref, 5, 1.0, kVocab);
  // prompt 5 + 3 generated (the last about to be fed): the next token is reference[3].
  EXPECT_EQ(propose(d, 5, 3, 4), std::vector<int32_t>(ref.begin() + 3, ref.begin() + 7));
  EXPECT_EQ(inner.calls, 1);  // the inner proposer ran: its cost is paid
  // Cut where the reference ends.
  EXPECT_EQ(propose(d, 5, 48, 8), std::vector<int32_t>(ref.begin() + 48, ref.end()));
  EXPECT_TRUE(propose(d, 5, 50, 8).empty());
  EXPECT_EQ(inner.calls, 3);
}

TEST(ForcedDraft, RateZeroNeverProposesTheReference) {
  StubDraft inner;
  const auto ref = make_reference(200);
  inner.token = ref[10];  // the inner draft is right here: it must still be replaced
  ForcedAcceptanceDraft d(inner, ref, 3, 0.0, kVocab);
  for (int g = 1; g < 190; ++g) {
    auto toks = propose(d, 3, g, 8);
    ASSERT_EQ(toks.size(), 8u);
    for (size_t i = 0; i < toks.size(); ++i) {
      EXPECT_NE(toks[i], ref[g + i]);
      EXPECT_GE(toks[i], 0);
      EXPECT_LT(toks[i], kVocab);
    }
  }
  EXPECT_EQ(d.forced_right(), 0u);
}

TEST(ForcedDraft, IntermediateRatesAreMetPerToken) {
  for (double rate : {0.3, 0.5, 0.9}) {
    StubDraft inner;
    const auto ref = make_reference(4000);
    ForcedAcceptanceDraft d(inner, ref, 1, rate, kVocab, 42);
    int right = 0, total = 0;
    for (int g = 1; g + 8 <= 4000; g += 8) {
      auto toks = propose(d, 1, g, 8);
      for (size_t i = 0; i < toks.size(); ++i, ++total) right += toks[i] == ref[g + i];
    }
    EXPECT_NEAR(double(right) / total, rate, 0.03) << "rate " << rate;
    EXPECT_EQ(d.forced_right(), static_cast<uint64_t>(right));
  }
}

TEST(ForcedDraft, SchedulerKeepsGreedyOutputAndAcceptanceFollowsTheRate) {
  const std::vector<int32_t> prompt = {1, 2, 3, 4};
  const int n = 120;
  for (double rate : {0.0, 0.5, 1.0}) {
    test::FakeModel model(2000, 256, 1);
    const auto ref = model.reference(prompt, n);
    StubDraft inner;
    ForcedAcceptanceDraft d(inner, ref, static_cast<int>(prompt.size()), rate, model.n_vocab());
    SchedulerOptions o;
    o.n_parallel = 1;
    o.draft = &d;
    o.window.draft_max = 4;
    o.window.adaptive = false;
    Scheduler s(model, o);
    auto sink = std::make_shared<test::RecordingSink>();
    GenerationRequest r;
    r.prompt = prompt;
    r.max_tokens = n;
    r.sampling.temperature = 0;
    s.submit(r, sink);
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->tokens(), ref) << "rate " << rate;
    const SchedulerStats st = s.stats();
    ASSERT_GT(st.spec_drafted, 0u);
    const double acc = double(st.spec_accepted) / st.spec_drafted;
    if (rate == 0.0) EXPECT_EQ(st.spec_accepted, 0u);
    if (rate == 1.0) EXPECT_EQ(st.spec_accepted, st.spec_drafted);
    // Window-level acceptance counts drafts after a rejection as drafted: below the per-token rate.
    if (rate == 0.5) EXPECT_GT(acc, 0.1);
    EXPECT_GT(inner.calls, 0);
  }
}

}  // namespace
}  // namespace llmesh
