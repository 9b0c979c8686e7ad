// `llmesh package` and `llmesh run -m PACKAGE_DIR` as a user runs them.
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

namespace fs = std::filesystem;

std::string llmesh(const std::string& args) { return test::llmesh_binary() + " " + args; }

fs::path scratch(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("cli_package_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

TEST(CliPackage, PackagesAndRunsFromTheDirectory) {
  fs::path dir = scratch("stories");
  auto r = test::run_command(llmesh("package " + test::model_path("stories260K-f32.gguf") + " " + dir.string() +
                                    " 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[1/8] metadata.gguf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("layers/blk.4.gguf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("8 artifacts"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir / "manifest.json"));

  // --json: one object on stdout; -q: nothing on stderr.
  r = test::run_command(llmesh("package " + test::model_path("stories260K-f32.gguf") + " " + dir.string() +
                               " --json -q 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["manifest"], (dir / "manifest.json").string());
  EXPECT_EQ(j["artifacts"], 8);
  EXPECT_EQ(j["n_layer"], 5);
  EXPECT_GT(j["total_bytes"].get<uint64_t>(), 1000000u);
  EXPECT_EQ(j["source_sha256"].get<std::string>().size(), 64u);

  // The whole model from the package directory gives the same greedy ids as the GGUF file.
  r = test::run_command(llmesh("run -m " + dir.string() + " -p 'Once upon a time' -n 30 --temp 0 --json -t 2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<int> want = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                           337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432};
  EXPECT_EQ(nlohmann::json::parse(r.output)["tokens"].get<std::vector<int>>(), want);

  // A missing artifact is named.
  fs::remove(dir / "layers" / "blk.2.gguf");
  r = test::run_command(llmesh("run -m " + dir.string() + " -p hi -n 2 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("layers/blk.2.gguf is missing"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(CliPackage, ClearErrorsAndHelp) {
  auto r = test::run_command(llmesh("package --help"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--json"), std::string::npos) << r.output;
  fs::path dir = scratch("empty");
  fs::create_directories(dir);
  r = test::run_command(llmesh("run -m " + dir.string() + " -p hi 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("manifest.json"), std::string::npos) << r.output;
  r = test::run_command(llmesh("package /nonexistent.gguf " + dir.string() + " 2>&1"));
  EXPECT_NE(r.exit_code, 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmesh
