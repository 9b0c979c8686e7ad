// `llmesh serve` as a user runs it: help, the listening line, --chat-template, warnings,
// clear errors, and a prompt stop on SIGTERM.
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/serve_process.h"
#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {
using test::ServeProcess;

using json = nlohmann::json;


TEST(CliServe, HelpListsTheOptions) {
  auto r = test::run_command(test::llmesh_binary() + " serve --help");
  ASSERT_EQ(r.exit_code, 0);
  for (const char* opt : {"--port", "--listen", "--parallel", "--ctx", "--api-key", "--chat-template", "--alias",
                          "--max-queue", "--json"})
    EXPECT_NE(r.output.find(opt), std::string::npos) << opt;
}

TEST(CliServe, ChatTemplateFileIsUsedAndSigtermStopsPromptly) {
  const std::string tmpl = ::testing::TempDir() + "/custom_template.jinja";
  std::ofstream(tmpl) << "{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[ASSISTANT] {% endif %}";
  ServeProcess p({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--no-mesh", "--port", "0", "--json", "-c", "256",
                  "--chat-template", tmpl, "--name", "story", "--alias", "claude-test"});
  json ready = json::parse(p.first_line());
  ASSERT_EQ(ready["event"], "listening");
  httplib::Client c("127.0.0.1", ready["port"].get<int>());
  // count_tokens measures exactly the rendered custom template.
  auto r = c.Post("/v1/messages/count_tokens",
                  json{{"model", "claude-test"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}}.dump(),
                  "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto tokens = test::run_command(test::llmesh_binary() + " run -m " + test::model_path("stories260K-f32.gguf") +
                                  " -p '[USER] Hi\n[ASSISTANT] ' -n 1 --json 2>/dev/null");
  EXPECT_EQ(json::parse(r->body)["input_tokens"], json::parse(tokens.output)["prompt_tokens"]);
  // A keep-alive connection stays open (the client keeps it): SIGTERM must not wait for it.
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(p.stop(SIGTERM, 5), 0) << p.stderr_text();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST(CliServe, WarnsWhenPublicWithoutKey) {
  ServeProcess p({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--no-mesh", "--port", "0", "--json", "-c", "128",
                  "--listen", "0.0.0.0"});
  ASSERT_FALSE(p.first_line().empty());
  EXPECT_EQ(p.stop(SIGTERM, 5), 0);
  EXPECT_NE(p.stderr_text().find("without an API key"), std::string::npos) << p.stderr_text();
}

TEST(CliServe, ClearErrors) {
  auto r = test::run_command(test::llmesh_binary() + " serve -m " + test::model_path("stories260K-f32.gguf") +
                             " --no-mesh --chat-template /nonexistent.jinja 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("nonexistent.jinja"), std::string::npos) << r.output;
  const std::string bad = ::testing::TempDir() + "/bad_template.jinja";
  std::ofstream(bad) << "{% for m in messages %}{{ m.content }";
  r = test::run_command(test::llmesh_binary() + " serve -m " + test::model_path("stories260K-f32.gguf") +
                        " --no-mesh --port 0 --chat-template " + bad + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("line 1"), std::string::npos) << r.output;
  // The port is taken: say which address.
  ServeProcess p({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--no-mesh", "--port", "0", "--json", "-c", "128"});
  int port = json::parse(p.first_line())["port"];
  r = test::run_command(test::llmesh_binary() + " serve -m " + test::model_path("stories260K-f32.gguf") +
                        " --no-mesh -c 128 --port " + std::to_string(port) + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("cannot listen on 127.0.0.1:" + std::to_string(port)), std::string::npos) << r.output;
}

}  // namespace
}  // namespace llmesh
