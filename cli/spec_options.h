// Speculative decoding options shared by serve, run and bench (docs/speculative.md):
//   --draft MODEL        a draft model sharing the target's vocabulary (implies --spec draft)
//   --spec ngram|draft|off
//   --draft-max N        longest window (default 8), adapted to acceptance and cost unless
//   --draft-fixed        always draft --draft-max tokens
//   --draft-p-min P      greedy: stop a window when the draft's top token is less likely than P
//   --spec-ngram A..B    n-gram sizes looked up (default 2..4)
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "kernels/thread_pool.h"
#include "model/model.h"
#include "speculative/draft_source.h"
#include "speculative/window_policy.h"

namespace llmesh::cli {

struct SpecCliOptions {
  std::string draft;  // -m of the draft: GGUF file or http(s) URL of one
  std::string spec;   // "", "draft", "ngram", "off"
  int draft_max = 8;
  bool draft_fixed = false;
  float draft_p_min = 0.0f;
  std::string ngram = "2..4";
  std::string fetch_cache;  // for a draft URL (the engine's --fetch-cache)

  bool enabled() const { return spec != "off" && (!draft.empty() || spec == "ngram" || spec == "draft"); }
};

void add_spec_options(CLI::App* sub, SpecCliOptions& o);

// The proposer and window options, or a null source when speculation is off. `target` is the
// model whose vocabulary the draft must share (a split entry's model will do: it has the
// tokenizer). Throws std::invalid_argument naming what is wrong.
struct SpecSetup {
  std::shared_ptr<ThreadPool> own_pool;  // when the caller had none to lend (outlives source)
  std::unique_ptr<DraftSource> source;
  WindowOptions window;
  std::string description;  // "draft stories260K-q4_0.gguf (window up to 8, adaptive)"
};
SpecSetup make_spec(const SpecCliOptions& o, const Model& target, ThreadPool* pool, int n_threads, int n_slots,
                    int n_ctx);

}  // namespace llmesh::cli
