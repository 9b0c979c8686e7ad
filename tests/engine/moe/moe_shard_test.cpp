// Expert shards in the engine (docs/moe.md): a model loaded with some experts per layer routes
// only among them, renormalised, and equals the full model under the same restriction; the
// copied-expert MoE equals the dense model whichever experts a shard holds; routing statistics
// add up; bad shards are refused with clear errors.
#include <cmath>
#include <numeric>

#include <gtest/gtest.h>

#include "model/forward.h"
#include "test_paths.h"

namespace llmesh {
namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 300, 271, 290};

struct Engine {
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  ThreadPool pool{2};
  std::unique_ptr<Forward> fwd;
  explicit Engine(const std::string& file, std::vector<std::vector<int>> experts = {}) {
    ModelOptions mo;
    mo.experts = std::move(experts);
    model = Model::load(test::model_path(file), mo);
    KvCacheOptions kv;
    kv.n_ctx = 64;
    kv.n_seq = 1;
    cache = std::make_unique<KvCache>(model->config(), 0, model->config().n_layer, kv);
    fwd = std::make_unique<Forward>(*model, *cache, pool);
  }
  std::vector<float> logits(const std::vector<int32_t>& ids = kPrompt) {
    cache->clear(0);
    Batch b;
    for (size_t i = 0; i < ids.size(); ++i) b.add(ids[i], static_cast<int>(i), 0, true);
    auto out = fwd->run(b);
    return {out.begin(), out.end()};
  }
};

const char* kNoisy = "stories260K-moe4x2-noisy-f32.gguf";
const char* kCopies = "stories260K-moe4x2-f32.gguf";

std::vector<std::vector<int>> same_every_layer(std::vector<int> e, int n_layer = 5) {
  return std::vector<std::vector<int>>(n_layer, e);
}

std::vector<std::vector<uint8_t>> mask_of(const std::vector<std::vector<int>>& experts, int n_expert = 4) {
  std::vector<std::vector<uint8_t>> m;
  for (const auto& l : experts) {
    std::vector<uint8_t> row(n_expert, 0);
    for (int e : l) row[e] = 1;
    m.push_back(row);
  }
  return m;
}

TEST(MoeShard, AShardEqualsTheFullModelRestrictedToItsExperts) {
  Engine full(kNoisy);
  const std::vector<std::vector<std::vector<int>>> shards = {
      same_every_layer({0, 2}), same_every_layer({1}), {{0, 1, 2}, {3}, {1, 3}, {0, 2}, {2, 3}}};
  for (const auto& s : shards) {
    Engine shard(kNoisy, s);
    EXPECT_FALSE(shard.model->holds_all_experts());
    full.fwd->restrict_experts(mask_of(s));
    auto want = full.logits();
    auto got = shard.logits();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;
  }
}

TEST(MoeShard, RestrictingToEveryExpertChangesNothing) {
  Engine a(kNoisy), b(kNoisy);
  b.fwd->restrict_experts(mask_of(same_every_layer({0, 1, 2, 3})));
  EXPECT_EQ(a.logits(), b.logits());
  Engine all_listed(kNoisy, same_every_layer({3, 1, 0, 2}));
  EXPECT_TRUE(all_listed.model->holds_all_experts());
  EXPECT_EQ(a.logits(), all_listed.logits());
}

TEST(MoeShard, ARestrictedRouterChangesTheNoisyModel) {
  Engine full(kNoisy), shard(kNoisy, same_every_layer({1}));
  auto a = full.logits(), b = shard.logits();
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max<double>(diff, std::fabs(a[i] - b[i]));
  EXPECT_GT(diff, 1e-3) << "the noisy experts differ, so one expert alone must change the output";
}

// stories260K-moe4x2-f32's experts are exact copies of the dense FFN: with the top-k weights
// renormalised, any non-empty group of experts gives the dense model's output.
TEST(MoeShard, ShardsOfTheCopiedExpertModelEqualTheDenseModel) {
  Engine dense("stories260K-f32.gguf");
  auto want = dense.logits();
  for (const auto& s : {same_every_layer({0, 1, 2, 3}), same_every_layer({2}), same_every_layer({0, 3}),
                        std::vector<std::vector<int>>{{0}, {1}, {2}, {3}, {1, 2}}}) {
    Engine moe(kCopies, s);
    auto got = moe.logits();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4f) << i;
  }
}

TEST(MoeShard, RoutingStatisticsAddUp) {
  Engine full(kNoisy);
  ExpertStats st;
  st.reset(5, 4);
  full.fwd->collect_expert_stats(&st);
  full.logits();
  const uint64_t T = kPrompt.size();
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(st.tokens[l], T);
    uint64_t sel = 0;
    double mass = 0;
    for (int e = 0; e < 4; ++e) {
      sel += st.selected[l * 4 + e];
      mass += st.gate_mass[l * 4 + e];
    }
    EXPECT_EQ(sel, T * 2) << "two experts per token";
    EXPECT_NEAR(mass, static_cast<double>(T), 1e-3) << "router probabilities sum to one per token";
  }
  // On a shard of one expert per layer, every token selects it (top-k clipped to what is held).
  Engine one(kNoisy, same_every_layer({2}));
  st.reset(5, 4);
  one.fwd->collect_expert_stats(&st);
  one.logits();
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(st.selected[l * 4 + 2], T);
    EXPECT_NEAR(st.gate_mass[l * 4 + 2], static_cast<double>(T), 1e-3);
  }
  ExpertStats wrong;
  wrong.reset(4, 4);
  EXPECT_THROW(one.fwd->collect_expert_stats(&wrong), std::invalid_argument);
}

std::string load_error(const std::string& file, std::vector<std::vector<int>> experts) {
  try {
    Engine e(file, std::move(experts));
  } catch (const std::exception& ex) {
    return ex.what();
  }
  return "";
}

TEST(MoeShard, BadShardsAreRefusedWithClearErrors) {
  EXPECT_NE(load_error(kNoisy, same_every_layer({0, 4})).find("expert 4 of layer 0 does not exist"), std::string::npos);
  EXPECT_NE(load_error(kNoisy, same_every_layer({-1})).find("expert -1 of layer 0 does not exist"), std::string::npos);
  EXPECT_NE(load_error(kNoisy, same_every_layer({1, 1})).find("listed twice"), std::string::npos);
  EXPECT_NE(load_error(kNoisy, {{0}, {0}, {}, {0}, {0}}).find("at least one expert of layer 2"), std::string::npos);
  EXPECT_NE(load_error(kNoisy, same_every_layer({0}, 4)).find("lists experts for 4 layers; the model has 5"),
            std::string::npos);
  EXPECT_NE(load_error("stories260K-f32.gguf", same_every_layer({0})).find("has no experts"), std::string::npos);

  Engine full(kNoisy);
  EXPECT_THROW(full.fwd->restrict_experts(mask_of(same_every_layer({}, 5))), std::invalid_argument);
  EXPECT_THROW(full.fwd->restrict_experts(mask_of(same_every_layer({0}, 3))), std::invalid_argument);
  std::vector<std::vector<uint8_t>> short_row(5, std::vector<uint8_t>(3, 1));
  EXPECT_THROW(full.fwd->restrict_experts(short_row), std::invalid_argument);
  // A shard cannot be widened by a mask: the held experts bound what routing may pick.
  Engine shard(kNoisy, same_every_layer({0}));
  EXPECT_THROW(shard.fwd->restrict_experts(mask_of(same_every_layer({1}))), std::invalid_argument);
}

TEST(MoeShard, WeightBytesPerTokenCountsTheExpertsATokenRuns) {
  Engine full(kNoisy), half(kNoisy, same_every_layer({0, 1})), one(kNoisy, same_every_layer({3}));
  // Two experts run per token whether the node holds 4 or 2 of them; with one held, only one.
  EXPECT_DOUBLE_EQ(full.model->weight_bytes_per_token(), half.model->weight_bytes_per_token());
  EXPECT_LT(one.model->weight_bytes_per_token(), full.model->weight_bytes_per_token());
}

}  // namespace
}  // namespace llmesh
