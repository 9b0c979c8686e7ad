#include "cli/moe_shard_options.h"

#include <stdexcept>

#include <fmt/format.h>

namespace llmesh::cli {

void add_moe_shard_options(CLI::App* sub, MoeShardOptions& o, bool exact) {
  sub->add_option("--moe-plan", o.plan,
                  "Load one expert shard of this plan (llmesh moe plan): only the trunk and the shard's experts are "
                  "loaded or fetched")
      ->check(CLI::ExistingFile);
  sub->add_option("--moe-shard", o.shard, "Which shard of --moe-plan to load (0-based)")->check(CLI::Range(0, 4095));
  if (!exact) return;
  sub->add_flag("--moe-exact", o.exact,
                "Exact mode: route every token over all the model's experts, running those this shard lacks on the "
                "shards of the plan that hold them (one round trip per layer that needs one)");
  sub->add_option("--moe-exact-max-rtt", o.exact_max_rtt_ms,
                  "Exact mode asks only shards within this round trip (ms); tokens whose experts lie further away "
                  "are routed among this shard's own experts")
      ->check(CLI::Range(0.0, 10000.0))
      ->capture_default_str();
}

std::optional<moe::MoePlan> apply_moe_shard(const MoeShardOptions& o, EngineOptions& engine) {
  if (o.exact && (o.plan.empty() || o.shard < 0))
    throw std::invalid_argument("--moe-exact needs --moe-plan and --moe-shard");
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
