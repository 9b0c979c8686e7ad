// `llmesh moe profile`, `llmesh moe plan` and `llmesh serve --moe-plan/--moe-shard` as a user
// runs them (docs/moe.md), on the tiny 4-experts-2-used stories model: the ranking file, plans
// that pass the quality gate (and one whose core has to grow), refusals with clear messages,
// and a served shard describing itself in /health and in gossip.
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/serve_process.h"
#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

using json = nlohmann::json;
using test::ServeProcess;
namespace fs = std::filesystem;

const std::string kMoe = "stories260K-moe4x2-noisy-f32.gguf";
const std::string kDense = "stories260K-f32.gguf";

std::string moe_model() { return test::model_path(kMoe); }
std::string dense_model() { return test::model_path(kDense); }

// A path of its own in the test's temporary folder (ctest runs tests in parallel processes).
std::string temp_file(const std::string& name) {
  return (fs::path(::testing::TempDir()) / ("moe_cli_" + std::to_string(getpid()) + "_" + name)).string();
}

test::CommandResult llmesh(const std::string& args) { return test::run_command(test::llmesh_binary() + " " + args); }

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// `moe plan MODEL ARGS --json -q -o PATH`: the printed plan, checked to be what was written.
json make_plan(const std::string& args, const std::string& path, int want_exit = 0) {
  auto r = llmesh("moe plan " + moe_model() + " " + args + " --json -q -o " + path);
  EXPECT_EQ(r.exit_code, want_exit) << args << ": " << r.output;
  json j = json::parse(r.output, nullptr, false);
  EXPECT_TRUE(j.is_object()) << r.output;
  if (!j.is_object()) return json::object();
  EXPECT_EQ(j["plan"], path);
  json file = read_json(path);
  json printed = j;
  printed.erase("plan");
  EXPECT_EQ(file, printed) << "the file holds what --json printed";
  return j;
}

TEST(CliMoe, HelpListsTheOptions) {
  auto r = llmesh("moe --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "profile")) << r.output;
  EXPECT_TRUE(contains(r.output, "plan")) << r.output;
  r = llmesh("moe plan --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--nodes", "--overlap", "--profile", "--core", "--max-kl", "--min-top1", "--max-ppl-increase",
                          "--prompts", "--quick", "--max-tokens", "--output", "--json"})
    EXPECT_TRUE(contains(r.output, opt)) << opt;
  r = llmesh("serve --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--moe-plan", "--moe-shard"}) EXPECT_TRUE(contains(r.output, opt)) << opt;
  // moe needs its subcommand, plan its --nodes.
  EXPECT_NE(llmesh("moe 2>&1").exit_code, 0);
  r = llmesh("moe plan " + moe_model() + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "--nodes")) << r.output;
}

TEST(CliMoe, ProfileWritesARankingFile) {
  const std::string out = temp_file("profile.json");
  auto r = llmesh("moe profile " + moe_model() + " -o " + out + " --json -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json summary = json::parse(r.output);
  EXPECT_EQ(summary["profile"], out);
  json p = read_json(out);
  ASSERT_TRUE(p.is_object());
  EXPECT_EQ(p["format"], "llmesh-moe-profile");
  EXPECT_EQ(p["version"], 1);
  EXPECT_EQ(p["model"]["n_layer"], 5);
  EXPECT_EQ(p["model"]["n_expert"], 4);
  EXPECT_EQ(p["model"]["n_expert_used"], 2);
  EXPECT_EQ(p["model"]["name"], summary["model"]);
  const int64_t tokens = p["tokens"];
  EXPECT_GT(tokens, 500);
  EXPECT_EQ(summary["tokens"], tokens);
  EXPECT_GT(p["sequences"].get<int>(), 0);
  ASSERT_EQ(p["layers"].size(), 5u);
  ASSERT_EQ(summary["layers"].size(), 5u);
  for (int l = 0; l < 5; ++l) {
    const json& L = p["layers"][l];
    EXPECT_EQ(L["layer"], l);
    ASSERT_EQ(L["selected"].size(), 4u);
    ASSERT_EQ(L["gate_mass"].size(), 4u);
    ASSERT_EQ(L["ranking"].size(), 4u);
    // Two experts per token: the selection counts add up to twice the tokens.
    int64_t selected = 0;
    double mass = 0;
    for (int e = 0; e < 4; ++e) {
      selected += L["selected"][e].get<int64_t>();
      mass += L["gate_mass"][e].get<double>();
      EXPECT_GT(L["selected"][e].get<int64_t>(), 0) << "layer " << l << " expert " << e << " never chosen";
    }
    EXPECT_EQ(selected, 2 * tokens) << "layer " << l;
    EXPECT_NEAR(mass, static_cast<double>(tokens), 0.01 * tokens) << "layer " << l << ": a token's gate mass is 1";
    // The ranking: every expert once, hottest (most gate mass) first.
    std::set<int> seen;
    for (const auto& e : L["ranking"]) seen.insert(e.get<int>());
    EXPECT_EQ(seen, (std::set<int>{0, 1, 2, 3})) << L.dump();
    for (int i = 1; i < 4; ++i)
      EXPECT_GE(L["gate_mass"][L["ranking"][i - 1].get<int>()].get<double>(),
                L["gate_mass"][L["ranking"][i].get<int>()].get<double>())
          << L.dump();
    // The printed summary: the same ranking, gate shares adding up to 1, hottest first.
    const json& S = summary["layers"][l];
    EXPECT_EQ(S["ranking"], L["ranking"]);
    double shares = 0;
    for (const auto& s : S["gate_share"]) shares += s.get<double>();
    EXPECT_NEAR(shares, 1.0, 1e-3) << S.dump();
    EXPECT_GE(S["gate_share"][0].get<double>(), S["gate_share"][3].get<double>());
  }
  // Without --json: a table on stderr, nothing on stdout.
  r = llmesh("moe profile " + moe_model() + " -o " + temp_file("profile2.json") + " 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "");
  EXPECT_EQ(read_json(temp_file("profile2.json"))["layers"], p["layers"]) << "profiling is deterministic";
}

TEST(CliMoe, PlanForThreeNodesWithTwoCopies) {
  const std::string path = temp_file("plan3.json");
  json j = make_plan("--nodes 3 --overlap 2", path);
  ASSERT_FALSE(j.empty());
  EXPECT_EQ(j["format"], "llmesh-moe-plan");
  EXPECT_EQ(j["passes"], true);
  EXPECT_EQ(j["nodes"], 3);
  EXPECT_EQ(j["overlap"], 2);
  EXPECT_EQ(j["coverage_after_losing_any_node"], true);
  EXPECT_FALSE(j["digest"].get<std::string>().empty());
  ASSERT_TRUE(j["tried"].is_array());
  ASSERT_FALSE(j["tried"].empty());
  EXPECT_EQ(j["tried"].back()["core"], j["core"]);
  EXPECT_EQ(j["tried"].back()["passes"], true);
  ASSERT_EQ(j["shards"].size(), 3u);
  const int core = j["core"];
  // Every expert of every layer is on at least two nodes (all of them for the core).
  std::vector<std::vector<int>> copies(5, std::vector<int>(4, 0));
  for (size_t i = 0; i < 3; ++i) {
    const json& s = j["shards"][i];
    EXPECT_EQ(s["index"], i);
    EXPECT_EQ(s["quality"]["passes"], true) << s["quality"].dump();
    EXPECT_GE(s["quality"]["top1"].get<double>(), 0.9);
    ASSERT_EQ(s["experts"].size(), 5u);
    int held = 0;
    for (int l = 0; l < 5; ++l) {
      EXPECT_LT(s["experts"][l].size(), 4u) << "shard " << i << " holds every expert of layer " << l;
      EXPECT_GE(static_cast<int>(s["experts"][l].size()), std::max(core, 1));
      for (const auto& e : s["experts"][l]) ++copies[l][e.get<int>()];
      held += static_cast<int>(s["experts"][l].size());
    }
    EXPECT_EQ(s["expert_count"], held);
    ASSERT_EQ(s["covers"].size(), 3u);
    EXPECT_DOUBLE_EQ(s["covers"][i].get<double>(), 1.0);
    EXPECT_GT(s["bytes"].get<int64_t>(), 0);
    EXPECT_LT(s["bytes"].get<int64_t>(), j["model"]["bytes"].get<int64_t>());
  }
  for (int l = 0; l < 5; ++l)
    for (int e = 0; e < 4; ++e) EXPECT_GE(copies[l][e], 2) << "layer " << l << " expert " << e;

  // A ranking file from `moe profile` gives the same plan as profiling again.
  const std::string prof = temp_file("plan3_profile.json");
  ASSERT_EQ(llmesh("moe profile " + moe_model() + " -q -o " + prof).exit_code, 0);
  json again = make_plan("--nodes 3 --overlap 2 --profile " + prof, temp_file("plan3b.json"));
  EXPECT_EQ(again["digest"], j["digest"]);
  // --overlap defaults to 2.
  EXPECT_EQ(make_plan("--nodes 3", temp_file("plan3c.json"))["digest"], j["digest"]);
}

TEST(CliMoe, PlanGrowsTheCoreUntilEveryShardPasses) {
  // Four nodes, one copy each: with no core (one expert of each layer per node), some shard
  // agrees with the full model on the top token less than 90% of the time (measured: 0.88 to
  // 0.90 on three of the four shards), so the core grows until every shard passes.
  json j = make_plan("--nodes 4 --overlap 1", temp_file("plan4.json"));
  ASSERT_FALSE(j.empty());
  ASSERT_TRUE(j["tried"].is_array());
  ASSERT_GE(j["tried"].size(), 2u) << j["tried"].dump();
  const json& first = j["tried"][0];
  EXPECT_EQ(first["core"], 0);
  EXPECT_EQ(first["passes"], false);
  bool a_top1_failure = false;
  for (const auto& s : first["shards"])
    if (s["passes"] == false) {
      EXPECT_LT(s["top1"].get<double>(), 0.9) << s.dump();
      a_top1_failure |= contains(s["failures"].get<std::string>(), "top-1");
    }
  EXPECT_TRUE(a_top1_failure) << first.dump();
  EXPECT_EQ(j["passes"], true);
  EXPECT_GE(j["core"].get<int>(), 1);
  EXPECT_EQ(j["tried"].back()["core"], j["core"]);
  EXPECT_EQ(j["tried"].back()["passes"], true);
  for (const auto& s : j["shards"]) EXPECT_EQ(s["quality"]["passes"], true) << s.dump();
  // One copy of the experts outside the core: losing a node loses some of them.
  EXPECT_EQ(j["coverage_after_losing_any_node"], false);
  // The cores tried grow one by one from 0.
  for (size_t i = 0; i < j["tried"].size(); ++i) EXPECT_EQ(j["tried"][i]["core"], i);

  // A stricter gate needs a larger core.
  json strict = make_plan("--nodes 4 --overlap 1 --min-top1 0.95", temp_file("plan4s.json"));
  EXPECT_EQ(strict["passes"], true);
  EXPECT_GT(strict["core"].get<int>(), j["core"].get<int>());
  EXPECT_DOUBLE_EQ(strict["gate"]["min_top1"].get<double>(), 0.95);
}

TEST(CliMoe, ClearRefusals) {
  struct Bad {
    std::string args, reason;
  };
  const std::string empty = temp_file("empty_prompts.txt");
  std::ofstream(empty) << "\n\n   \n\n";
  // A ranking file written by hand for another shape: 2 layers of 3 experts.
  const std::string other = temp_file("other_shape.json");
  std::ofstream(other) << json{{"format", "llmesh-moe-profile"},
                               {"version", 1},
                               {"model", {{"name", "another-moe"}, {"n_layer", 2}, {"n_expert", 3}, {"n_expert_used", 1}}},
                               {"tokens", 10},
                               {"sequences", 1},
                               {"layers",
                                {{{"layer", 0}, {"gate_mass", {5.0, 3.0, 2.0}}, {"selected", {5, 3, 2}}},
                                 {{"layer", 1}, {"gate_mass", {1.0, 4.0, 5.0}}, {"selected", {1, 4, 5}}}}}}
                                  .dump();
  const std::string junk = temp_file("not_a_profile.json");
  std::ofstream(junk) << R"({"format": "something else", "version": 1})";
  const std::string never = temp_file("never_written.json");
  const Bad bad[] = {
      {"profile " + dense_model() + " -o " + never, "dense model"},
      {"plan " + dense_model() + " --nodes 2 -o " + never, "dense model"},
      {"plan " + moe_model() + " --nodes 3 --overlap 4 -o " + never, "--overlap 4 is more copies than --nodes 3"},
      {"plan " + moe_model() + " --nodes 3 --prompts " + empty + " -o " + never, "holds no prompt"},
      {"profile " + moe_model() + " --prompts " + empty + " -o " + never, "holds no prompt"},
      {"plan " + moe_model() + " --nodes 3 --profile " + other + " -o " + never, "this model has 5, 4, 2"},
      {"plan " + moe_model() + " --nodes 3 --profile " + junk + " -o " + never, "not a ranking file"},
      {"plan " + moe_model() + " --nodes 3 --core 5 -o " + never, "--core 5: the model has 4 experts per layer"},
      {"plan " + moe_model() + " --nodes 5 --overlap 1 --core 0 -o " + never,
       "with 5 nodes, overlap 1 and a core of 0, node 4 would hold no expert of layer 0"},
      {"plan " + moe_model() + " --nodes 0 -o " + never, "--nodes"},
      {"plan " + moe_model() + " --nodes 3 --min-top1 1.5 -o " + never, "--min-top1"},
  };
  for (const Bad& b : bad) {
    auto r = llmesh("moe " + b.args + " -q 2>&1");
    EXPECT_NE(r.exit_code, 0) << b.args << ": " << r.output;
    EXPECT_TRUE(contains(r.output, b.reason)) << b.args << ": " << r.output;
    if (contains(b.args, other)) {  // both shapes are named: the file's and the model's
      EXPECT_TRUE(contains(r.output, "the ranking file " + other)) << r.output;
      EXPECT_TRUE(contains(r.output, "2 layers, 3 experts, 1 used per token")) << r.output;
    }
    EXPECT_FALSE(fs::exists(never)) << b.args << ": a refused command writes nothing";
  }
}

// A plan for 3 nodes, 2 copies (passes), written to `path`.
json good_plan(const std::string& path) { return make_plan("--nodes 3 --overlap 2", path); }

TEST(CliMoeServe, Refusals) {
  const std::string plan = temp_file("serve_plan.json");
  ASSERT_EQ(good_plan(plan)["passes"], true);
  // A plan that fails its gate: written all the same, exit code 2.
  const std::string failing = temp_file("failing_plan.json");
  json f = make_plan("--core 0 --nodes 4 --overlap 1 --min-top1 0.999", failing, 2);
  EXPECT_EQ(f["passes"], false);
  ASSERT_TRUE(fs::exists(failing));
  EXPECT_EQ(read_json(failing)["passes"], false);
  ASSERT_EQ(f["tried"].size(), 1u) << "--core 0 tries no other core";

  // A plan edited by hand (an expert moved between shards): its digest no longer matches.
  const std::string edited = temp_file("edited_plan.json");
  {
    json e = read_json(plan);
    json& layer0 = e["shards"][0]["experts"][0];
    std::set<int> held;
    for (const auto& x : layer0) held.insert(x.get<int>());
    for (int x = 0; x < 4; ++x)
      if (!held.count(x)) {
        layer0.push_back(x);
        break;
      }
    std::ofstream(edited) << e.dump(1);
  }

  struct Bad {
    std::string args, reason;
  };
  const std::string serve = "serve --no-mesh --port 0 -c 64 ";
  const Bad bad[] = {
      {serve + "-m " + moe_model() + " --moe-plan " + plan, "--moe-plan and --moe-shard go together"},
      {serve + "-m " + moe_model() + " --moe-shard 0", "--moe-plan and --moe-shard go together"},
      {serve + "-m " + moe_model() + " --moe-plan " + plan + " --moe-shard 3", "--moe-shard 3: " + plan + " has shards 0..2"},
      {serve + "-m " + moe_model() + " --moe-plan " + failing + " --moe-shard 0", "failed the quality gate"},
      {serve + "-m " + dense_model() + " --moe-plan " + plan + " --moe-shard 0", "no experts"},
      {"serve --port 0 -c 64 -m " + moe_model() + " --moe-plan " + plan + " --moe-shard 0 --layers 0..3",
       "--moe-plan cannot be combined with --layers"},
      {serve + "-m " + moe_model() + " --moe-plan " + temp_file("no_such_plan.json") + " --moe-shard 0", "no_such_plan.json"},
      {serve + "-m " + moe_model() + " --moe-plan " + dense_model() + " --moe-shard 0", "is not valid JSON"},
      {serve + "-m " + moe_model() + " --moe-plan " + edited + " --moe-shard 0", "does not match the shards"},
  };
  for (const Bad& b : bad) {
    // timeout: a refusal that is not made would start a server.
    auto r = test::run_command("timeout 20 " + test::llmesh_binary() + " " + b.args + " 2>&1");
    EXPECT_NE(r.exit_code, 0) << b.args << ": " << r.output;
    EXPECT_NE(r.exit_code, 124) << b.args << ": it served instead of refusing";
    EXPECT_TRUE(contains(r.output, b.reason)) << b.args << ": " << r.output;
    EXPECT_FALSE(contains(r.output, "listening")) << b.args << ": " << r.output;
  }
}

TEST(CliMoeServe, ServesAShardAndDescribesIt) {
  const std::string plan_path = temp_file("serve_shard_plan.json");
  json plan = good_plan(plan_path);
  ASSERT_EQ(plan["passes"], true);
  const int shard = 1;
  int held = 0;
  for (const auto& layer : plan["shards"][shard]["experts"]) held += static_cast<int>(layer.size());

  ServeProcess p({"serve", "-m", moe_model(), "--no-mesh", "--port", "0", "--json", "-c", "128", "--parallel", "1",
                  "--moe-plan", plan_path, "--moe-shard", std::to_string(shard)});
  json ready = json::parse(p.first_line(), nullptr, false);
  ASSERT_TRUE(ready.is_object() && ready["event"] == "listening") << ready.dump() << p.stderr_text();
  httplib::Client c("127.0.0.1", ready["port"].get<int>());
  c.set_read_timeout(30);
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  ASSERT_EQ(h->status, 200) << h->body;
  json health = json::parse(h->body);
  ASSERT_TRUE(health.contains("expert_shard")) << health.dump();
  const json& es = health["expert_shard"];
  EXPECT_EQ(es["shard"], shard);
  EXPECT_EQ(es["shards"], 3);
  EXPECT_EQ(es["plan"], plan["digest"]);
  EXPECT_EQ(es["experts"], held);
  EXPECT_EQ(es["experts_total"], 20);
  EXPECT_LT(es["experts"].get<int>(), es["experts_total"].get<int>());
  ASSERT_EQ(es["covers_permille"].size(), 3u);
  EXPECT_EQ(es["covers_permille"][shard], 1000);
  for (int j = 0; j < 3; ++j)
    EXPECT_EQ(es["covers_permille"][j].get<int>(),
              static_cast<int>(std::lround(1000 * plan["shards"][shard]["covers"][j].get<double>())))
        << es.dump();
  EXPECT_EQ(es["quality"]["passes"], true) << es.dump();
  EXPECT_EQ(es["bytes"], plan["shards"][shard]["bytes"]);

  // It answers with its experts.
  auto r = c.Post("/v1/completions",
                  json{{"model", "stories260K-moe4x2-noisy-f32"}, {"prompt", "Once upon a time"}, {"max_tokens", 8},
                       {"temperature", 0}}
                      .dump(),
                  "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], 8);
  EXPECT_EQ(p.stop(SIGTERM, 5), 0) << p.stderr_text();

  // A model served whole has no expert_shard in /health.
  ServeProcess whole({"serve", "-m", moe_model(), "--no-mesh", "--port", "0", "--json", "-c", "128", "--parallel", "1"});
  json wready = json::parse(whole.first_line(), nullptr, false);
  ASSERT_TRUE(wready.is_object()) << whole.stderr_text();
  httplib::Client wc("127.0.0.1", wready["port"].get<int>());
  auto wh = wc.Get("/health");
  ASSERT_TRUE(wh);
  EXPECT_FALSE(json::parse(wh->body).contains("expert_shard")) << wh->body;
  EXPECT_EQ(whole.stop(SIGTERM, 5), 0) << whole.stderr_text();
}

TEST(CliMoeServe, AShardInTheMeshGossipsItsRecordAndAnswers) {
  const std::string plan_path = temp_file("mesh_shard_plan.json");
  json plan = good_plan(plan_path);
  ASSERT_EQ(plan["passes"], true);
  const fs::path home = fs::path(::testing::TempDir()) / ("moe_cli_" + std::to_string(getpid()) + "_home");
  fs::remove_all(home);
  ServeProcess p({"serve", "-m", moe_model(), "--port", "0", "--json", "-c", "128", "--parallel", "1", "--mesh-port",
                  "0", "--mesh-listen", "127.0.0.1", "-q", "--moe-plan", plan_path, "--moe-shard", "2"},
                 {"LLMESH_HOME=" + home.string()});
  json ready = json::parse(p.first_line(), nullptr, false);
  ASSERT_TRUE(ready.is_object() && ready.contains("node_id")) << ready.dump() << p.stderr_text();

  // Its own gossip record carries the shard.
  auto st = test::run_command("LLMESH_HOME=" + home.string() + " " + test::llmesh_binary() + " status --json");
  ASSERT_EQ(st.exit_code, 0) << st.output;
  json status = json::parse(st.output, nullptr, false);
  ASSERT_TRUE(status.is_object()) << st.output;
  json record;
  for (const auto& m : status["members"])
    if (m.value("self", false)) record = m["state"];
  ASSERT_TRUE(record.is_object()) << status.dump();
  ASSERT_EQ(record["models"].size(), 1u) << record.dump();
  const json& es = record["models"][0]["expert_shard"];
  EXPECT_EQ(es["plan"], plan["digest"]) << record.dump();
  EXPECT_EQ(es["index"], 2);
  EXPECT_EQ(es["count"], 3);
  ASSERT_EQ(es["covers_permille"].size(), 3u);
  EXPECT_EQ(es["covers_permille"][2], 1000);

  // Alone in its mesh it is its own home shard for every session: it answers.
  httplib::Client c("127.0.0.1", ready["port"].get<int>());
  c.set_read_timeout(30);
  for (const char* user : {"alice", "bob", "carol"}) {
    auto r = c.Post("/v1/chat/completions",
                    json{{"model", "stories260K-moe4x2-noisy-f32"},
                         {"user", user},
                         {"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}},
                         {"max_tokens", 4}}
                        .dump(),
                    "application/json");
    ASSERT_TRUE(r) << user;
    EXPECT_EQ(r->status, 200) << user << ": " << r->body;
  }
  EXPECT_EQ(p.stop(SIGTERM, 10), 0) << p.stderr_text();
}

}  // namespace
}  // namespace llmesh
