// `llmesh fetch` and `llmesh run -m http://...` against a layer package served by a local HTTP
// server in the test process.
#include <unistd.h>

#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "mesh/fetch/fetch_fixture.h"
#include "package/package_writer.h"
#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

namespace fs = std::filesystem;

std::string llmesh(const std::string& args) { return test::llmesh_binary() + " " + args; }

fs::path scratch(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("cli_fetch_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

using mesh::test::PackageServer;


struct Package {
  fs::path dir = scratch("pkg");
  Package() { write_package(test::model_path("stories260K-f32.gguf"), dir.string()); }
  ~Package() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

TEST(CliFetch, FetchesALayerRangeThenTheCacheAnswers) {
  Package pkg;
  PackageServer server(pkg.dir);
  fs::path cache = scratch("cache1");
  const std::string cmd = llmesh("fetch " + server.url() + " --layers 1..3 --cache " + cache.string() + " --json -q 2>&1");
  auto r = test::run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  std::vector<std::string> paths;
  for (auto& a : j["artifacts"]) {
    paths.push_back(a["path"]);
    EXPECT_TRUE(fs::exists(a["file"].get<std::string>())) << a;
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"metadata.gguf", "layers/blk.1.gguf", "layers/blk.2.gguf"}));
  EXPECT_EQ(j["layers"], nlohmann::json::array({1, 3}));
  EXPECT_TRUE(fs::exists(fs::path(j["dir"].get<std::string>()) / "manifest.json"));
  EXPECT_GT(j["bytes_fetched"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["bytes_cached"], 0);
  EXPECT_EQ(server.take_requested(),
            (std::set<std::string>{"manifest.json", "metadata.gguf", "layers/blk.1.gguf", "layers/blk.2.gguf"}));

  r = test::run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["bytes_fetched"], 0);
  EXPECT_GT(j["bytes_cached"].get<uint64_t>(), 0u);
  EXPECT_EQ(server.take_requested(), (std::set<std::string>{"manifest.json"}));

  // Plain output: the directory on stdout, progress and a summary on stderr.
  r = test::run_command(llmesh("fetch " + server.url() + " --layers 3.. --cache " + cache.string() + " 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layers/blk.4.gguf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("output.gguf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("layers 3..5 of 5, 4 artifacts"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(j["dir"].get<std::string>()), std::string::npos) << r.output;
  fs::remove_all(cache);
}

TEST(CliFetch, RunFromAUrlFetchesOnceThenUsesTheCache) {
  Package pkg;
  PackageServer server(pkg.dir);
  fs::path cache = scratch("cache2");
  const std::string run = llmesh("run -m " + server.url() + " --fetch-cache " + cache.string() +
                                 " -p 'Once upon a time' -n 30 --temp 0 --json -t 2");
  const std::vector<int> want = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                                 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432};
  fs::path err = scratch("stderr.txt");
  auto r = test::run_command(run + " 2>" + err.string());
  ASSERT_EQ(r.exit_code, 0) << r.output << read_all(err);
  EXPECT_EQ(nlohmann::json::parse(r.output)["tokens"].get<std::vector<int>>(), want);
  std::string log = read_all(err);
  EXPECT_NE(log.find("layers/blk.0.gguf"), std::string::npos) << log;
  EXPECT_NE(log.find("embeddings.gguf"), std::string::npos) << log;
  EXPECT_EQ(server.take_requested().size(), 9u);  // the manifest and 8 artifacts

  r = test::run_command(run + " 2>" + err.string());
  ASSERT_EQ(r.exit_code, 0) << r.output << read_all(err);
  EXPECT_EQ(nlohmann::json::parse(r.output)["tokens"].get<std::vector<int>>(), want);
  log = read_all(err);
  EXPECT_NE(log.find("cached"), std::string::npos) << log;
  EXPECT_NE(log.find("0 B fetched"), std::string::npos) << log;
  EXPECT_EQ(server.take_requested(), (std::set<std::string>{"manifest.json"}));
  fs::remove_all(cache);
  fs::remove(err);
}

TEST(CliFetch, ClearErrorsAndHelp) {
  auto r = test::run_command(llmesh("fetch --help"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--layers"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--json"), std::string::npos) << r.output;
  Package pkg;
  PackageServer server(pkg.dir);
  fs::path cache = scratch("cache3");
  r = test::run_command(llmesh("fetch " + server.url() + " --layers 3..1 --cache " + cache.string() + " 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("llmesh fetch: error"), std::string::npos) << r.output;
  r = test::run_command(llmesh("fetch " + server.url() + " --layers x --cache " + cache.string() + " 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("expected A..B"), std::string::npos) << r.output;
  r = test::run_command(llmesh("fetch " + server.url() + "nothing/ --cache " + cache.string() + " 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("HTTP 404"), std::string::npos) << r.output;
  // -m still refuses a path that does not exist.
  r = test::run_command(llmesh("run -m /nonexistent/model.gguf -p hi 2>&1"));
  EXPECT_NE(r.exit_code, 0);
  fs::remove_all(cache);
}

}  // namespace
}  // namespace llmesh
