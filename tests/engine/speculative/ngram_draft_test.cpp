// Prompt lookup (speculative/ngram_draft.h): the longest matching suffix n-gram's most recent
// earlier occurrence is continued; a match that runs into the present repeats cyclically; the
// per-slot index follows the slot's sequence as it grows and is rebuilt when it changes.
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "speculative/ngram_draft.h"

namespace llmesh {
namespace {

using V = std::vector<int32_t>;

V look(NgramDraft& d, const V& ctx, int max_tokens, int slot = 0) { return d.lookup(slot, ctx, max_tokens); }

TEST(NgramDraft, ContinuesTheEarlierOccurrenceOfTheSuffix) {
  NgramDraft d;  // n 2..4
  // [1 2 3] occurred at the start; the suffix [1 2 3] continues with 4 5 ...
  EXPECT_EQ(look(d, {1, 2, 3, 4, 5, 9, 1, 2, 3}, 3), (V{4, 5, 9}));
}

TEST(NgramDraft, NothingWithoutAMatchOrContext) {
  NgramDraft d;
  EXPECT_TRUE(look(d, {1, 2, 3, 4, 5, 6}, 4).empty());
  NgramDraft e;
  EXPECT_TRUE(look(e, {}, 4, 1).empty());
  EXPECT_TRUE(look(e, {7}, 4, 2).empty());
  EXPECT_TRUE(look(e, {7, 7}, 4, 3).empty());  // a bigram has no earlier occurrence in 2 tokens
  // Only a unigram repeats: below n_min = 2.
  NgramDraft f;
  EXPECT_TRUE(look(f, {5, 1, 2, 5}, 4).empty());
  // With n_min = 1 it proposes.
  NgramDraft g(NgramOptions{4, 1});
  EXPECT_EQ(look(g, {5, 1, 2, 5}, 2), (V{1, 2}));
}

TEST(NgramDraft, RespectsMaxTokens) {
  NgramDraft d;
  const V ctx = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2};
  EXPECT_EQ(look(d, ctx, 1), (V{3}));
  EXPECT_EQ(look(d, ctx, 4), (V{3, 4, 5, 6}));
  EXPECT_TRUE(look(d, ctx, 0).empty());
  EXPECT_TRUE(look(d, ctx, -3).empty());
}

TEST(NgramDraft, LongestMatchWins) {
  NgramDraft d;
  // Bigram [8 9] last occurred before 50, but the 3-gram [7 8 9] only before 40: longer wins,
  // even though the bigram's occurrence is more recent.
  const V ctx = {7, 8, 9, 40, 41, 1, 8, 9, 50, 51, 2, 7, 8, 9};
  EXPECT_EQ(look(d, ctx, 2), (V{40, 41}));
  // With n_max = 2 only bigrams count: the most recent [8 9] wins.
  NgramDraft b(NgramOptions{2, 2});
  EXPECT_EQ(look(b, ctx, 2), (V{50, 51}));
}

TEST(NgramDraft, MostRecentOccurrenceWins) {
  NgramDraft d;
  const V ctx = {1, 2, 10, 0, 1, 2, 20, 0, 1, 2};
  // [0 1 2] occurred once, before 20; [1 2] twice, last before 20 too.
  EXPECT_EQ(look(d, ctx, 1), (V{20}));
  NgramDraft b(NgramOptions{2, 2});
  const V ctx2 = {1, 2, 10, 5, 1, 2, 20, 6, 1, 2};
  EXPECT_EQ(look(b, ctx2, 1), (V{20}));
}

TEST(NgramDraft, AMatchThatRunsIntoThePresentRepeatsCyclically) {
  NgramDraft d;
  EXPECT_EQ(look(d, {5, 6, 7, 5, 6, 7, 5, 6}, 7), (V{7, 5, 6, 7, 5, 6, 7}));
  NgramDraft e;
  // Period 1: a run of one token.
  EXPECT_EQ(look(e, {3, 9, 9, 9}, 4), (V{9, 9, 9, 9}));
}

TEST(NgramDraft, IndexGrowsWithTheSequence) {
  NgramDraft d;
  V ctx = {1, 2, 3, 4};
  EXPECT_TRUE(look(d, ctx, 3).empty());
  // The sequence grows (the same slot): new n-grams are indexed and found.
  ctx.insert(ctx.end(), {8, 3, 4});
  EXPECT_EQ(look(d, ctx, 2), (V{8, 3}));
  ctx.insert(ctx.end(), {6, 8});
  // [8] alone is below n_min; [6 8] never occurred: nothing.
  EXPECT_TRUE(look(d, ctx, 2).empty());
  ctx.push_back(3);
  // [8 3] occurred at positions 4..5, followed by 4 6 8.
  EXPECT_EQ(look(d, ctx, 3), (V{4, 6, 8}));
  // Growing one token at a time gives what a fresh index over the whole sequence gives.
  NgramDraft fresh;
  EXPECT_EQ(look(fresh, ctx, 3), (V{4, 6, 8}));
}

TEST(NgramDraft, IndexIsRebuiltForAnotherSequence) {
  NgramDraft d;
  EXPECT_EQ(look(d, {1, 2, 3, 9, 1, 2}, 2), (V{3, 9}));
  // The slot now holds an unrelated sequence: the old n-grams are gone.
  EXPECT_TRUE(look(d, {50, 51, 1, 2}, 2).empty());
  // Sharing a prefix with the old one, then diverging (a rollback): old n-grams past the
  // divergence are gone, those in the shared prefix still count.
  NgramDraft e;
  EXPECT_EQ(look(e, {1, 2, 3, 9, 1, 2}, 2), (V{3, 9}));
  EXPECT_TRUE(look(e, {1, 2, 7, 9, 3}, 2).empty());
  EXPECT_EQ(look(e, {1, 2, 7, 9, 3, 1, 2}, 2), (V{7, 9}));
  // A shorter sequence than what was indexed (a truncated slot).
  EXPECT_TRUE(look(e, {1, 2}, 2).empty());
  EXPECT_EQ(look(e, {1, 2, 5, 1, 2}, 2), (V{5, 1}));
}

TEST(NgramDraft, SlotsAreIndependent) {
  NgramDraft d;
  EXPECT_EQ(look(d, {1, 2, 3, 1, 2}, 1, 0), (V{3}));
  EXPECT_EQ(look(d, {1, 2, 4, 1, 2}, 1, 3), (V{4}));
  EXPECT_EQ(look(d, {1, 2, 3, 1, 2}, 1, 0), (V{3}));
  EXPECT_EQ(look(d, {1, 2, 4, 1, 2}, 1, 3), (V{4}));
  d.release(0);
  EXPECT_EQ(look(d, {1, 2, 3, 1, 2}, 1, 0), (V{3}));
  EXPECT_THROW(look(d, {1, 2}, 1, -1), std::invalid_argument);
}

TEST(NgramDraft, ProposeFillsTasksWithPointMasses) {
  NgramDraft d;
  const V a = {1, 2, 3, 1, 2}, b = {4, 5, 6};
  DraftTask ta, tb;
  ta.slot = 0;
  ta.context = a;
  ta.max_tokens = 2;
  ta.q.push_back({TokenProb{1, 1.0f}});  // stale output from an earlier step: cleared
  tb.slot = 1;
  tb.context = b;
  tb.max_tokens = 3;
  tb.tokens = {99};
  DraftTask* tasks[] = {&ta, &tb};
  d.propose(tasks);
  EXPECT_EQ(ta.tokens, (V{3, 1}));
  EXPECT_TRUE(ta.q.empty());
  EXPECT_TRUE(tb.tokens.empty());
  EXPECT_TRUE(tb.q.empty());
  EXPECT_EQ(d.name(), "ngram");
}

TEST(NgramDraft, LongSequencesMatchAFreshIndex) {
  // Grown token by token in one slot vs. looked up fresh each time: same proposals (the
  // incremental index and collision checks are invisible).
  NgramDraft grown;
  V ctx;
  uint32_t x = 12345;
  for (int i = 0; i < 400; ++i) {
    x = x * 1103515245u + 12345u;
    // A small alphabet with repeated phrases: many matches of every length.
    ctx.push_back(i % 50 < 25 ? static_cast<int32_t>((x >> 16) % 6) : ctx[i - 25]);
    if (i % 7 != 0) continue;
    NgramDraft fresh;
    EXPECT_EQ(look(grown, ctx, 5), look(fresh, ctx, 5)) << "at length " << ctx.size();
  }
}

TEST(NgramDraft, InvalidOptionsThrow) {
  EXPECT_THROW(NgramDraft(NgramOptions{4, 0}), std::invalid_argument);
  EXPECT_THROW(NgramDraft(NgramOptions{2, 3}), std::invalid_argument);
  EXPECT_THROW(NgramDraft(NgramOptions{17, 2}), std::invalid_argument);
  EXPECT_THROW(NgramDraft(NgramOptions{4, -1}), std::invalid_argument);
  EXPECT_NO_THROW(NgramDraft(NgramOptions{16, 1}));
  EXPECT_NO_THROW(NgramDraft(NgramOptions{1, 1}));
}

}  // namespace
}  // namespace llmesh
