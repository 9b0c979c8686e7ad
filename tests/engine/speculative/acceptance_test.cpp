// The speculative-sampling acceptance rule (speculative/acceptance.h): whatever the draft
// distribution q, the token that comes out is distributed as the target's p (chi-square over
// 200k draws per case), drafts are kept at rate sum_x min(p(x), q(x)), and greedy (p a point
// mass) is decided without touching the random generator.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "speculative/acceptance.h"

namespace llmesh {
namespace {

// Upper quantile of the chi-square distribution with `df` degrees of freedom at tail
// probability 1e-4 (Wilson-Hilferty; z = 3.719 is the standard normal's 1 - 1e-4 quantile).
// A little generous for small df, which is the safe side for a test.
double chi2_critical_1e4(int df) {
  const double z = 3.719;
  const double k = df;
  const double h = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - h + z * std::sqrt(h), 3.0);
}

// Draws `drafted` from q (or takes the point) with one generator and judges it with another;
// returns the output counts and the number of drafts kept.
struct Outcome {
  std::map<int32_t, long> counts;
  long accepted = 0;
  long n = 0;
};

Outcome simulate(const std::vector<TokenProb>& p, const std::vector<TokenProb>& q, int32_t point, long n,
                 uint64_t seed) {
  std::mt19937_64 draft_rng(seed);
  std::mt19937_64 rng(seed ^ 0xABCDEF12345ull);
  std::vector<double> w;
  for (const auto& t : q) w.push_back(t.p);
  std::discrete_distribution<size_t> pick(w.begin(), w.end());
  Outcome o;
  o.n = n;
  for (long i = 0; i < n; ++i) {
    const int32_t drafted = q.empty() ? point : q[pick(draft_rng)].id;
    const Verdict v = speculative_accept(p, drafted, q, rng);
    if (v.accepted) {
      ++o.accepted;
      EXPECT_EQ(v.token, drafted);
    }
    ++o.counts[v.token];
  }
  return o;
}

double prob_in(const std::vector<TokenProb>& d, int32_t id) {
  double s = 0;
  for (const auto& t : d)
    if (t.id == id) s += t.p;
  return s;
}

// Chi-square of the observed counts against p; every output must lie in p's support.
void expect_distributed_as(const Outcome& o, const std::vector<TokenProb>& p, const std::string& what) {
  for (const auto& [id, c] : o.counts) EXPECT_GT(prob_in(p, id), 0.0) << what << ": token " << id << " outside p";
  double stat = 0;
  int bins = 0;
  for (const auto& t : p) {
    const double expected = t.p * o.n;
    ASSERT_GE(expected, 5.0) << what << ": test design (expected count too small)";
    const auto it = o.counts.find(t.id);
    const double got = it == o.counts.end() ? 0.0 : static_cast<double>(it->second);
    stat += (got - expected) * (got - expected) / expected;
    ++bins;
  }
  ASSERT_GE(bins, 2);
  const double crit = chi2_critical_1e4(bins - 1);
  EXPECT_LT(stat, crit) << what << ": chi-square " << stat << " with " << bins - 1 << " df";
}

void expect_acceptance_rate(const Outcome& o, const std::vector<TokenProb>& p, const std::vector<TokenProb>& q,
                            int32_t point, const std::string& what) {
  double expected = 0;
  if (q.empty()) {
    expected = std::min(1.0, prob_in(p, point));
  } else {
    std::map<int32_t, double> ids;
    for (const auto& t : p) ids[t.id] = 0;
    for (const auto& t : q) ids[t.id] = 0;
    for (const auto& [id, unused] : ids) expected += std::min(prob_in(p, id), prob_in(q, id));
  }
  const double rate = static_cast<double>(o.accepted) / o.n;
  const double sd = std::sqrt(std::max(expected * (1 - expected), 1e-12) / o.n);
  EXPECT_NEAR(rate, expected, 6 * sd + 1e-6) << what;  // 1e-6: float probabilities
}

constexpr long kDraws = 200000;

const std::vector<TokenProb> kP = {{0, 0.5f}, {1, 0.3f}, {2, 0.2f}};

struct Case {
  const char* name;
  std::vector<TokenProb> p;
  std::vector<TokenProb> q;  // empty: point mass at `point`
  int32_t point;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class AcceptanceDistribution : public ::testing::TestWithParam<Case> {};

TEST_P(AcceptanceDistribution, OutputIsDistributedAsTargetAndKeptAtOverlapRate) {
  const Case& c = GetParam();
  uint64_t seed = 1234;
  for (char ch : std::string(c.name)) seed = seed * 131 + static_cast<unsigned char>(ch);
  const Outcome o = simulate(c.p, c.q, c.point, kDraws, seed);
  expect_distributed_as(o, c.p, c.name);
  expect_acceptance_rate(o, c.p, c.q, c.point, c.name);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AcceptanceDistribution,
    ::testing::Values(
        // q a point mass inside p's support: kept with probability p(point).
        Case{"point_in_support", kP, {}, 1},
        Case{"point_on_mode", kP, {}, 0},
        // A point outside the support: always rejected, the residual is p itself.
        Case{"point_outside_support", kP, {}, 7},
        // q disjoint from p: never kept.
        Case{"disjoint", kP, {{3, 0.6f}, {4, 0.4f}}, -1},
        // q == p: always kept.
        Case{"equal", kP, kP, -1},
        // q wider than p (mass on a token p excludes).
        Case{"wider", kP, {{0, 0.25f}, {1, 0.25f}, {2, 0.25f}, {3, 0.25f}}, -1},
        // q overlapping partly, peaked where p is not.
        Case{"skewed", kP, {{0, 0.1f}, {1, 0.6f}, {5, 0.3f}}, -1},
        // A larger, unsorted p against a flatter q listed in another order.
        Case{"six_tokens",
             {{10, 0.05f}, {11, 0.4f}, {12, 0.15f}, {13, 0.1f}, {14, 0.2f}, {15, 0.1f}},
             {{15, 0.3f}, {14, 0.1f}, {13, 0.2f}, {12, 0.2f}, {11, 0.1f}, {10, 0.1f}},
             -1}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(AcceptanceGreedy, PointMassTargetDecidesWithoutTheGenerator) {
  const std::vector<TokenProb> p = {{42, 1.0f}};
  const std::vector<TokenProb> q = {{42, 0.3f}, {7, 0.5f}, {9, 0.2f}};
  for (bool with_q : {false, true}) {
    std::span<const TokenProb> qs;
    if (with_q) qs = q;
    for (int32_t drafted : {42, 7, 9, 1234}) {
      if (with_q && drafted == 1234) continue;  // not a token q can draw
      std::mt19937_64 rng(99);
      const std::mt19937_64 before = rng;
      const Verdict v = speculative_accept(p, drafted, qs, rng);
      EXPECT_EQ(v.accepted, drafted == 42) << "drafted " << drafted << " q " << with_q;
      EXPECT_EQ(v.token, 42) << "drafted " << drafted << " q " << with_q;
      EXPECT_TRUE(rng == before) << "the generator advanced (drafted " << drafted << ", q " << with_q << ")";
      std::mt19937_64 copy = before;
      EXPECT_EQ(rng(), copy());
    }
  }
}

TEST(AcceptanceGreedy, CertainOutcomesDoNotDraw) {
  // p(x) >= q(x): kept for sure, no draw.
  std::mt19937_64 rng(5);
  const std::mt19937_64 before = rng;
  const std::vector<TokenProb> p = {{1, 0.6f}, {2, 0.4f}};
  const std::vector<TokenProb> q = {{1, 0.5f}, {2, 0.5f}};
  Verdict v = speculative_accept(p, 1, q, rng);
  EXPECT_TRUE(v.accepted);
  EXPECT_EQ(v.token, 1);
  EXPECT_TRUE(rng == before);
  // A point mass outside p's support is rejected; the residual is p itself.
  v = speculative_accept(p, 3, {}, rng);
  EXPECT_FALSE(v.accepted);
  EXPECT_TRUE(v.token == 1 || v.token == 2) << v.token;
  // p(x) < q(x) needs a draw; a rejection then leaves one token in the residual: certain.
  v = speculative_accept(p, 2, {}, rng);
  if (!v.accepted) {
    EXPECT_EQ(v.token, 1);
  }
  // Rejected with a single token left in the residual: no draw.
  const std::mt19937_64 before2 = rng;
  v = speculative_accept(std::vector<TokenProb>{{1, 1.0f}}, 3, {}, rng);
  EXPECT_FALSE(v.accepted);
  EXPECT_EQ(v.token, 1);
  EXPECT_TRUE(rng == before2);
}

TEST(AcceptanceEdge, EmptyTargetGivesNoToken) {
  std::mt19937_64 rng(1);
  const Verdict v = speculative_accept({}, 3, {}, rng);
  EXPECT_FALSE(v.accepted);
  EXPECT_EQ(v.token, -1);
}

TEST(AcceptanceEdge, SameSeedSameVerdicts) {
  const std::vector<TokenProb> q = {{0, 0.25f}, {1, 0.25f}, {2, 0.25f}, {3, 0.25f}};
  const Outcome a = simulate(kP, q, -1, 2000, 77);
  const Outcome b = simulate(kP, q, -1, 2000, 77);
  EXPECT_EQ(a.counts, b.counts);
  EXPECT_EQ(a.accepted, b.accepted);
}

}  // namespace
}  // namespace llmesh
