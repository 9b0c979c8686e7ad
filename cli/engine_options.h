// Options shared by the commands that load a model (run, bench).
#pragma once
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "kernels/thread_pool.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace llmesh::cli {

struct EngineOptions {
  std::string model;
  int threads = 0;  // 0: all hardware threads
  int ctx = 0;      // 0: min(4096, the model's training context)
  int batch = 512;  // prompt tokens per forward pass
  std::string kv_type = "f16";
  std::string fetch_cache;  // --fetch-cache: where -m URL packages are cached (empty: the default)
  // A mixture-of-experts shard (serve --moe-plan/--moe-shard, docs/moe.md): per layer, the
  // experts to load. Empty: all. Only these experts' bytes are read, fetched or mapped.
  std::vector<std::vector<int>> experts;
};

void add_engine_options(CLI::App* sub, EngineOptions& o);

// -m: a GGUF file, a layer package directory, or an http(s) base URL of a layer package (the
// whole package is fetched into the artifact cache first, progress on stderr; docs/layer-packages.md).
// A loaded model with its cache, thread pool and forward pass.
struct LoadedEngine {
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Forward> forward;
  double load_seconds = 0;
  std::string model_id;  // a layer package's model id (empty for a plain GGUF)
};
LoadedEngine load_engine(const EngineOptions& o, int n_seq = 1);

}  // namespace llmesh::cli
