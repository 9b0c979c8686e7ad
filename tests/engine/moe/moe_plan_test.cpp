// Profiling, grouping and the quality gate (engine/moe, docs/moe.md) on the real noisy MoE.
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "model/forward.h"
#include "moe/calibration.h"
#include "moe/expert_plan.h"
#include "moe/expert_profile.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::moe {
namespace {

struct Noisy {
  std::unique_ptr<Model> model = Model::load(test::model_path("stories260K-moe4x2-noisy-f32.gguf"));
  ThreadPool pool{2};
  std::unique_ptr<Tokenizer> tok = Tokenizer::from_gguf(model->file());
  CalibrationSet all = tokenize_calibration(*tok, builtin_calibration_texts(), 64, 1200);
};

Noisy& noisy() {
  static Noisy n;
  return n;
}

ExpertProfile profile() {
  static ExpertProfile p = [] {
    auto [prof, eval] = split_calibration(noisy().all);
    return profile_experts(*noisy().model, noisy().pool, prof.sequences);
  }();
  return p;
}

CalibrationSet eval_set() { return split_calibration(noisy().all).second; }

// `edit` applied to a file's JSON makes T::from_json refuse it with an error containing `what`.
template <typename T, typename Edit>
void expect_refused(nlohmann::json j, Edit edit, const char* what) {
  edit(j);
  try {
    T::from_json(j);
    ADD_FAILURE() << "accepted: " << what;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(MoeCalibration, TokenizesWithinTheBudgetAndSplitsInTwo) {
  const auto& all = noisy().all;
  EXPECT_LE(all.tokens(), 1200);
  EXPECT_GT(all.tokens(), 1000);
  for (const auto& s : all.sequences) {
    EXPECT_LE(s.size(), 64u);
    EXPECT_GE(s.size(), 2u);
    EXPECT_EQ(s[0], noisy().tok->bos());
  }
  auto [a, b] = split_calibration(all);
  EXPECT_EQ(a.sequences.size() + b.sequences.size(), all.sequences.size());
  EXPECT_EQ(a.sequences[0], all.sequences[0]);
  EXPECT_EQ(b.sequences[0], all.sequences[1]);
}

TEST(MoeCalibration, PromptFilesAreTextOrJsonLines) {
  const auto dir = std::filesystem::temp_directory_path() / "llmesh_moe_prompts";
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "p.txt") << "first prompt\nsecond line\n\n\n  \nsecond prompt\r\n";
    std::ofstream(dir / "p.jsonl") << "{\"text\": \"a\"}\n\n{\"prompt\": \"b\"}\n";
    std::ofstream(dir / "bad.jsonl") << "{\"text\": \"a\"}\n[1, 2]\n";
    std::ofstream(dir / "empty.txt") << "\n \n";
  }
  EXPECT_EQ(read_prompts_file((dir / "p.txt").string()),
            (std::vector<std::string>{"first prompt\nsecond line", "second prompt"}));
  EXPECT_EQ(read_prompts_file((dir / "p.jsonl").string()), (std::vector<std::string>{"a", "b"}));
  try {
    read_prompts_file((dir / "bad.jsonl").string());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_prompts_file((dir / "empty.txt").string()), std::runtime_error);
  EXPECT_THROW(read_prompts_file((dir / "missing.txt").string()), std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST(MoeProfile, CountsEveryRoutedTokenAndRanksByGateMass) {
  const ExpertProfile& p = profile();
  EXPECT_EQ(p.model.n_layer, 5);
  EXPECT_EQ(p.model.n_expert, 4);
  EXPECT_EQ(p.model.n_expert_used, 2);
  for (int l = 0; l < 5; ++l) {
    uint64_t sel = 0;
    double mass = 0;
    for (int e = 0; e < 4; ++e) {
      sel += p.count(l, e);
      mass += p.mass(l, e);
    }
    EXPECT_EQ(sel, static_cast<uint64_t>(p.tokens) * 2);
    EXPECT_NEAR(mass, static_cast<double>(p.tokens), 1e-2);
    auto rank = p.ranking(l);
    EXPECT_EQ(std::set<int>(rank.begin(), rank.end()).size(), 4u);
    for (int i = 1; i < 4; ++i) EXPECT_GE(p.mass(l, rank[i - 1]), p.mass(l, rank[i]));
  }
}

TEST(MoeProfile, TheRankingFileRoundTripsAndHostileFilesAreRefused) {
  const ExpertProfile& p = profile();
  ExpertProfile q = ExpertProfile::from_json(p.to_json());
  EXPECT_EQ(q.model, p.model);
  EXPECT_EQ(q.selected, p.selected);
  for (int l = 0; l < 5; ++l) EXPECT_EQ(q.ranking(l), p.ranking(l));
  auto refused = [&](auto edit, const char* what) { expect_refused<ExpertProfile>(p.to_json(), edit, what); };
  refused([](auto& j) { j["format"] = "other"; }, "not a ranking file");
  refused([](auto& j) { j["version"] = 2; }, "version");
  refused([](auto& j) { j["model"]["n_expert"] = 0; }, "'n_expert' is 0");
  refused([](auto& j) { j["model"]["n_expert_used"] = 9; }, "'n_expert_used' is 9");
  refused([](auto& j) { j["layers"].erase(0); }, "'layers' must be an array of 5");
  refused([](auto& j) { j["layers"][1]["gate_mass"][2] = -1; }, "layers[1].gate_mass[2]");
  refused([](auto& j) { j["layers"][1]["selected"][0] = "x"; }, "layers[1].selected[0]");
  refused([](auto& j) { j["layers"][3]["selected"].push_back(1); }, "layers[3].selected");
}

TEST(MoeGrouping, DealsACoreToEveryNodeAndTheRestWithKCopies) {
  const ExpertProfile& p = profile();
  for (int nodes : {1, 2, 3, 4}) {
    for (int overlap = 1; overlap <= nodes; ++overlap) {
      for (int core = 0; core <= 4; ++core) {
        Grouping g;
        try {
          g = deal_experts(p, nodes, overlap, core);
        } catch (const std::invalid_argument&) {
          // Only when some node would get no expert of a layer.
          EXPECT_EQ(core, 0);
          EXPECT_LT(4 * overlap, nodes);
          continue;
        }
        ASSERT_EQ(g.shards.size(), static_cast<size_t>(nodes));
        for (int l = 0; l < 5; ++l) {
          auto rank = p.ranking(l);
          std::vector<int> copies(4, 0);
          size_t lo = 99, hi = 0;
          for (const auto& s : g.shards) {
            for (int i = 0; i < core; ++i) EXPECT_TRUE(std::binary_search(s[l].begin(), s[l].end(), rank[i]));
            for (int e : s[l]) ++copies[e];
            lo = std::min(lo, s[l].size());
            hi = std::max(hi, s[l].size());
            EXPECT_TRUE(std::is_sorted(s[l].begin(), s[l].end()));
          }
          for (int i = 0; i < 4; ++i) EXPECT_EQ(copies[rank[i]], i < core ? nodes : overlap);
          EXPECT_LE(hi - lo, 1u) << "balanced";
        }
        if (nodes > 1 && (overlap >= 2 || core == 4))
          for (int lost = 0; lost < nodes; ++lost) EXPECT_TRUE(covers_all_without(g.shards, lost, 4));
      }
    }
  }
  EXPECT_THROW(deal_experts(p, 0, 1, 0), std::invalid_argument);
  EXPECT_THROW(deal_experts(p, 2, 3, 0), std::invalid_argument);
  EXPECT_THROW(deal_experts(p, 2, 1, 5), std::invalid_argument);
}

TEST(MoeGrouping, CoverageIsTheShareOfAnotherShardsExperts) {
  ExpertSet a = {{0, 1}, {2, 3}}, b = {{1}, {2, 3}}, c = {{2, 3}, {0}};
  EXPECT_DOUBLE_EQ(coverage(a, a), 1.0);
  EXPECT_DOUBLE_EQ(coverage(a, b), 1.0);
  EXPECT_DOUBLE_EQ(coverage(b, a), 0.75);
  EXPECT_DOUBLE_EQ(coverage(c, a), 0.0);
}

// On the noisy MoE, 4 nodes with one expert each (of 2 used per token) falls under the default
// top-1 threshold on some shard; the gate then grows the core until every shard passes.
TEST(MoeGate, AFailingGroupingIsRefusedAndALargerCoreChosen) {
  PlanOptions opt;
  opt.nodes = 4;
  opt.overlap = 1;
  opt.gate.min_top1 = 0.92;  // above what one expert per layer reaches here (about 0.88-0.91)
  MoePlan plan = plan_experts(*noisy().model, noisy().pool, profile(), eval_set(), opt);
  ASSERT_GE(plan.tried.size(), 2u);
  EXPECT_FALSE(plan.tried[0].passes);
  EXPECT_EQ(plan.tried[0].grouping.core, 0);
  EXPECT_TRUE(plan.passes());
  EXPECT_GT(plan.chosen().grouping.core, 0);
  EXPECT_LT(plan.chosen().grouping.core, 4) << "a partial core suffices";
  for (const auto& q : plan.chosen().quality) EXPECT_TRUE(q.passes(plan.gate)) << q.failures(plan.gate);
  for (size_t i = 0; i + 1 < plan.tried.size(); ++i) EXPECT_FALSE(plan.tried[i].passes);
  // Quality figures are sane: a shard is never better than the full model at predicting it.
  for (const auto& t : plan.tried)
    for (const auto& q : t.quality) {
      EXPECT_GE(q.kl, 0);
      EXPECT_LE(q.top1, 1);
      EXPECT_GT(q.ppl_full, 1);
      EXPECT_GT(q.positions, 100);
    }
  // An impossible gate ends with every expert on every node: the full model, which passes.
  opt.gate.max_kl = 0;
  MoePlan full = plan_experts(*noisy().model, noisy().pool, profile(), eval_set(), opt);
  EXPECT_EQ(full.chosen().grouping.core, 4);
  EXPECT_TRUE(full.passes());
  EXPECT_EQ(full.shard_bytes[0], full.model_bytes);
  EXPECT_LT(plan.shard_bytes[0], plan.model_bytes);
}

TEST(MoeGate, EvaluatingTheWholeModelAsAShardGivesZeroDivergence) {
  std::vector<std::vector<std::vector<int>>> shards = {std::vector<std::vector<int>>(5, {0, 1, 2, 3}),
                                                      std::vector<std::vector<int>>(5, {1})};
  auto q = evaluate_shards(*noisy().model, noisy().pool, eval_set(), shards);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_NEAR(q[0].kl, 0, 1e-9);
  EXPECT_DOUBLE_EQ(q[0].top1, 1);
  EXPECT_NEAR(q[0].ppl, q[0].ppl_full, 1e-9);
  EXPECT_GT(q[1].kl, 1e-4);
  EXPECT_LT(q[1].top1, 1);
}

TEST(MoePlanFile, RoundTripsAndRefusesEditedOrHostileFiles) {
  PlanOptions opt;
  opt.nodes = 3;
  opt.overlap = 2;
  MoePlan plan = plan_experts(*noisy().model, noisy().pool, profile(), eval_set(), opt);
  ASSERT_TRUE(plan.passes());
  nlohmann::json j = plan.to_json();
  EXPECT_TRUE(j["coverage_after_losing_any_node"].get<bool>());
  MoePlan back = MoePlan::from_json(j);
  EXPECT_EQ(back.digest(), plan.digest());
  EXPECT_EQ(back.shards(), plan.shards());
  EXPECT_TRUE(back.passes());
  EXPECT_EQ(back.shard_bytes, plan.shard_bytes);
  auto refused = [&](auto edit, const char* what) { expect_refused<MoePlan>(plan.to_json(), edit, what); };
  refused([](auto& k) { k["shards"][0]["experts"][0] = {0, 9}; }, "not an expert 0..3");
  refused([](auto& k) { k["shards"][0]["experts"][1] = {1, 1}; }, "lists expert 1 twice");
  refused([](auto& k) { k["shards"][0]["experts"][2] = nlohmann::json::array(); }, "non-empty array");
  refused([](auto& k) { k["shards"][1]["experts"].erase(0); }, "each of the 5 layers");
  refused([](auto& k) { k["shards"].erase(2); }, "array of 3 shards");
  refused([](auto& k) { k["overlap"] = 4; }, "plan.overlap is 4");
  refused([](auto& k) { k["format"] = "x"; }, "not a plan file");
  refused(
      [](auto& k) {
        auto& e = k["shards"][0]["experts"][0];
        e = e.size() == 4 ? nlohmann::json{0} : nlohmann::json{0, 1, 2, 3};
      },
      "does not match the shards");
}

}  // namespace
}  // namespace llmesh::moe

namespace llmesh::moe {
namespace {

TEST(MoePlanFile, TheVerdictAndTheModelAreChecked) {
  PlanOptions opt;
  opt.nodes = 2;
  opt.overlap = 1;
  MoePlan plan = plan_experts(*noisy().model, noisy().pool, profile(), eval_set(), opt);
  ASSERT_TRUE(plan.passes());
  EXPECT_EQ(plan.model.fingerprint.size(), 16u);
  // A failing plan edited to say it passes is refused: the stored figures decide.
  PlanOptions strict = opt;
  strict.core = 0;
  strict.gate.min_top1 = 0.999;
  MoePlan failing = plan_experts(*noisy().model, noisy().pool, profile(), eval_set(), strict);
  ASSERT_FALSE(failing.passes());
  nlohmann::json j = failing.to_json();
  j["passes"] = true;
  EXPECT_THROW(MoePlan::from_json(j), std::runtime_error);
  // Another model of the same shape: the copied-expert MoE is refused by its router fingerprint.
  auto copies = Model::load(test::model_path("stories260K-moe4x2-f32.gguf"));
  ModelShape other = ModelShape::of(*copies);
  EXPECT_NE(other.fingerprint, plan.model.fingerprint);
  try {
    other.check_matches(plan.model, "the plan");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("another model of the same shape"), std::string::npos) << e.what();
  }
  // A shard of the same model has the same fingerprint (the router is in the trunk).
  ModelOptions mo;
  mo.experts = plan.shards()[1];
  auto shard = Model::load(test::model_path("stories260K-moe4x2-noisy-f32.gguf"), mo);
  EXPECT_NO_THROW(ModelShape::of(*shard).check_matches(plan.model, "the plan"));
}

}  // namespace
}  // namespace llmesh::moe

namespace llmesh::moe {
namespace {

TEST(MoePlanFile, FieldsOfTheWrongTypeAreRefusedByName) {
  PlanOptions opt;
  opt.nodes = 2;
  opt.overlap = 1;
  MoePlan plan = plan_experts(*noisy().model, noisy().pool, profile(), eval_set(), opt);
  auto refused = [&](auto edit, const char* what) { expect_refused<MoePlan>(plan.to_json(), edit, what); };
  refused([](auto& k) { k["format"] = 3; }, "not a plan file");
  refused([](auto& k) { k["shards"][0]["quality"]["kl"] = "low"; }, "shards[0].quality.kl");
  refused([](auto& k) { k["shards"][1]["quality"]["top1"] = 2; }, "shards[1].quality.top1");
  refused([](auto& k) { k["calibration"]["tokens"] = "many"; }, "calibration.tokens");
  nlohmann::json p = profile().to_json();
  p["format"] = nullptr;
  EXPECT_THROW(ExpertProfile::from_json(p), std::runtime_error);
}

}  // namespace
}  // namespace llmesh::moe
