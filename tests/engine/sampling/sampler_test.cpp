#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "sampling/sampler.h"

namespace llmesh {
namespace {

std::vector<float> logits_of(std::vector<float> p) {
  for (auto& v : p) v = std::log(v);
  return p;
}

TEST(Sampler, GreedyPicksArgmax) {
  SamplingParams sp;
  sp.temperature = 0;
  Sampler s(sp, 4);
  std::vector<float> l = {0.1f, 2.0f, 1.9f, -1.0f};
  EXPECT_EQ(s.sample(l.data()), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingParams sp;
  sp.temperature = 1.0f;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0;
  sp.seed = 7;
  std::vector<float> l = logits_of({0.25f, 0.25f, 0.25f, 0.25f});
  Sampler a(sp, 4), b(sp, 4);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(l.data()), b.sample(l.data()));
}

TEST(Sampler, TemperatureOneMatchesTheDistribution) {
  SamplingParams sp;
  sp.temperature = 1.0f;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0;
  std::vector<float> p = {0.5f, 0.3f, 0.15f, 0.05f};
  auto l = logits_of(p);
  Sampler s(sp, 4);
  std::map<int, int> count;
  const int N = 40000;
  for (int i = 0; i < N; ++i) ++count[s.sample(l.data())];
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(count[i] / double(N), p[i], 0.015) << i;
}

TEST(Sampler, TopKTopPMinPFilter) {
  std::vector<float> l = logits_of({0.5f, 0.3f, 0.15f, 0.05f});
  SamplingParams sp;
  sp.temperature = 1.0f;
  sp.min_p = 0;
  sp.top_p = 1.0f;
  sp.top_k = 2;
  EXPECT_EQ(Sampler(sp, 4).distribution(l.data()).size(), 2u);
  sp.top_k = 0;
  sp.top_p = 0.75f;  // 0.5 + 0.3 passes 0.75
  auto d = Sampler(sp, 4).distribution(l.data());
  ASSERT_EQ(d.size(), 2u);
  EXPECT_NEAR(d[0].p, 0.5 / 0.8, 1e-5);  // renormalised over the kept mass
  sp.top_p = 1.0f;
  sp.min_p = 0.2f;  // keep p >= 0.1
  EXPECT_EQ(Sampler(sp, 4).distribution(l.data()).size(), 3u);
}

TEST(Sampler, PenaltiesDiscourageRepeats) {
  SamplingParams sp;
  sp.temperature = 0;
  sp.repeat_penalty = 2.0f;
  Sampler s(sp, 3);
  std::vector<float> l = {1.0f, 0.9f, 0.0f};
  EXPECT_EQ(s.sample(l.data()), 0);
  s.accept(0);
  EXPECT_EQ(s.sample(l.data()), 1);  // 1.0 / 2 < 0.9
  SamplingParams pp;
  pp.temperature = 0;
  pp.presence_penalty = 0.5f;
  Sampler s2(pp, 3);
  s2.accept(0);
  EXPECT_EQ(s2.sample(l.data()), 1);
}

TEST(Sampler, ValidationNamesTheProblem) {
  SamplingParams sp;
  sp.top_p = 0;
  EXPECT_NE(sp.validate().find("top_p"), std::string::npos);
  sp = {};
  sp.temperature = -1;
  EXPECT_NE(sp.validate().find("temperature"), std::string::npos);
  EXPECT_EQ(SamplingParams{}.validate(), "");
}

}  // namespace
}  // namespace llmesh
