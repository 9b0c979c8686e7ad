// The `llmesh` binary's logs as an operator configures them: LLMESH_LOG_FORMAT / LLMESH_LOG_LEVEL
// checked for every command, and failures logged as JSON lines with their reason codes.
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/serve_process.h"
#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

namespace fs = std::filesystem;

std::string llmesh(const std::string& args) { return test::llmesh_binary() + " " + args; }

// The stderr lines of a command run with `env` (stdout discarded).
std::vector<std::string> stderr_lines(const std::string& env, const std::string& args, int* exit_code = nullptr) {
  auto r = test::run_command(env + " " + llmesh(args) + " 2>&1 >/dev/null");
  if (exit_code) *exit_code = r.exit_code;
  std::vector<std::string> lines;
  std::istringstream in(r.output);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// The lines that are JSON objects carrying `reason`.
std::vector<nlohmann::json> events_with_reason(const std::vector<std::string>& lines, const std::string& reason) {
  std::vector<nlohmann::json> out;
  for (const auto& l : lines) {
    auto j = nlohmann::json::parse(l, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("reason", "") == reason) out.push_back(j);
  }
  return out;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

TEST(LogProcess, BadSettingsAreRefusedByName) {
  const std::string model = test::model_path("stories260K-f32.gguf");
  int code = 0;
  auto lines = stderr_lines("LLMESH_LOG_FORMAT=xml", "inspect " + model, &code);
  EXPECT_EQ(code, 1);
  std::string all = joined(lines);
  EXPECT_NE(all.find("LLMESH_LOG_FORMAT=xml"), std::string::npos) << all;
  EXPECT_NE(all.find("text|json"), std::string::npos) << all;
  lines = stderr_lines("LLMESH_LOG_LEVEL=verbose", "inspect " + model, &code);
  EXPECT_EQ(code, 1);
  all = joined(lines);
  EXPECT_NE(all.find("LLMESH_LOG_LEVEL=verbose"), std::string::npos) << all;
  EXPECT_NE(all.find("debug|info|warn|error"), std::string::npos) << all;
}

// A refused setting of the engine (LLMESH_ISA) is a warning with its reason, in either format.
TEST(LogProcess, WarningCarriesItsReason) {
  const std::string run = "run -m " + test::model_path("stories260K-f32.gguf") + " -p hi -n 1 --temp 0 --json -t 1";
  int code = 0;
  auto lines = stderr_lines("LLMESH_LOG_FORMAT=json LLMESH_ISA=bogus", run, &code);
  ASSERT_EQ(code, 0) << joined(lines);
  for (const auto& l : lines) EXPECT_TRUE(nlohmann::json::accept(l)) << "not a JSON line: " << l;
  auto ev = events_with_reason(lines, "isa_unknown");
  ASSERT_EQ(ev.size(), 1u) << joined(lines);
  EXPECT_EQ(ev[0]["level"], "warn");
  EXPECT_EQ(ev[0]["component"], "kernels");
  EXPECT_EQ(ev[0]["requested"], "bogus");
  EXPECT_EQ(ev[0]["msg"].get<std::string>().find("LLMESH_ISA=bogus is not one of"), 0u) << ev[0].dump();
  EXPECT_EQ(ev[0]["ts"].get<std::string>().size(), 24u);

  lines = stderr_lines("LLMESH_ISA=bogus", run, &code);
  ASSERT_EQ(code, 0);
  const std::string text = joined(lines);
  EXPECT_NE(text.find("LLMESH_ISA=bogus is not one of scalar|avx2|avx512|neon; using"), std::string::npos) << text;
  EXPECT_NE(text.find("(reason isa_unknown)"), std::string::npos) << text;

  // Below the configured level: not printed.
  lines = stderr_lines("LLMESH_LOG_FORMAT=json LLMESH_LOG_LEVEL=error LLMESH_ISA=bogus", run, &code);
  ASSERT_EQ(code, 0);
  EXPECT_TRUE(events_with_reason(lines, "isa_unknown").empty()) << joined(lines);
}

// A failure inside a mesh library (the package source is gone; the cached manifest is used),
// through its default log sink: a JSON line with the reason.
TEST(LogProcess, LibraryFailureIsAJsonLineWithItsReason) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("log_process_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const fs::path pkg = dir / "pkg", cache = dir / "cache";
  auto r = test::run_command(llmesh("package " + test::model_path("stories260K-f32.gguf") + " " + pkg.string() +
                                    " --json 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string fetch = "fetch " + pkg.string() + " --cache " + cache.string() + " --json";
  r = test::run_command(llmesh(fetch + " 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  fs::remove_all(pkg);
  int code = 0;
  auto lines = stderr_lines("LLMESH_LOG_FORMAT=json", fetch, &code);
  ASSERT_EQ(code, 0) << joined(lines);
  auto ev = events_with_reason(lines, "source_unreachable");
  ASSERT_EQ(ev.size(), 1u) << joined(lines);
  EXPECT_EQ(ev[0]["level"], "warn");
  EXPECT_EQ(ev[0]["component"], "fetch");
  const std::string msg = ev[0]["msg"];
  EXPECT_EQ(msg.find("cannot reach " + pkg.string()), 0u) << msg;  // no "llmesh: warning: " prefix
  EXPECT_EQ(msg.find("(reason"), std::string::npos) << msg;
  fs::remove_all(dir);
}

// `llmesh serve` in JSON: a request refused for its API key is a JSON line of component "api"
// with the error's code as its reason.
TEST(LogProcess, ServeLogsARefusedRequestAsJson) {
  test::ServeProcess p({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--no-mesh", "--port", "0", "--json",
                        "-c", "128", "--api-key", "right-key"},
                       {"LLMESH_LOG_FORMAT=json"});
  auto ready = nlohmann::json::parse(p.first_line());
  ASSERT_EQ(ready["event"], "listening");
  httplib::Client c("127.0.0.1", ready["port"].get<int>());
  c.set_bearer_token_auth("wrong-key");
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 401);
  EXPECT_EQ(p.stop(SIGTERM, 5), 0);
  std::vector<nlohmann::json> refused;
  std::istringstream in(p.stderr_text());
  for (std::string l; std::getline(in, l);) {
    auto j = nlohmann::json::parse(l, nullptr, false);
    if (j.is_object() && j.value("msg", "").find("GET /v1/models -> 401") != std::string::npos) refused.push_back(j);
  }
  ASSERT_EQ(refused.size(), 1u) << p.stderr_text();
  EXPECT_EQ(refused[0]["component"], "api");
  EXPECT_EQ(refused[0]["level"], "warn");
  EXPECT_EQ(refused[0]["reason"], "invalid_api_key");
  EXPECT_EQ(refused[0]["msg"].get<std::string>().find("(reason"), std::string::npos);
  EXPECT_EQ(refused[0]["ts"].get<std::string>().size(), 24u);
}

}  // namespace
}  // namespace llmesh
