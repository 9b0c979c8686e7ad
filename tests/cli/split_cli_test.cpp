// `llmesh serve --layers / --split` as a user runs them: clear errors for bad ranges, sizes,
// lock files and combinations, and a stage node's state in `llmesh status`.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "cli/serve_process.h"
#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::ServeProcess;

fs::path scratch(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("cli_split_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

const fs::path& package() {
  static fs::path dir = [] {
    fs::path d = scratch("pkg") / "stories";
    auto r = test::run_command(test::llmesh_binary() + " package " + test::model_path("stories260K-f32.gguf") + " " +
                               d.string() + " -q 2>&1");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return d;
  }();
  return dir;
}

test::CommandResult llmesh(const fs::path& home, const std::string& args) {
  return test::run_command("LLMESH_HOME=" + home.string() + " " + test::llmesh_binary() + " " + args + " 2>&1");
}

void expect_error(const test::CommandResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
}

TEST(CliSplit, BadOptionsAreRefusedWithTheReason) {
  fs::path home = scratch("home");
  const std::string serve = "serve --port 0 --mesh-port 0 --mesh-listen 127.0.0.1 -q -m ";
  const std::string pkg = package().string();
  expect_error(llmesh(home, serve + pkg + " --layers 3..2"), "--layers 3..2: the range must be non-empty");
  expect_error(llmesh(home, serve + pkg + " --layers 0..9"), "within the model's 5 layers");
  expect_error(llmesh(home, serve + pkg + " --layers two"), "expected A..B");
  expect_error(llmesh(home, serve + pkg + " --layers 0..2 --no-mesh"), "need the mesh");
  expect_error(llmesh(home, serve + pkg + " --layers 0..2 --split"), "exclude each other");
  expect_error(llmesh(home, serve + pkg + " --split --memory 5Q"), "unknown unit 'Q'");
  expect_error(llmesh(home, serve + pkg + " --layers 0..2 --hidden bf16"), "--hidden");
  expect_error(llmesh(home, serve + test::model_path("stories260K-f32.gguf") + " --split"),
               "--split needs a layer package");
  fs::path lock = home / "lock.json";
  auto write = [&](const std::string& text) { std::ofstream(lock) << text; };
  write(R"({"model": "stories260K-f32", "stages": [{"node": "abc", "layers": [0, 2]}]})");
  expect_error(llmesh(home, serve + pkg + " --split --plan-lock " + lock.string()), "is not a node id");
  write(R"({"model": "stories260K-f32", "stages": [{"node": ")" + std::string(64, 'a') + R"(", "layers": [2, 9]}]})");
  expect_error(llmesh(home, serve + pkg + " --split --plan-lock " + lock.string()), "within the model's 5 layers");
  write(R"({"model": "other", "stages": [{"node": ")" + std::string(64, 'a') + R"(", "layers": [0, 2]}]})");
  expect_error(llmesh(home, serve + pkg + " --split --plan-lock " + lock.string()), "it is for model other");
  write(R"({"model": "stories260K-f32", "stages": [{"node": ")" + std::string(64, 'a') + R"(", "layers": [0, 3]},
           {"node": ")" + std::string(64, 'b') + R"(", "layers": [2, 5]}]})");
  expect_error(llmesh(home, serve + pkg + " --split --plan-lock " + lock.string()), "overlap");
  expect_error(llmesh(home, serve + pkg + " --layers 0..2 --plan-lock " + lock.string()), "--plan-lock goes with --split");
}

TEST(CliSplit, AStageNodeShowsItsLayersInStatus) {
  fs::path home = scratch("stage");
  ServeProcess server({"serve", "-m", package().string(), "--layers", "2..5", "--port", "0", "--json", "--mesh-port", "0",
                       "--mesh-listen", "127.0.0.1", "-q", "-c", "128", "--parallel", "1"},
                      {"LLMESH_HOME=" + home.string()});
  json line = json::parse(server.first_line());
  ASSERT_TRUE(line.contains("node_id")) << line.dump() << server.stderr_text();
  json st;
  for (int i = 0; i < 50; ++i) {  // the record is refreshed every second
    auto r = llmesh(home, "status --json");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    st = json::parse(r.output);
    const auto& models = st["members"][0]["state"]["models"];
    if (!models.empty() && models[0]["layers_loaded"] == json::array({2, 5})) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(st["split"]["layers"], json::array({2, 5})) << st.dump();
  EXPECT_EQ(st["split"]["entry"], false) << "no node holds layers 0..2: no route";
  EXPECT_EQ(st["members"][0]["state"]["models"][0]["layers_loaded"], json::array({2, 5})) << st.dump();
  auto r = llmesh(home, "status");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("stories260K-f32 [2-5)/5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("this node runs [2, 5), no route over all layers yet"), std::string::npos) << r.output;
  // A request needs layers 0..2 that no node holds: 503 with the reason, at once.
  httplib::Client http("127.0.0.1", line["port"].get<int>());
  http.set_read_timeout(60, 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto res = http.Post("/v1/completions", R"({"model": "stories260K-f32", "prompt": "Hi", "max_tokens": 3})",
                       "application/json");
  ASSERT_TRUE(res);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(res->status, 503) << res->body;
  EXPECT_EQ(res->get_header_value("Retry-After"), "2");
  EXPECT_NE(res->body.find("no route through the mesh for layers [0, 5) of stories260K-f32"), std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("[2,5)"), std::string::npos) << res->body;
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("llmesh_stage_layers 3\n"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("llmesh_pipeline_route_stages 0\n"), std::string::npos) << m->body;
  EXPECT_EQ(server.stop(SIGTERM, 10), 0) << server.stderr_text();
}

}  // namespace
}  // namespace llmesh
