// The speculative window (speculative/window_policy.h): without adaptation draft_max capped by
// the room left; with it, long windows when a step's fixed cost dominates (a pipeline's round
// trip), short ones (at most one, or none: plain decoding) when every token costs, the draft
// is expensive or drafts are never kept. No clocks: costs are fed in by hand.
#include <algorithm>
#include <limits>

#include <gtest/gtest.h>

#include "speculative/window_policy.h"

namespace llmesh {
namespace {

TEST(WindowPolicy, NonAdaptiveIsDraftMaxCappedByRoom) {
  WindowPolicy p(WindowOptions{6, false});
  for (double a : {0.0, 0.3, 1.0}) {
    EXPECT_EQ(p.choose(a, 100), 6);
    EXPECT_EQ(p.choose(a, 6), 6);
    EXPECT_EQ(p.choose(a, 3), 3);
    EXPECT_EQ(p.choose(a, 1), 1);
    EXPECT_EQ(p.choose(a, 0), 0);
    EXPECT_EQ(p.choose(a, -5), 0);
  }
  // Observations change nothing without adaptation.
  for (int i = 0; i < 50; ++i) p.observe_step(1 + i % 9, 0.001 * (1 + i % 9));
  p.observe_draft(1, 10.0);
  EXPECT_EQ(p.choose(0.0, 100), 6);
}

TEST(WindowPolicy, NoRoomMeansNoWindowEvenAdaptive) {
  WindowPolicy p(WindowOptions{8, true});
  EXPECT_EQ(p.choose(0.9, 0), 0);
  EXPECT_EQ(p.choose(0.9, -1), 0);
  EXPECT_GE(p.choose(0.9, 1), 1);
  EXPECT_LE(p.choose(0.9, 1), 1);
}

TEST(WindowPolicy, DraftMaxIsAtLeastOne) {
  WindowPolicy p(WindowOptions{0, false});
  EXPECT_EQ(p.options().draft_max, 1);
  EXPECT_EQ(p.choose(0.5, 10), 1);
}

void feed_round_trip(WindowPolicy& p, int rounds = 20) {
  // A pipeline: 20 ms per step whatever its size, plus 0.1 ms per token.
  for (int r = 0; r < rounds; ++r)
    for (int n = 1; n <= 9; ++n) p.observe_step(n, 0.020 + 0.0001 * n);
}

TEST(WindowPolicy, FixedCostDominatingBuysTheLongestWindow) {
  WindowPolicy p(WindowOptions{8, true});
  feed_round_trip(p);
  EXPECT_NEAR(p.step_base(), 0.020, 0.002);
  EXPECT_NEAR(p.step_per_token(), 0.0001, 0.0001);
  EXPECT_EQ(p.choose(0.7, 100), 8);
  EXPECT_EQ(p.choose(0.7, 5), 5);  // still capped by room
  EXPECT_EQ(p.choose(0.9, 100), 8);
}

TEST(WindowPolicy, PerTokenCostGivesShortWindows) {
  WindowPolicy p(WindowOptions{8, true});
  for (int r = 0; r < 20; ++r)
    for (int n = 1; n <= 9; ++n) p.observe_step(n, 0.001 * n);
  EXPECT_GT(p.step_per_token(), 0.0005);
  const int k = p.choose(0.5, 100);
  EXPECT_GE(k, 0);
  EXPECT_LE(k, 2);
  // Very predictable text still earns a window, and one at least as long.
  EXPECT_GE(p.choose(0.95, 100), std::max(k, 1));
  EXPECT_LT(p.choose(0.95, 100), 8);
}

TEST(WindowPolicy, ExpensiveDraftShrinksTheWindow) {
  WindowPolicy p(WindowOptions{8, true});
  feed_round_trip(p);
  const int cheap = p.choose(0.7, 100);
  EXPECT_EQ(cheap, 8);
  p.observe_draft(1, 0.050);  // a draft step costs more than two target steps
  EXPECT_NEAR(p.draft_step(), 0.050, 1e-9);
  const int costly = p.choose(0.7, 100);
  EXPECT_LT(costly, cheap);
  EXPECT_LE(costly, 1);  // a draft step dearer than two target steps: one token, or none
  // The draft cost is per step: 4 steps in 0.2 s is the same 50 ms each.
  WindowPolicy q(WindowOptions{8, true});
  feed_round_trip(q);
  q.observe_draft(4, 0.200);
  EXPECT_NEAR(q.draft_step(), 0.050, 1e-9);
  EXPECT_EQ(q.choose(0.7, 100), costly);
}

TEST(WindowPolicy, ZeroAcceptanceDraftsAtMostOne) {
  // Nothing is ever kept: a longer window only costs. At most one token (to keep measuring;
  // or none, and the scheduler probes now and then).
  WindowPolicy p(WindowOptions{8, true});
  EXPECT_LE(p.choose(0.0, 100), 1);  // before any observation
  feed_round_trip(p);
  EXPECT_LE(p.choose(0.0, 100), 1);
  // Out-of-range acceptance is clamped.
  EXPECT_LE(p.choose(-3.0, 100), 1);
  EXPECT_GE(p.choose(-3.0, 100), 0);
  EXPECT_EQ(p.choose(7.0, 100), 8);
}

TEST(WindowPolicy, WindowGrowsWithAcceptance) {
  WindowPolicy p(WindowOptions{16, true});
  feed_round_trip(p);
  p.observe_draft(1, 0.002);
  int last = 0;
  for (double a : {0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0}) {
    const int k = p.choose(a, 100);
    EXPECT_GE(k, last) << "acceptance " << a;
    EXPECT_GE(k, 0);
    EXPECT_LE(k, 16);
    last = k;
  }
  EXPECT_EQ(p.choose(1.0, 100), 16);
}

TEST(WindowPolicy, BadObservationsAreIgnored) {
  WindowPolicy p(WindowOptions{8, true});
  feed_round_trip(p);
  const double base = p.step_base(), slope = p.step_per_token();
  p.observe_step(0, 5.0);
  p.observe_step(-1, 5.0);
  p.observe_step(4, -1.0);
  p.observe_step(4, std::numeric_limits<double>::quiet_NaN());
  p.observe_step(4, std::numeric_limits<double>::infinity());
  p.observe_step(1000, 100.0);  // a long prefill chunk: not the steps speculation makes
  EXPECT_DOUBLE_EQ(p.step_base(), base);
  EXPECT_DOUBLE_EQ(p.step_per_token(), slope);
  p.observe_draft(0, 1.0);
  p.observe_draft(2, std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(p.draft_step(), 0.0);
  EXPECT_EQ(p.choose(0.7, 100), 8);
}

TEST(AcceptanceEstimate, StartsAtThePriorAndMovesTowardObservedRates) {
  AcceptanceEstimate e;
  EXPECT_DOUBLE_EQ(e.rate(), 0.5);
  for (int i = 0; i < 100; ++i) e.update(4, 4);
  EXPECT_GT(e.rate(), 0.95);
  EXPECT_LE(e.rate(), 1.0);
  for (int i = 0; i < 100; ++i) e.update(4, 0);
  EXPECT_LT(e.rate(), 0.05);
  EXPECT_GE(e.rate(), 0.0);
  // A steady 3 of 4 kept (then one rejection judged): 3 of 4 judged.
  AcceptanceEstimate f(0.5, 2.0);
  for (int i = 0; i < 200; ++i) f.update(4, 3);
  EXPECT_NEAR(f.rate(), 0.75, 0.01);
  // One unlucky window does not shut speculation off.
  AcceptanceEstimate g;
  g.update(8, 0);
  EXPECT_GT(g.rate(), 0.2);
}

TEST(AcceptanceEstimate, EachUpdateMovesTheRightWay) {
  AcceptanceEstimate e(0.5, 2.0);
  double last = e.rate();
  for (int i = 0; i < 10; ++i) {
    e.update(3, 3);
    EXPECT_GE(e.rate(), last);
    last = e.rate();
  }
  for (int i = 0; i < 10; ++i) {
    e.update(3, 0);
    EXPECT_LE(e.rate(), last);
    last = e.rate();
  }
}

TEST(AcceptanceEstimate, StaysInUnitIntervalAndIgnoresEmptyWindows) {
  AcceptanceEstimate e(0.5, 2.0);
  e.update(0, 0);
  e.update(-2, 5);
  EXPECT_DOUBLE_EQ(e.rate(), 0.5);
  for (int i = 0; i < 50; ++i) e.update(2, 10);  // more kept than drafted: clamped
  EXPECT_LE(e.rate(), 1.0);
  EXPECT_GT(e.rate(), 0.9);
  for (int i = 0; i < 50; ++i) e.update(2, -4);
  EXPECT_GE(e.rate(), 0.0);
  EXPECT_LT(e.rate(), 0.1);
  AcceptanceEstimate odd(1.5, 2.0);  // a prior outside [0, 1] still reads in range
  EXPECT_LE(odd.rate(), 1.0);
}

}  // namespace
}  // namespace llmesh
