// The mesh commands as a user runs them: `serve` starting a mesh, `invite`, `status`, `client
// --join`, their help, and clear errors when no node runs or a token is bad.
#include <httplib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

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

std::string temp_home(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("mesh_cli_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(p);
  return p.string();
}

test::CommandResult llmesh(const std::string& home, const std::string& args) {
  return test::run_command("LLMESH_HOME=" + home + " " + test::llmesh_binary() + " " + args);
}

TEST(CliMesh, HelpOfTheMeshCommands) {
  auto r = test::run_command(test::llmesh_binary() + " client --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--join", "--port", "--mesh-port", "--advertise", "--json", "--api-key"})
    EXPECT_NE(r.output.find(opt), std::string::npos) << opt;
  r = test::run_command(test::llmesh_binary() + " invite --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--expires", "--rotate", "--json", "--max-nodes"}) EXPECT_NE(r.output.find(opt), std::string::npos) << opt;
  r = test::run_command(test::llmesh_binary() + " status --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--json"), std::string::npos);
  r = test::run_command(test::llmesh_binary() + " serve --help");
  for (const char* opt : {"--join", "--no-mesh", "--mesh-port", "--mesh-listen", "--advertise"})
    EXPECT_NE(r.output.find(opt), std::string::npos) << opt;
}

TEST(CliMesh, ClearErrorsWithoutANodeOrWithABadToken) {
  std::string home = temp_home("none");
  auto r = llmesh(home, "invite 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no running llmesh node"), std::string::npos) << r.output;
  r = llmesh(home, "status 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no running llmesh node"), std::string::npos) << r.output;
  r = llmesh(home, "client --port 0 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--join TOKEN"), std::string::npos) << r.output;
  r = llmesh(home, "client --port 0 --join notatoken 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("bad_prefix"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("notatoken"), std::string::npos) << "tokens are never echoed: " << r.output;
}

TEST(CliMesh, ServeStartsAMeshThatInviteStatusAndClientUse) {
  std::string home = temp_home("server"), chome = temp_home("client");
  ServeProcess server({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--port", "0", "--json", "-c", "128",
                       "--parallel", "1", "--mesh-port", "0", "--mesh-listen", "127.0.0.1", "-q"},
                      {"LLMESH_HOME=" + home});
  json line = json::parse(server.first_line());
  ASSERT_TRUE(line.contains("node_id")) << line.dump() << server.stderr_text();
  EXPECT_EQ(line["node_id"].get<std::string>().size(), 64u);
  EXPECT_TRUE(fs::exists(fs::path(home) / "mesh.json"));
  EXPECT_EQ(fs::status(fs::path(home) / "node.json").permissions() & fs::perms::group_read, fs::perms::none);

  {
    // The invite endpoint: the control key from node.json, and fields checked.
    std::ifstream nf(fs::path(home) / "node.json");
    json node = json::parse(nf);
    httplib::Client http("127.0.0.1", line["port"].get<int>());
    auto res = http.Post("/mesh/invite", "{}", "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 403) << res->body;
    httplib::Headers h{{"X-Llmesh-Control", node["control_key"].get<std::string>()}};
    res = http.Post("/mesh/invite", h, R"({"expires_in": "soon"})", "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
    EXPECT_NE(res->body.find("expires_in"), std::string::npos) << res->body;
    res = http.Get("/mesh/status");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  auto r = llmesh(home, "invite --expires banana 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--expires"), std::string::npos) << r.output;
  r = llmesh(home, "invite --expires 1h --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json inv = json::parse(r.output);
  std::string token = inv["token"];
  EXPECT_EQ(token.rfind("llmesh1", 0), 0u);
  EXPECT_EQ(inv["nodes"][0]["node_id"], line["node_id"]);
  EXPECT_GT(inv["expires"].get<int64_t>(), 0);

  ServeProcess client({"client", "--join", token, "--port", "0", "--json", "--mesh-listen", "127.0.0.1", "-q"},
                      {"LLMESH_HOME=" + chome});
  json cl = json::parse(client.first_line());
  ASSERT_TRUE(cl.value("joined", false)) << cl.dump() << client.stderr_text();
  EXPECT_EQ(cl["members"], 2);

  r = llmesh(home, "status --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json st = json::parse(r.output);
  EXPECT_EQ(st["mesh"]["alive"], 2);
  r = llmesh(chome, "status");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("stories260K-f32"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2 alive of 2"), std::string::npos) << r.output;

  EXPECT_EQ(client.stop(SIGTERM, 10), 0) << client.stderr_text();
  EXPECT_FALSE(fs::exists(fs::path(chome) / "node.json"));  // a stopped node leaves no control file
  EXPECT_EQ(server.stop(SIGTERM, 10), 0) << server.stderr_text();
}

}  // namespace
}  // namespace llmesh
