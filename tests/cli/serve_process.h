// A `llmesh` child process for the CLI tests: stdout is read for the listening line, stderr
// kept in a file.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_paths.h"

namespace llmesh::test {

// A `llmesh serve` child process; stdout is read for the listening line, stderr kept in a file.
class ServeProcess {
 public:
  // env: extra "NAME=value" entries for the child.
  explicit ServeProcess(std::vector<std::string> args, std::vector<std::string> env = {}) {
    static int serial = 0;
    err_path_ = ::testing::TempDir() + "/serve_stderr_" + std::to_string(getpid()) + "_" + std::to_string(serial++) + ".txt";
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      int e = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(e, 2);
      close(out[0]);
      for (auto& e : env) putenv(e.data());
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

}  // namespace llmesh::test
