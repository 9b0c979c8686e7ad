#include <random>

#include <gtest/gtest.h>

#include "output/output_parser.h"
#include "parser_harness.h"

namespace llmesh::api::test {
namespace {

struct StopResult {
  std::string text;
  bool matched;
  std::string which;
};

StopResult run_stops(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  StopMatcher m(stops);
  StopResult r;
  for (const auto& p : pieces) r.text += m.feed(p);
  r.text += m.finish();
  r.matched = m.matched();
  r.which = m.matched_string();
  return r;
}

// Whole, character by character and random splits must agree.
StopResult run_every_way(const std::vector<std::string>& stops, const std::string& text) {
  StopResult whole = run_stops(stops, {text});
  std::vector<std::vector<std::string>> splits = {split_chars(text)};
  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) splits.push_back(split_random(text, rng));
  for (const auto& pieces : splits) {
    StopResult r = run_stops(stops, pieces);
    EXPECT_EQ(r.text, whole.text) << text;
    EXPECT_EQ(r.matched, whole.matched) << text;
    EXPECT_EQ(r.which, whole.which) << text;
  }
  return whole;
}

TEST(StopMatcher, StopSplitAcrossPieces) {
  StopMatcher m({"<END>"});
  EXPECT_EQ(m.feed("Hello <E"), "Hello ");
  EXPECT_FALSE(m.matched());
  EXPECT_EQ(m.feed("N"), "");
  EXPECT_EQ(m.feed("D> more"), "");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(m.matched_string(), "<END>");
  EXPECT_EQ(m.feed("ignored"), "");
  EXPECT_EQ(m.finish(), "");
}

TEST(StopMatcher, FalseStartIsReleased) {
  StopMatcher m({"<END>"});
  EXPECT_EQ(m.feed("a <E"), "a ");
  EXPECT_EQ(m.feed("x"), "<Ex");
  EXPECT_EQ(m.feed("<"), "");
  EXPECT_EQ(m.finish(), "<");
  EXPECT_FALSE(m.matched());
  EXPECT_EQ(m.matched_string(), "");
}

TEST(StopMatcher, StopAtTheVeryStart) {
  auto r = run_every_way({"###"}, "### heading");
  EXPECT_TRUE(r.matched);
  EXPECT_EQ(r.text, "");
}

TEST(StopMatcher, OverlappingStops) {
  // The stop that completes first wins, however the text is split.
  auto r = run_every_way({"abcdef", "bcd"}, "xxabcdefyy");
  EXPECT_EQ(r.text, "xxa");
  EXPECT_EQ(r.which, "bcd");
  // Two that end together: the longer one.
  r = run_every_way({"cd", "abcd"}, "zabcd");
  EXPECT_EQ(r.text, "z");
  EXPECT_EQ(r.which, "abcd");
  // A stop whose prefix repeats inside itself.
  r = run_every_way({"aab"}, "aaaab!");
  EXPECT_EQ(r.text, "aa");
  EXPECT_TRUE(r.matched);
}

TEST(StopMatcher, NoMatchReturnsEverything) {
  auto r = run_every_way({"STOP", "\n\n"}, "line one\nline two STO");
  EXPECT_FALSE(r.matched);
  EXPECT_EQ(r.text, "line one\nline two STO");
}

TEST(StopMatcher, NoStopsPassesThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.feed("abc"), "abc");
  StopMatcher empty_only({""});
  EXPECT_EQ(empty_only.feed("abc"), "abc");
  EXPECT_FALSE(empty_only.matched());
}

TEST(StopMatcher, Unicode) {
  auto r = run_every_way({"世界", "🎉"}, "Hello 世 and 世界!");
  EXPECT_EQ(r.text, "Hello 世 and ");
  EXPECT_EQ(r.which, "世界");
}

TEST(StopMatcher, HoldsOnlyWhatCouldStillMatch) {
  StopMatcher m({"Observation:"});
  EXPECT_EQ(m.feed("The result is 4. Obs"), "The result is 4. ");
  EXPECT_EQ(m.feed("erve"), "Observe");
}

TEST(StopMatcher, LongInputStreamsInLinearTime) {
  StopMatcher m({"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz!", "STOP"});
  std::string out;
  for (int i = 0; i < (1 << 20); ++i) out += m.feed("z");
  out += m.feed("STOP");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(out, std::string(1 << 20, 'z'));
}

}  // namespace
}  // namespace llmesh::api::test
