// --moe-plan FILE --moe-shard I: load one expert shard of a plan (llmesh moe plan, docs/moe.md)
// instead of the whole mixture-of-experts model. Shared by serve and bench.
#pragma once
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/engine_options.h"
#include "moe/expert_plan.h"

namespace llmesh::cli {

struct MoeShardOptions {
  std::string plan;
  int shard = -1;
  bool exact = false;            // serve --moe-exact: absent experts computed by the shards holding them
  double exact_max_rtt_ms = 20;  // ... only on holders within this round trip
  bool enabled() const { return !plan.empty() || shard >= 0; }
};

// `exact`: also --moe-exact and --moe-exact-max-rtt (serve: they need the mesh).
void add_moe_shard_options(CLI::App* sub, MoeShardOptions& o, bool exact = false);

// Reads and checks the plan (both options given, the shard exists, the plan passed its quality
// gate) and sets engine.experts to the shard's experts. nullopt when the options are not given.
// Throws std::invalid_argument / std::runtime_error naming what is wrong.
std::optional<moe::MoePlan> apply_moe_shard(const MoeShardOptions& o, EngineOptions& engine);

// After loading: the model is the one the plan was made for (layers, experts, experts per token).
void check_moe_shard_model(const moe::MoePlan& plan, const MoeShardOptions& o, const Model& model);

}  // namespace llmesh::cli
