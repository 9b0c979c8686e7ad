// Speculative sampling leaves the output distribution the target's own, statistically, on the
// real engine (stories260K-f32): the exact distribution of the first two generated tokens is
// computed from the model's logits (Sampler::distribution, temperature 1, top-k 8), and the
// tokens that thousands of speculating requests produce are chi-squared against it. The
// second token always comes out of the acceptance rule, drafted either by a draft model that
// samples from its own q (stories260K-q4_0) or by a point-mass proposer (q empty) that
// proposes the target's mode, its runner-up, or a token outside the support. Fixed seeds and
// a fixed admission order (every request is queued before the first step) make the run
// deterministic.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "../scheduler/fake_model.h"
#include "../scheduler/stories_engine.h"
#include "model/forward.h"
#include "scheduler/scheduler.h"
#include "speculative/model_draft.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace llmesh {
namespace {

using test::RecordingSink;
using Pair = std::pair<int32_t, int32_t>;

constexpr int kCtx = 64;
constexpr int kSlots = 4;
// A prompt with an uncertain continuation: about 55 of the 64 (t1, t2) pairs are likely enough
// to be counted on their own.
constexpr const char* kPrompt = "He saw a big";
constexpr const char* kPromptB = "The sun was shining and the birds were singing in the park";
constexpr int kRequests = 4000;

SamplingParams sampling(uint64_t seed) {
  SamplingParams sp;
  sp.temperature = 1.0f;
  sp.top_k = 8;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  sp.seed = seed;
  return sp;
}

struct Target : test::StoriesEngine {
  explicit Target(int n_seq, const std::string& file = "stories260K-f32.gguf") : StoriesEngine(n_seq, kCtx, file) {}
};

// A model's exact sampling distribution of the first two generated tokens.
struct Exact {
  std::vector<TokenProb> first;                      // p(t1)
  std::map<int32_t, std::vector<TokenProb>> second;  // p(t2 | t1), sorted most likely first
  std::map<Pair, double> joint;
};

// `firsts`: the t1 to condition on (default: the model's own support for t1).
Exact exact_distribution(const std::vector<int32_t>& prompt, const std::string& file = "stories260K-f32.gguf",
                         const std::vector<TokenProb>* firsts = nullptr) {
  Target t(1, file);
  const int n_vocab = t.n_vocab();
  Sampler sampler(sampling(1), n_vocab);
  Batch b;
  for (size_t i = 0; i < prompt.size(); ++i) b.add(prompt[i], static_cast<int32_t>(i), 0, i + 1 == prompt.size());
  std::span<const float> l = t.fwd->run(b);
  Exact e;
  e.first = sampler.distribution(l.data());
  for (const TokenProb& a : firsts ? *firsts : e.first) {
    t.cache->truncate(0, static_cast<int>(prompt.size()));
    b.clear();
    b.add(a.id, static_cast<int32_t>(prompt.size()), 0, true);
    l = t.fwd->run(b);
    e.second[a.id] = sampler.distribution(l.data());
    for (const TokenProb& c : e.second[a.id]) e.joint[{a.id, c.id}] += static_cast<double>(a.p) * c.p;
  }
  return e;
}

// A deterministic proposer (a point mass: q empty): after t1 it proposes the target's most
// likely next token, its runner-up, or a token the target's top-k excludes, by t1's rank.
class PointMassDraft : public DraftSource {
 public:
  PointMassDraft(const Exact& e, int n_vocab) {
    for (size_t r = 0; r < e.first.size(); ++r) {
      const int32_t t1 = e.first[r].id;
      const auto& p2 = e.second.at(t1);
      int32_t pick;
      if (r % 3 == 0 || p2.size() < 2) {
        pick = p2[0].id;
      } else if (r % 3 == 1) {
        pick = p2[1].id;
      } else {
        pick = 0;
        auto in_support = [&](int32_t id) {
          return std::any_of(p2.begin(), p2.end(), [&](const TokenProb& x) { return x.id == id; });
        };
        while (pick < n_vocab - 1 && in_support(pick)) ++pick;
      }
      proposal_[t1] = pick;
    }
  }
  std::string name() const override { return "point mass"; }
  // The chance a request's draft is kept: sum over t1 of p(t1) * p(proposal | t1).
  double expected_acceptance(const Exact& e) const {
    double a = 0;
    for (const TokenProb& t1 : e.first)
      for (const TokenProb& t2 : e.second.at(t1.id))
        if (t2.id == proposal_.at(t1.id)) a += static_cast<double>(t1.p) * t2.p;
    return a;
  }
  void propose(std::span<DraftTask* const> tasks) override {
    for (DraftTask* t : tasks) {
      t->tokens.clear();
      t->q.clear();
      auto it = proposal_.find(t->context.back());
      if (it == proposal_.end() || t->max_tokens < 1) continue;
      t->tokens.push_back(it->second);
    }
  }

 private:
  std::map<int32_t, int32_t> proposal_;
};

// The point mass for windows of two: after prompt B and its mode, drafts the target's most
// likely t2 and then the runner-up t3 after it; after prompt B, its mode and some t2 (a window
// of one, after a rejection), the mode, runner-up or an excluded token by t2's rank.
class TwoStepPointMass : public DraftSource {
 public:
  TwoStepPointMass(const Exact& e, size_t prompt_len, int32_t t1, int n_vocab)
      : e_(e), prompt_len_(prompt_len), t1_(t1), n_vocab_(n_vocab) {}
  std::string name() const override { return "point mass (two)"; }
  void propose(std::span<DraftTask* const> tasks) override {
    for (DraftTask* t : tasks) {
      t->tokens.clear();
      t->q.clear();
      const auto& c = t->context;
      if (c.size() <= prompt_len_ || c[prompt_len_] != t1_) continue;
      if (c.size() == prompt_len_ + 1) {
        const int32_t d1 = e_.first[0].id;
        t->tokens.push_back(d1);
        if (t->max_tokens >= 2) t->tokens.push_back(pick(e_.second.at(d1), 1));
      } else if (c.size() == prompt_len_ + 2) {
        const int32_t t2 = c.back();
        for (size_t r = 0; r < e_.first.size(); ++r)
          if (e_.first[r].id == t2) t->tokens.push_back(pick(e_.second.at(t2), static_cast<int>(r)));
      }
    }
  }

 private:
  int32_t pick(const std::vector<TokenProb>& d, int rank) const {
    if (rank % 3 == 0 || d.size() < 2) return d[0].id;
    if (rank % 3 == 1) return d[1].id;
    int32_t id = 0;
    while (id < n_vocab_ - 1 &&
           std::any_of(d.begin(), d.end(), [&](const TokenProb& x) { return x.id == id; }))
      ++id;
    return id;
  }
  const Exact& e_;
  size_t prompt_len_;
  int32_t t1_;
  int n_vocab_;
};

// Holds the first forward pass until the test has queued every request, so admission (and
// with it every batch and every draw) is the same on every run.
class GatedModel : public BatchModel {
 public:
  explicit GatedModel(BatchModel& inner) : inner_(inner) {}
  int n_vocab() const override { return inner_.n_vocab(); }
  int n_ctx() const override { return inner_.n_ctx(); }
  int n_slots() const override { return inner_.n_slots(); }
  std::span<const float> run(const Batch& b) override {
    {
      std::unique_lock lk(mu_);
      entered_ = true;
      cv_.notify_all();
      cv_.wait(lk, [&] { return open_; });
    }
    return inner_.run(b);
  }
  void truncate(int slot, int n) override { inner_.truncate(slot, n); }
  void wait_entered() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return entered_; });
  }
  void open() {
    std::lock_guard lk(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  BatchModel& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, open_ = false;
};

struct Sampled {
  std::map<Pair, long> counts;  // (t1, t2)
  std::vector<std::vector<int32_t>> outputs;
  SchedulerStats stats;
};

// kRequests sampled requests of `max_tokens` tokens with windows of up to `draft_max`.
Sampled run_requests(Target& t, DraftSource* draft, const std::vector<int32_t>& prompt, int max_tokens = 3,
                     int draft_max = 4) {
  GatedModel gated(*t.batch_model);
  SchedulerOptions o;
  o.n_parallel = kSlots;
  o.max_queue = kRequests + 8;
  o.draft = draft;
  o.window = WindowOptions{draft_max, false};
  Scheduler s(gated, o);
  // A blocker takes the first step; everything else is queued behind it.
  GenerationRequest blocker;
  blocker.prompt = prompt;
  blocker.max_tokens = 1;
  blocker.sampling.temperature = 0;
  auto blocker_sink = std::make_shared<RecordingSink>();
  s.submit(blocker, blocker_sink);
  gated.wait_entered();
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < kRequests; ++i) {
    GenerationRequest r;
    r.prompt = prompt;
    // Token 1 comes from the prompt's logits; with max_tokens 3 the window after it has room
    // for one draft, so token 2 always comes out of verification (token 3 is not looked at).
    r.max_tokens = max_tokens;
    r.sampling = sampling(0x5A5A0000ull + static_cast<uint64_t>(i) * 7919);
    sinks.push_back(std::make_shared<RecordingSink>());
    s.submit(std::move(r), sinks.back());
  }
  gated.open();
  Sampled out;
  EXPECT_TRUE(blocker_sink->wait(std::chrono::seconds(120)));
  for (auto& k : sinks) {
    EXPECT_TRUE(k->wait(std::chrono::seconds(120)));
    const auto tokens = k->tokens();
    EXPECT_EQ(tokens.size(), static_cast<size_t>(max_tokens));
    if (tokens.size() >= 2) ++out.counts[{tokens[0], tokens[1]}];
    out.outputs.push_back(tokens);
  }
  out.stats = s.stats();
  return out;
}

// Wilson-Hilferty: the chi-square quantile with `df` degrees of freedom at upper tail 1e-4.
double chi2_critical_1e4(int df) {
  const double z = 3.719, k = df, h = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - h + z * std::sqrt(h), 3.0);
}

// Chi-square of the observed pairs against the exact joint, bins with an expected count
// below 5 merged into one.
void expect_matches(const std::map<Pair, long>& counts, const Exact& e, const std::string& what) {
  long n = 0;
  for (const auto& [pr, c] : counts) {
    n += c;
    EXPECT_TRUE(e.joint.count(pr)) << what << ": (" << pr.first << ", " << pr.second
                                   << ") is outside the target's support";
  }
  ASSERT_GE(n, kRequests / 2) << what;
  std::vector<std::pair<double, double>> bins;  // expected, observed
  double rest_e = 0, rest_o = 0;
  for (const auto& [pr, p] : e.joint) {
    const double expected = p * n;
    const auto it = counts.find(pr);
    const double observed = it == counts.end() ? 0.0 : static_cast<double>(it->second);
    if (expected < 5) {
      rest_e += expected;
      rest_o += observed;
    } else {
      bins.push_back({expected, observed});
    }
  }
  if (rest_e > 0) {
    if (rest_e >= 5 || bins.empty()) {
      bins.push_back({rest_e, rest_o});
    } else {  // still too small on its own: into the smallest bin
      auto smallest = std::min_element(bins.begin(), bins.end());
      smallest->first += rest_e;
      smallest->second += rest_o;
    }
  }
  ASSERT_GE(bins.size(), 30u) << what << ": test design (too few bins to say anything)";
  double stat = 0;
  for (auto [ex, ob] : bins) stat += (ob - ex) * (ob - ex) / ex;
  const int df = static_cast<int>(bins.size()) - 1;
  EXPECT_LT(stat, chi2_critical_1e4(df)) << what << ": chi-square " << stat << " with " << df << " df";
  std::printf("[ %s ] chi-square %.1f, %d df (critical %.1f)\n", what.c_str(), stat, df, chi2_critical_1e4(df));
}

// Each request's one draft is kept independently with probability `rate`.
void expect_kept_as_expected(uint64_t kept, double rate, const std::string& what) {
  const double mean = rate * kRequests, sd = std::sqrt(kRequests * rate * (1 - rate));
  EXPECT_NEAR(static_cast<double>(kept), mean, 5 * sd + 1) << what << ": expected acceptance " << rate;
}

class SamplingDistribution : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Target t(1);
    prompt_ = new std::vector<int32_t>(t.tok->encode(kPrompt, true, false));
    exact_ = new Exact(exact_distribution(*prompt_));
    // For two-draft windows: a prompt whose first token is nearly certain (t1 = its mode for
    // ~97% of requests); (t2, t3) given that t1 come out of one window of two drafts, or of a
    // window of one after a rejection.
    prompt_b_ = new std::vector<int32_t>(t.tok->encode(kPromptB, true, false));
    const Exact b = exact_distribution(*prompt_b_);
    mode_b_ = b.first[0].id;
    mode_b_p_ = b.first[0].p;
    std::vector<int32_t> after = *prompt_b_;
    after.push_back(mode_b_);
    exact_b_ = new Exact(exact_distribution(after));
  }
  static void TearDownTestSuite() {
    delete prompt_;
    delete exact_;
    delete prompt_b_;
    delete exact_b_;
    prompt_ = prompt_b_ = nullptr;
    exact_ = exact_b_ = nullptr;
  }
  // (t2, t3) of the outputs whose t1 is the mode of prompt B.
  static std::map<Pair, long> after_mode(const Sampled& s) {
    std::map<Pair, long> c;
    for (const auto& o : s.outputs)
      if (o.size() >= 3 && o[0] == mode_b_) ++c[{o[1], o[2]}];
    return c;
  }
  static std::vector<int32_t>*prompt_, *prompt_b_;
  static Exact *exact_, *exact_b_;
  static int32_t mode_b_;
  static float mode_b_p_;
};
std::vector<int32_t>* SamplingDistribution::prompt_ = nullptr;
std::vector<int32_t>* SamplingDistribution::prompt_b_ = nullptr;
Exact* SamplingDistribution::exact_ = nullptr;
Exact* SamplingDistribution::exact_b_ = nullptr;
int32_t SamplingDistribution::mode_b_ = -1;
float SamplingDistribution::mode_b_p_ = 0;

TEST_F(SamplingDistribution, ExactJointIsAProperDistribution) {
  const Exact& e = *exact_;
  ASSERT_EQ(e.first.size(), 8u);
  double total = 0;
  for (const auto& [pr, p] : e.joint) total += p;
  EXPECT_NEAR(total, 1.0, 1e-4);
  EXPECT_LE(e.joint.size(), 64u);
  // Not degenerate: the test needs real uncertainty at both positions.
  EXPECT_LT(e.first[0].p, 0.5f);
  int likely = 0;
  for (const auto& [pr, p] : e.joint) likely += p * kRequests >= 5;
  EXPECT_GE(likely, 30);
}

TEST_F(SamplingDistribution, DraftModelKeepsTheTargetsDistribution) {
  Target t(kSlots);
  std::shared_ptr<const Model> d = Model::load(test::model_path("stories260K-q4_0.gguf"));
  ModelDraftOptions o;
  o.n_slots = kSlots;
  o.n_ctx = kCtx;
  ModelDraft draft(d, "stories260K-q4_0.gguf", t.pool, o);
  const Sampled s = run_requests(t, &draft, *prompt_);
  expect_matches(s.counts, *exact_, "draft model");
  const SchedulerStats& st = s.stats;
  EXPECT_EQ(st.spec_windows, static_cast<uint64_t>(kRequests)) << "every request verifies one window";
  EXPECT_EQ(st.spec_drafted, static_cast<uint64_t>(kRequests));
  EXPECT_GT(st.spec_accepted, 0u) << "no draft was accepted";
  EXPECT_LT(st.spec_accepted, st.spec_drafted) << "no draft was rejected: the rule was not exercised";
  // The draft's second token is drawn from its own q(. | t1): kept with probability
  // sum_x min(p(x | t1), q(x | t1)).
  const Exact q = exact_distribution(*prompt_, "stories260K-q4_0.gguf", &exact_->first);
  double expected = 0;
  for (const TokenProb& t1 : exact_->first) {
    const auto& p2 = exact_->second.at(t1.id);
    const auto& q2 = q.second.at(t1.id);
    double overlap = 0;
    for (const TokenProb& a : p2)
      for (const TokenProb& b : q2)
        if (a.id == b.id) overlap += std::min(a.p, b.p);
    expected += static_cast<double>(t1.p) * overlap;
  }
  expect_kept_as_expected(st.spec_accepted, expected, "draft model");
  std::printf("[ draft model ] %llu of %llu drafts kept\n", (unsigned long long)st.spec_accepted,
              (unsigned long long)st.spec_drafted);
}

TEST_F(SamplingDistribution, PointMassProposerKeepsTheTargetsDistribution) {
  Target t(kSlots);
  PointMassDraft draft(*exact_, t.n_vocab());
  const Sampled s = run_requests(t, &draft, *prompt_);
  expect_matches(s.counts, *exact_, "point mass");
  const SchedulerStats& st = s.stats;
  EXPECT_EQ(st.spec_windows, static_cast<uint64_t>(kRequests));
  EXPECT_GT(st.spec_accepted, 0u);
  EXPECT_LT(st.spec_accepted, st.spec_drafted);
  expect_kept_as_expected(st.spec_accepted, draft.expected_acceptance(*exact_), "point mass");
  std::printf("[ point mass ] %llu of %llu drafts kept\n", (unsigned long long)st.spec_accepted,
              (unsigned long long)st.spec_drafted);
}

TEST_F(SamplingDistribution, TwoDraftWindowsKeepTheTargetsDistribution) {
  // max_tokens 4, windows of up to 2: after t1, t2 and t3 are judged in one window (t3 after
  // an accepted t2: the rule applied to the row after a kept draft), or t2 in one window and
  // t3 in a window of one after a rejection.
  {
    Target t(kSlots);
    std::shared_ptr<const Model> d = Model::load(test::model_path("stories260K-q4_0.gguf"));
    ModelDraftOptions o;
    o.n_slots = kSlots;
    o.n_ctx = kCtx;
    ModelDraft draft(d, "stories260K-q4_0.gguf", t.pool, o);
    const Sampled s = run_requests(t, &draft, *prompt_b_, /*max_tokens=*/4, /*draft_max=*/2);
    const auto counts = after_mode(s);
    long n = 0;
    for (const auto& [pr, c] : counts) n += c;
    EXPECT_NEAR(static_cast<double>(n) / kRequests, mode_b_p_, 0.02);
    expect_matches(counts, *exact_b_, "draft model, windows of two");
    EXPECT_GT(s.stats.spec_drafted, s.stats.spec_windows) << "no window of two";
    EXPECT_GT(s.stats.spec_accepted, 0u);
    EXPECT_LT(s.stats.spec_accepted, s.stats.spec_drafted);
  }
  {
    Target t(kSlots);
    TwoStepPointMass draft(*exact_b_, prompt_b_->size(), mode_b_, t.n_vocab());
    const Sampled s = run_requests(t, &draft, *prompt_b_, /*max_tokens=*/4, /*draft_max=*/2);
    expect_matches(after_mode(s), *exact_b_, "point mass, windows of two");
    EXPECT_GT(s.stats.spec_drafted, s.stats.spec_windows) << "no window of two";
    EXPECT_GT(s.stats.spec_accepted, 0u);
    EXPECT_LT(s.stats.spec_accepted, s.stats.spec_drafted);
  }
}

}  // namespace
}  // namespace llmesh
