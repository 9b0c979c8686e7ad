// `llmesh run` and `llmesh bench` as a user runs them.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

std::string llmesh(const std::string& args) { return test::llmesh_binary() + " " + args; }

TEST(CliRun, GreedyJsonMatchesGolden) {
  auto r = test::run_command(llmesh("run -m " + test::model_path("stories260K-f32.gguf") +
                                    " -p 'Once upon a time' -n 30 --temp 0 --json -t 2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["prompt_tokens"], 5);
  std::vector<int> want = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                           337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432};
  EXPECT_EQ(j["tokens"].get<std::vector<int>>(), want);
  EXPECT_EQ(j["text"].get<std::string>().rfind(", there was a little girl named Lily.", 0), 0u)
      << j["text"];
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
}

TEST(CliRun, StreamsTextAndSeedIsReproducible) {
  std::string cmd = llmesh("run -m " + test::model_path("stories260K-q8_0.gguf") +
                           " -p 'Lily' -n 40 --temp 0.9 --seed 11 --no-echo 2>/dev/null");
  auto a = test::run_command(cmd), b = test::run_command(cmd);
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_EQ(a.output, b.output);
  EXPECT_GT(a.output.size(), 20u);
}

TEST(CliRun, BadInputGetsAClearError) {
  const std::string junk = ::testing::TempDir() + "/not_a_model.gguf";
  {
    std::ofstream f(junk);
    f << "this is a text file, not a model";
  }
  auto r = test::run_command(llmesh("run -m " + junk + " -p hi 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not a GGUF file"), std::string::npos) << r.output;
  r = test::run_command(llmesh("run -m " + test::model_path("stories260K-f32.gguf") + " -p hi --top-p 0 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("top_p"), std::string::npos) << r.output;
  r = test::run_command(llmesh("run -m " + test::model_path("stories260K-f32.gguf") +
                               " -p 'a long prompt that does not fit' -c 4 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("context"), std::string::npos) << r.output;
}

TEST(CliRun, SpeculativeOptionsAreCheckedAndGreedyOutputIsUnchanged) {
  const std::string target = " -m " + test::model_path("stories260K-f32.gguf") + " -p hi -n 4";
  struct Bad {
    std::string args, reason;
  };
  const Bad bad[] = {
      {"--spec-ngram 5..2", "1 <= A <= B <= 16"},
      {"--spec-ngram 2x..4", "expected N or A..B"},
      {"--draft " + test::model_path("llama-2-tiny-random.gguf"), "vocabulary"},
      {"--draft /nonexistent-draft.gguf", "no such file"},
      {"--draft " + test::shared_dir() + "/models/GOLDEN.txt", "cannot load the draft model"},
      {"--spec draft", "needs --draft"},
      {"--spec ngram --draft " + test::model_path("stories260K-q4_0.gguf"), "exclude each other"},
  };
  for (const Bad& b : bad) {
    auto r = test::run_command(llmesh("run" + target + " " + b.args + " 2>&1"));
    EXPECT_EQ(r.exit_code, 1) << b.args << ": " << r.output;
    EXPECT_NE(r.output.find(b.reason), std::string::npos) << b.args << ": " << r.output;
  }
  // The same greedy tokens with a draft, with n-gram lookup and without.
  const std::string greedy = llmesh("run -m " + test::model_path("stories260K-f32.gguf") +
                                    " -p 'Once upon a time' -n 40 --temp 0 --json -t 1");
  auto plain = test::run_command(greedy);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  const auto want = nlohmann::json::parse(plain.output)["tokens"];
  for (const std::string spec : {"--draft " + test::model_path("stories260K-q4_0.gguf") + " --draft-fixed",
                                 std::string("--spec ngram --spec-ngram 1..3 --draft-fixed")}) {
    auto r = test::run_command(greedy + " " + spec);
    ASSERT_EQ(r.exit_code, 0) << spec << ": " << r.output;
    auto j = nlohmann::json::parse(r.output);
    EXPECT_EQ(j["tokens"], want) << spec;
    ASSERT_TRUE(j.contains("speculative")) << spec;
    EXPECT_GT(j["speculative"]["windows"].get<int>(), 0) << spec;
  }
}

TEST(CliBench, JsonHasTheFigures) {
  auto r = test::run_command(llmesh("bench -m " + test::model_path("stories260K-q4_0.gguf") +
                                    " -t 2 -p 16 -n 8 -r 2 --json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_GT(j["prefill_tok_s"].get<double>(), 0);
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
  EXPECT_EQ(j["prefill_runs"].size(), 2u);
  EXPECT_GT(j["weight_bytes_per_token"].get<double>(), 0);
}

TEST(Cli, EveryCommandHasHelp) {
  for (std::string c : {"inspect", "run", "bench"}) {
    auto r = test::run_command(llmesh(c + " --help"));
    EXPECT_EQ(r.exit_code, 0) << c;
    EXPECT_NE(r.output.find("--"), std::string::npos) << c;
  }
}

}  // namespace
}  // namespace llmesh
