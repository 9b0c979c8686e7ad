// The forward pass seams: layer ranges (pipeline stages), KV rollback, several sequences in
// one batch, and clear errors for malformed batches and a full cache.
#include <cmath>

#include <gtest/gtest.h>

#include "model/forward.h"
#include "sampling/sampler.h"
#include "test_paths.h"

namespace llmesh {
namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378};

struct Engine {
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  ThreadPool pool{2};
  std::unique_ptr<Forward> fwd;
  Engine(const std::string& path, LayerRange r = {}, int n_seq = 1, int n_ctx = 128) {
    ModelOptions mo;
    mo.layers = r;
    model = Model::load(path, mo);
    KvCacheOptions kv;
    kv.n_ctx = n_ctx;
    kv.n_seq = n_seq;
    cache = std::make_unique<KvCache>(model->config(), model->first_layer(), model->last_layer(), kv);
    fwd = std::make_unique<Forward>(*model, *cache, pool);
  }
};

std::string stories() { return test::model_path("stories260K-f32.gguf"); }

Batch prompt_batch(const std::vector<int32_t>& ids, int seq = 0, int start = 0) {
  Batch b;
  for (size_t i = 0; i < ids.size(); ++i) b.add(ids[i], start + static_cast<int>(i), seq, i + 1 == ids.size());
  return b;
}

TEST(Forward, LayerRangesChainToTheFullModel) {
  Engine full(stories());
  auto want = full.fwd->run(prompt_batch(kPrompt));
  std::vector<float> expected(want.begin(), want.end());

  for (int split : {1, 2, 4}) {
    Engine a(stories(), {0, split}), b(stories(), {split, -1});
    EXPECT_TRUE(a.model->has_embedding());
    EXPECT_FALSE(a.model->has_head());
    EXPECT_FALSE(b.model->has_embedding());
    EXPECT_TRUE(b.model->has_head());
    auto hidden = a.fwd->run(prompt_batch(kPrompt));
    ASSERT_EQ(hidden.size(), kPrompt.size() * a.model->config().n_embd);
    Batch hb = prompt_batch(kPrompt);
    hb.tokens.clear();
    hb.hidden.assign(hidden.begin(), hidden.end());
    auto got = b.fwd->run(hb);
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_FLOAT_EQ(got[i], expected[i]) << "split " << split;
  }
}

TEST(Forward, RollbackRegeneratesIdentically) {
  Engine e(stories());
  auto first = e.fwd->run(prompt_batch(kPrompt));
  std::vector<int32_t> out;
  int32_t tok = argmax(first.data(), e.model->config().n_vocab);
  int pos = static_cast<int>(kPrompt.size());
  for (int i = 0; i < 10; ++i) {
    out.push_back(tok);
    Batch b;
    b.add(tok, pos++, 0, true);
    tok = argmax(e.fwd->run(b).data(), e.model->config().n_vocab);
  }
  // Roll back to the end of the prompt plus 3 tokens and regenerate.
  e.cache->truncate(0, static_cast<int>(kPrompt.size()) + 3);
  pos = static_cast<int>(kPrompt.size()) + 3;
  tok = out[3];
  for (int i = 3; i < 10; ++i) {
    EXPECT_EQ(tok, out[i]);
    Batch b;
    b.add(tok, pos++, 0, true);
    tok = argmax(e.fwd->run(b).data(), e.model->config().n_vocab);
  }
  EXPECT_THROW(e.cache->truncate(0, 1000), std::out_of_range);
}

TEST(Forward, SeveralSequencesInOneBatch) {
  Engine single(stories());
  auto a = single.fwd->run(prompt_batch(kPrompt));
  std::vector<float> la(a.begin(), a.end());
  std::vector<int32_t> other = {1, 378, 261};
  single.cache->clear(0);
  auto b = single.fwd->run(prompt_batch(other));
  std::vector<float> lb(b.begin(), b.end());

  Engine multi(stories(), {}, 2);
  Batch mb = prompt_batch(kPrompt, 0);
  Batch ob = prompt_batch(other, 1);
  for (int i = 0; i < ob.n_tokens(); ++i) mb.add(ob.tokens[i], ob.pos[i], 1, ob.output[i]);
  auto both = multi.fwd->run(mb);
  const int V = multi.model->config().n_vocab;
  ASSERT_EQ(both.size(), 2u * V);
  for (int i = 0; i < V; ++i) {
    EXPECT_NEAR(both[i], la[i], 1e-4f);
    EXPECT_NEAR(both[V + i], lb[i], 1e-4f);
  }
  EXPECT_EQ(multi.cache->length(0), 5);
  EXPECT_EQ(multi.cache->length(1), 3);
}

TEST(Forward, MalformedBatchesAreRefusedClearly) {
  Engine e(stories(), {}, 1, 8);
  Batch b;
  EXPECT_THROW(e.fwd->run(b), std::invalid_argument);  // empty
  b.add(100000, 0, 0, true);
  EXPECT_THROW(e.fwd->run(b), std::invalid_argument);  // token out of range
  b.clear();
  b.add(1, 3, 0, true);
  EXPECT_THROW(e.fwd->run(b), std::invalid_argument);  // gap after 0 cached positions
  b.clear();
  b.add(1, 0, 5, true);
  EXPECT_THROW(e.fwd->run(b), std::invalid_argument);  // no such sequence
  b.clear();
  for (int i = 0; i < 9; ++i) b.add(1, i, 0, false);
  try {
    e.fwd->run(b);
    FAIL() << "expected KvCacheFull";
  } catch (const KvCacheFull& err) {
    EXPECT_NE(std::string(err.what()).find("context full"), std::string::npos);
  }
  EXPECT_EQ(e.cache->length(0), 0);  // nothing was written
}

TEST(Model, InvalidLayerRangeAndMissingFile) {
  ModelOptions mo;
  mo.layers = {3, 2};
  EXPECT_THROW(Model::load(stories(), mo), std::runtime_error);
  mo.layers = {0, 99};
  EXPECT_THROW(Model::load(stories(), mo), std::runtime_error);
  EXPECT_THROW(Model::load("/nonexistent.gguf"), std::runtime_error);
}

TEST(Model, MoeDenseEquivalence) {
  // stories260K-moe4x2 was built from exact copies of the dense FFN: same logits.
  Engine dense(stories()), moe(test::model_path("stories260K-moe4x2-f32.gguf"));
  auto a = dense.fwd->run(prompt_batch(kPrompt));
  std::vector<float> la(a.begin(), a.end());
  auto b = moe.fwd->run(prompt_batch(kPrompt));
  ASSERT_EQ(la.size(), b.size());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], b[i], 1e-3f);
}

}  // namespace
}  // namespace llmesh
