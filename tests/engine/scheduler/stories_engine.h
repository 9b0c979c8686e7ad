// The real engine on a shared test model (stories260K by default): model, KV cache with
// n_seq slots of n_ctx positions, thread pool, forward pass, BatchModel and tokenizer, for the
// scheduler and speculative-decoding tests that drive real models.
#pragma once
#include <memory>
#include <string>

#include "model/forward.h"
#include "scheduler/scheduler.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::test {

struct StoriesEngine {
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  ThreadPool pool{2};
  std::unique_ptr<Forward> fwd;
  std::unique_ptr<LocalBatchModel> batch_model;
  std::unique_ptr<Tokenizer> tok;

  explicit StoriesEngine(int n_seq, int n_ctx, const std::string& file = "stories260K-f32.gguf") {
    model = Model::load(model_path(file));
    KvCacheOptions kv;
    kv.n_ctx = n_ctx;
    kv.n_seq = n_seq;
    cache = std::make_unique<KvCache>(model->config(), model->first_layer(), model->last_layer(), kv);
    fwd = std::make_unique<Forward>(*model, *cache, pool);
    batch_model = std::make_unique<LocalBatchModel>(*fwd);
    tok = Tokenizer::from_gguf(model->file());
  }
  int n_vocab() const { return model->config().n_vocab; }
};

}  // namespace llmesh::test
