// llmesh moe profile / moe plan: how a mixture-of-experts model uses its experts, and how to
// group them onto the nodes of a mesh behind a quality gate (docs/moe.md).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "fetch/fetch_progress.h"
#include "moe/calibration.h"
#include "moe/expert_plan.h"
#include "moe/expert_profile.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::cli {
namespace {

struct MoeCommonOptions {
  std::string model;
  std::string prompts;
  bool quick = false;
  int threads = 0;
  int64_t max_tokens = 0;  // 0: by --quick
  bool json = false;
  bool quiet = false;
};

struct ProfileOptions {
  MoeCommonOptions c;
  std::string out;
};

struct PlanCliOptions {
  MoeCommonOptions c;
  std::string profile, out;
  int nodes = 0;
  int overlap = 0;
  int core = -1;
  moe::QualityGate gate;
};

void add_common(CLI::App* sub, MoeCommonOptions& o) {
  sub->add_option("model", o.model, "The whole MoE model: a GGUF file, a layer package directory, or a URL")
      ->required();
  sub->add_option("--prompts", o.prompts,
                  "Calibration prompts: a text file (prompts separated by blank lines) or .jsonl ({\"text\": ...} "
                  "per line); default: llmesh's built-in set")
      ->check(CLI::ExistingFile);
  sub->add_flag("--quick", o.quick, "A small calibration set (1024 tokens instead of 4096): faster, less exact");
  sub->add_option("--max-tokens", o.max_tokens, "Calibration tokens to use (overrides --quick)")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 24));
  sub->add_option("-t,--threads", o.threads, "Threads (0: all hardware threads)")->check(CLI::Range(0, 1024));
  sub->add_flag("--json", o.json, "Print the result as JSON on stdout");
  sub->add_flag("-q,--quiet", o.quiet, "No progress on stderr");
}

struct Loaded {
  LoadedEngine engine;
  std::unique_ptr<Tokenizer> tok;
  moe::CalibrationSet profile_set, eval_set;
};

Loaded load(const MoeCommonOptions& o) {
  EngineOptions eo;
  eo.model = o.model;
  eo.threads = o.threads;
  eo.ctx = 16;  // the commands make their own caches
  Loaded l;
  l.engine = load_engine(eo, 1);
  const ModelConfig& c = l.engine.model->config();
  if (!c.is_moe())
    throw std::runtime_error(fmt::format("{} is a dense model ({}): it has no experts to profile or group", o.model,
                                         c.arch_name));
  l.tok = Tokenizer::from_gguf(l.engine.model->file());
  std::vector<std::string> texts = o.prompts.empty() ? moe::builtin_calibration_texts() : moe::read_prompts_file(o.prompts);
  const int64_t budget = o.max_tokens > 0 ? o.max_tokens : o.quick ? 1024 : 4096;
  const int seq = std::max(16, std::min({o.quick ? 64 : 128, c.n_ctx_train > 0 ? c.n_ctx_train : 128}));
  // Twice the budget: half profiles, half evaluates (split_calibration).
  moe::CalibrationSet all = moe::tokenize_calibration(*l.tok, texts, seq, 2 * budget);
  if (all.sequences.empty()) throw std::runtime_error("the calibration prompts give no token sequence of 2+ tokens");
  auto [a, b] = moe::split_calibration(all);
  l.profile_set = std::move(a);
  l.eval_set = std::move(b);
  return l;
}

std::function<void(int64_t, int64_t)> token_progress(const MoeCommonOptions& o, const char* what) {
  if (o.quiet) return {};
  return [what](int64_t done, int64_t total) {
    std::fprintf(stderr, "\r%s: %lld / %lld tokens", what, static_cast<long long>(done), static_cast<long long>(total));
    if (done >= total) std::fprintf(stderr, "\n");
  };
}

std::string default_path(const std::string& model, const char* suffix) {
  std::filesystem::path p(model);
  std::string stem = std::filesystem::is_directory(p) ? p.filename().string() : p.stem().string();
  if (stem.empty()) stem = "model";
  return stem + suffix;
}

nlohmann::json profile_summary(const moe::ExpertProfile& p, const std::string& path) {
  nlohmann::json layers = nlohmann::json::array();
  for (int l = 0; l < p.model.n_layer; ++l) {
    auto rank = p.ranking(l);
    double total = 0;
    for (int e = 0; e < p.model.n_expert; ++e) total += p.mass(l, e);
    nlohmann::json shares = nlohmann::json::array();
    for (int e : rank) shares.push_back(total > 0 ? std::round(p.mass(l, e) / total * 1e4) / 1e4 : 0);
    layers.push_back({{"layer", l}, {"ranking", rank}, {"gate_share", shares}});
  }
  return {{"profile", path}, {"model", p.model.name}, {"tokens", p.tokens}, {"sequences", p.sequences},
          {"layers", layers}};
}

int run_profile(const ProfileOptions& o) {
  Loaded l = load(o.c);
  moe::ExpertProfile p = moe::profile_experts(*l.engine.model, *l.engine.pool, l.profile_set.sequences, 256,
                                              token_progress(o.c, "profiling"));
  const std::string out = o.out.empty() ? default_path(o.c.model, ".moe-profile.json") : o.out;
  p.write(out);
  if (o.c.json) {
    std::printf("%s\n", profile_summary(p, out).dump().c_str());
    return 0;
  }
  if (!o.c.quiet) {
    std::fprintf(stderr, "%s: %d layers x %d experts (%d per token) over %lld tokens\n", out.c_str(), p.model.n_layer,
                 p.model.n_expert, p.model.n_expert_used, static_cast<long long>(p.tokens));
    for (int l = 0; l < p.model.n_layer; ++l) {
      auto rank = p.ranking(l);
      double total = 0;
      for (int e = 0; e < p.model.n_expert; ++e) total += p.mass(l, e);
      std::string row;
      for (size_t i = 0; i < rank.size() && i < 8; ++i)
        row += fmt::format(" {}:{:.0f}%", rank[i], total > 0 ? 100 * p.mass(l, rank[i]) / total : 0.0);
      std::fprintf(stderr, "  layer %3d hottest:%s%s\n", l, row.c_str(), rank.size() > 8 ? " ..." : "");
    }
  }
  return 0;
}

int run_plan(const PlanCliOptions& o) {
  if (o.overlap > o.nodes)
    throw std::invalid_argument(fmt::format("--overlap {} is more copies than --nodes {}", o.overlap, o.nodes));
  Loaded l = load(o.c);
  const Model& model = *l.engine.model;
  moe::ExpertProfile profile;
  if (!o.profile.empty()) {
    profile = moe::ExpertProfile::read(o.profile);
    moe::ModelShape::of(model).check_matches(profile.model, "the ranking file " + o.profile);
  } else {
    profile = moe::profile_experts(model, *l.engine.pool, l.profile_set.sequences, 256, token_progress(o.c, "profiling"));
  }
  moe::PlanOptions po;
  po.nodes = o.nodes;
  po.overlap = o.overlap;
  po.core = o.core;
  po.gate = o.gate;
  if (po.core > model.config().n_expert)
    throw std::invalid_argument(fmt::format("--core {}: the model has {} experts per layer", po.core,
                                            model.config().n_expert));
  auto progress = [&](const std::string& m) {
    if (!o.c.quiet) std::fprintf(stderr, "grouping: %s\n", m.c_str());
  };
  moe::MoePlan plan = moe::plan_experts(model, *l.engine.pool, profile, l.eval_set, po, progress);
  const std::string out = o.out.empty() ? default_path(o.c.model, ".moe-plan.json") : o.out;
  plan.write(out);
  nlohmann::json j = plan.to_json();
  j["plan"] = out;
  if (o.c.json) {
    std::printf("%s\n", j.dump().c_str());
  } else if (!o.c.quiet) {
    std::fprintf(stderr, "%s: %d nodes, overlap %d, core %d of %d experts per layer%s; digest %s\n", out.c_str(),
                 plan.nodes, plan.overlap, plan.chosen().grouping.core, plan.model.n_expert,
                 plan.passes() ? "" : " (FAILS the quality gate: not servable)", plan.digest().c_str());
    for (size_t i = 0; i < plan.shards().size(); ++i) {
      size_t n = 0;
      for (const auto& layer : plan.shards()[i]) n += layer.size();
      const auto& q = i < plan.chosen().quality.size() ? plan.chosen().quality[i] : moe::ShardQuality{};
      std::fprintf(stderr, "  shard %zu: %zu experts (%s of %s), KL %.4f, top-1 %.3f, perplexity %+.2f%%\n", i, n,
                   mesh::human_bytes(static_cast<double>(plan.shard_bytes[i])).c_str(),
                   mesh::human_bytes(static_cast<double>(plan.model_bytes)).c_str(), q.kl, q.top1,
                   100 * q.ppl_increase());
    }
  }
  return plan.passes() ? 0 : 2;
}

}  // namespace

Runner add_moe(CLI::App& app) {
  CLI::App* moe_cmd = app.add_subcommand("moe", "Mixture-of-experts models: profile expert use, plan expert shards");
  moe_cmd->require_subcommand(1);

  auto po = std::make_shared<ProfileOptions>();
  CLI::App* prof = moe_cmd->add_subcommand(
      "profile", "Measure each expert's gate mass and selection count per layer over calibration text; write a "
                 "ranking file");
  add_common(prof, po->c);
  prof->add_option("-o,--output", po->out, "Ranking file to write (default: MODEL.moe-profile.json here)");

  auto pl = std::make_shared<PlanCliOptions>();
  CLI::App* plan = moe_cmd->add_subcommand(
      "plan", "Group the experts onto N nodes (a hot core on every node, the rest dealt out with K copies), gated by "
              "quality against the full model; write a plan file for serve --moe-plan");
  add_common(plan, pl->c);
  plan->add_option("--nodes", pl->nodes, "Nodes (shards) to plan for")->required()->check(CLI::Range(1, 4096));
  plan->add_option("--overlap", pl->overlap, "Copies of each non-core expert (default: 2, or 1 for one node)")
      ->check(CLI::Range(1, 4096));
  plan->add_option("--profile", pl->profile, "A ranking file from `llmesh moe profile` (default: profile now)")
      ->check(CLI::ExistingFile);
  plan->add_option("--core", pl->core, "Use exactly this many hot experts per layer on every node (default: the "
                                       "smallest core whose shards pass the gate)")
      ->check(CLI::Range(0, 4096));
  plan->add_option("--max-kl", pl->gate.max_kl, "Gate: largest mean KL divergence from the full model, nats")
      ->check(CLI::Range(0.0, 100.0))->capture_default_str();
  plan->add_option("--min-top1", pl->gate.min_top1, "Gate: smallest top-1 agreement with the full model")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  plan->add_option("--max-ppl-increase", pl->gate.max_ppl_increase,
                   "Gate: largest relative perplexity increase (0.05 = +5%)")
      ->check(CLI::Range(0.0, 100.0))->capture_default_str();
  plan->add_option("-o,--output", pl->out, "Plan file to write (default: MODEL.moe-plan.json here)");

  return [prof, plan, po, pl]() -> int {
    if (prof->parsed()) return run_profile(*po);
    if (plan->parsed()) return run_plan(*pl);
    return 1;
  };
}

}  // namespace llmesh::cli
