#include "cli/moe_shard_options.h"

#include <stdexcept>

#include <fmt/format.h>

namespace llmesh::cli {

void add_moe_shard_options(CLI::App* sub, MoeShardOptions& o) {
  sub->add_option("--moe-plan", o.plan,
                  "Load one expert shard of this plan (llmesh moe plan): only the trunk and the shard's experts are "
                  "loaded or fetched")
      ->check(CLI::ExistingFile);
  sub->add_option("--moe-shard", o.shard, "Which shard of --moe-plan to load (0-based)")->check(CLI::Range(0, 4095));
}

std::optional<moe::MoePlan> apply_moe_shard(const MoeShardOptions& o, EngineOptions& engine) {
  if (!o.enabled()) return std::nullopt;
  if (o.plan.empty() || o.shard < 0)
    throw std::invalid_argument("--moe-plan and --moe-shard go together: the plan file and which of its shards to load");
  moe::MoePlan plan = moe::MoePlan::read(o.plan);
  if (!plan.passes())
    throw std::runtime_error(fmt::format("{} failed the quality gate when it was made: it is not served (make a plan "
                                         "with fewer nodes, more overlap or a larger core)", o.plan));
  if (o.shard >= static_cast<int>(plan.shards().size()))
    throw std::invalid_argument(fmt::format("--moe-shard {}: {} has shards 0..{}", o.shard, o.plan,
                                            plan.shards().size() - 1));
  engine.experts = plan.shards()[o.shard];
  return plan;
}

void check_moe_shard_model(const moe::MoePlan& plan, const MoeShardOptions& o, const Model& model) {
  moe::ModelShape::of(model).check_matches(plan.model, "the plan " + o.plan);
}

}  // namespace llmesh::cli
