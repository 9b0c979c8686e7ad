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

#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

using json = nlohmann::json;

// A `llmesh serve` child process; stdout is read for the listening line, stderr kept in a file.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args) {
    err_path_ = ::testing::TempDir() + "/serve_stderr_" + std::to_string(getpid()) + ".txt";
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      int e = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(e, 2);
      close(out[0]);
      std::vector<char*> argv;
      std::string bin = test::llmesh_binary();
      argv.push_back(bin.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    out_ = out[0];
  }
  ~ServeProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) close(out_);
  }
  // The first stdout line (the JSON listening line), or "" if the process ended first.
  std::string first_line() {
    std::string line;
    char c;
    while (read(out_, &c, 1) == 1 && c != '\n') line += c;
    return line;
  }
  // Sends `sig` and waits up to `seconds`; returns the exit code, or -1 if it did not exit.
  int stop(int sig, double seconds) {
    kill(pid_, sig);
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }
  std::string stderr_text() const {
    std::ifstream in(err_path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool reaped_ = false;
  std::string err_path_;
};

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
  ServeProcess p({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--port", "0", "--json", "-c", "256",
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
  ServeProcess p({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--port", "0", "--json", "-c", "128",
                  "--listen", "0.0.0.0"});
  ASSERT_FALSE(p.first_line().empty());
  EXPECT_EQ(p.stop(SIGTERM, 5), 0);
  EXPECT_NE(p.stderr_text().find("without an API key"), std::string::npos) << p.stderr_text();
}

TEST(CliServe, ClearErrors) {
  auto r = test::run_command(test::llmesh_binary() + " serve -m " + test::model_path("stories260K-f32.gguf") +
                             " --chat-template /nonexistent.jinja 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("nonexistent.jinja"), std::string::npos) << r.output;
  const std::string bad = ::testing::TempDir() + "/bad_template.jinja";
  std::ofstream(bad) << "{% for m in messages %}{{ m.content }";
  r = test::run_command(test::llmesh_binary() + " serve -m " + test::model_path("stories260K-f32.gguf") +
                        " --port 0 --chat-template " + bad + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("line 1"), std::string::npos) << r.output;
  // The port is taken: say which address.
  ServeProcess p({"serve", "-m", test::model_path("stories260K-f32.gguf"), "--port", "0", "--json", "-c", "128"});
  int port = json::parse(p.first_line())["port"];
  r = test::run_command(test::llmesh_binary() + " serve -m " + test::model_path("stories260K-f32.gguf") +
                        " -c 128 --port " + std::to_string(port) + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("cannot listen on 127.0.0.1:" + std::to_string(port)), std::string::npos) << r.output;
}

}  // namespace
}  // namespace llmesh
