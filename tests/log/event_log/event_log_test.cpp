// The structured log (log/event_log.h): text lines as the libraries wrote them, JSON lines that
// parse whatever the message holds, reason codes taken from " (reason code)", level filtering,
// and whole lines from concurrent emitters.
#include "log/event_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace llmesh::logs {
namespace {

// Redirects this process's stderr into a file for the life of the object; lines() reads it back.
class CapturedStderr {
 public:
  CapturedStderr() {
    static int serial = 0;
    path_ = ::testing::TempDir() + "/event_log_" + std::to_string(getpid()) + "_" + std::to_string(serial++);
    std::fflush(stderr);
    saved_ = dup(2);
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
  }
  ~CapturedStderr() {
    restore();
    std::remove(path_.c_str());
  }
  std::vector<std::string> lines() {
    restore();
    std::ifstream in(path_);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
    saved_ = -1;
  }
  std::string path_;
  int saved_ = -1;
};

// Each test starts from the defaults and leaves them behind.
class EventLog : public ::testing::Test {
 protected:
  void SetUp() override { configure(Format::text, Level::info); }
  void TearDown() override { configure(Format::text, Level::info); }
};

TEST_F(EventLog, ParsesFormatsAndLevels) {
  EXPECT_EQ(parse_format("text"), Format::text);
  EXPECT_EQ(parse_format("json"), Format::json);
  EXPECT_FALSE(parse_format("JSON"));
  EXPECT_FALSE(parse_format(""));
  EXPECT_EQ(parse_level("debug"), Level::debug);
  EXPECT_EQ(parse_level("info"), Level::info);
  EXPECT_EQ(parse_level("warn"), Level::warn);
  EXPECT_EQ(parse_level("error"), Level::error);
  EXPECT_FALSE(parse_level("warning"));
  EXPECT_EQ(level_name(Level::warn), "warn");
}

TEST_F(EventLog, EnvironmentIsCheckedAndNamed) {
  setenv("LLMESH_LOG_FORMAT", "json", 1);
  setenv("LLMESH_LOG_LEVEL", "warn", 1);
  configure_from_env();
  EXPECT_EQ(format(), Format::json);
  EXPECT_EQ(min_level(), Level::warn);
  setenv("LLMESH_LOG_FORMAT", "xml", 1);
  try {
    configure_from_env();
    FAIL() << "xml accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("LLMESH_LOG_FORMAT=xml"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("text|json"), std::string::npos) << e.what();
  }
  setenv("LLMESH_LOG_FORMAT", "text", 1);
  setenv("LLMESH_LOG_LEVEL", "loud", 1);
  try {
    configure_from_env();
    FAIL() << "loud accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("LLMESH_LOG_LEVEL=loud"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("debug|info|warn|error"), std::string::npos) << e.what();
  }
  unsetenv("LLMESH_LOG_FORMAT");
  unsetenv("LLMESH_LOG_LEVEL");
}

TEST_F(EventLog, FromLineTakesTheReason) {
  LogEvent e = from_line("mesh", "llmesh: mesh: node abc refused us (reason peer_rate_limited)");
  EXPECT_EQ(e.level, Level::warn);
  EXPECT_EQ(e.reason, "peer_rate_limited");
  EXPECT_EQ(e.component, "mesh");
  EXPECT_EQ(e.message, "node abc refused us");
  // Text is what the library wrote.
  EXPECT_EQ(render(e, Format::text), "llmesh: mesh: node abc refused us (reason peer_rate_limited)");

  // The reason need not end the line; text after it stays in the message.
  e = from_line("serve", "llmesh serve: --auto: mesh x did not admit this node: timeout (reason join_failed); trying the next");
  EXPECT_EQ(e.reason, "join_failed");
  EXPECT_EQ(e.message, "--auto: mesh x did not admit this node: timeout; trying the next");

  // "warning: " is the level's to say; other parentheses stay.
  e = from_line("fetch", "llmesh: warning: cannot reach x (gone); using the cache (reason source_unreachable)");
  EXPECT_EQ(e.reason, "source_unreachable");
  EXPECT_EQ(e.message, "cannot reach x (gone); using the cache");

  // No reason: information.
  e = from_line("stage", "stage: session from abc ended");
  EXPECT_EQ(e.level, Level::info);
  EXPECT_EQ(e.reason, "");
  EXPECT_EQ(e.message, "session from abc ended");

  // Not a code (spaces, capitals, nothing): left in the message.
  for (const char* line : {"x (reason a b)", "x (reason Bad)", "x (reason )", "x (reason unterminated"}) {
    e = from_line("c", line);
    EXPECT_EQ(e.reason, "") << line;
    EXPECT_EQ(e.message, line);
  }
  // A later "(reason" that is not a code does not hide an earlier one.
  e = from_line("c", "refused (reason wrong_secret): peer said (reason why not)");
  EXPECT_EQ(e.reason, "wrong_secret");
  EXPECT_EQ(e.message, "refused: peer said (reason why not)");
}

TEST_F(EventLog, TextOfTheHelpers) {
  LogEvent e;
  e.level = Level::warn;
  e.component = "kernels";
  e.reason = "isa_unsupported";
  e.message = "LLMESH_ISA=avx512 is not supported by this CPU; using avx2";
  EXPECT_EQ(render(e, Format::text),
            "llmesh kernels: LLMESH_ISA=avx512 is not supported by this CPU; using avx2 (reason isa_unsupported)");
  e.component.clear();
  e.reason.clear();
  EXPECT_EQ(render(e, Format::text), "llmesh: LLMESH_ISA=avx512 is not supported by this CPU; using avx2");
  // A line break in a message would forge a second line.
  e.message = "a\nb\rc";
  EXPECT_EQ(render(e, Format::text), "llmesh: a b c");
}

TEST_F(EventLog, JsonMembers) {
  LogEvent e = from_line("transport", "admission refused by peer ab12 at 10.0.0.1:9400 (reason wrong_secret)");
  e.fields = {{"peer", "ab12"}, {"level", "forged"}, {"attempt", 3}};
  const auto j = nlohmann::json::parse(render(e, Format::json));
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["component"], "transport");
  EXPECT_EQ(j["reason"], "wrong_secret");
  EXPECT_EQ(j["msg"], "admission refused by peer ab12 at 10.0.0.1:9400");
  EXPECT_EQ(j["peer"], "ab12");
  EXPECT_EQ(j["attempt"], 3);
  const std::string ts = j["ts"];
  // 2026-11-26T13:02:28.123Z
  ASSERT_EQ(ts.size(), 24u) << ts;
  EXPECT_EQ(ts[4], '-');
  EXPECT_EQ(ts[10], 'T');
  EXPECT_EQ(ts[19], '.');
  EXPECT_EQ(ts[23], 'Z');

  // No reason, no "reason" member; the fixed members come first.
  LogEvent plain;
  plain.component = "mesh";
  plain.message = "joined";
  const std::string line = render(plain, Format::json);
  EXPECT_EQ(line.rfind("{\"ts\":", 0), 0u) << line;
  EXPECT_FALSE(nlohmann::json::parse(line).contains("reason"));
}

TEST_F(EventLog, HostileMessagesStayOneParsableLine) {
  std::string hostile = "quote\" backslash\\ newline\n cr\r tab\t nul";
  hostile += '\0';
  hostile += " bell\x07 esc\x1b[31m invalid\xff\xfe utf8 \xc3 truncated \xe2\x82";
  LogEvent e = from_line("routing", "refused a request from " + hostile + " (reason bad_request)");
  e.fields["peer_said"] = hostile;
  std::string line;
  ASSERT_NO_THROW(line = render(e, Format::json));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.find('\0'), std::string::npos);
  EXPECT_EQ(line.find('\x1b'), std::string::npos);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(line)) << line;
  EXPECT_EQ(j["reason"], "bad_request");
  const std::string msg = j["msg"];
  EXPECT_NE(msg.find("quote\" backslash\\ newline\n cr\r tab\t nul"), std::string::npos);
  EXPECT_NE(msg.find("\xEF\xBF\xBD"), std::string::npos);  // U+FFFD for the invalid bytes
}

TEST_F(EventLog, LevelsFilterEmits) {
  CapturedStderr cap;
  configure(Format::text, Level::warn);
  debug("c", "d");
  info("c", "i");
  warn("c", "w_code", "w");
  error("c", "e_code", "e");
  emit(from_line("c", "plain line"));
  emit(from_line("c", "refused (reason r_code)"));
  const auto lines = cap.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "llmesh c: w (reason w_code)");
  EXPECT_EQ(lines[1], "llmesh c: e (reason e_code)");
  EXPECT_EQ(lines[2], "refused (reason r_code)");
}

TEST_F(EventLog, DebugIsOffByDefault) {
  CapturedStderr cap;
  debug("c", "hidden");
  info("c", "shown", {{"k", 1}});
  const auto lines = cap.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "llmesh c: shown");
}

TEST_F(EventLog, QuietSinkKeepsOnlyRefusalsAndFailures) {
  CapturedStderr cap;
  configure(Format::json, Level::info);
  auto quiet = line_sink("stage", true);
  auto loud = line_sink("stage");
  quiet("stage: session from a ended");
  quiet("stage: refused a stream from a: busy (reason stage_busy)");
  loud("stage: session from b ended");
  const auto lines = cap.lines();
  ASSERT_EQ(lines.size(), 2u);
  const auto a = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(a["reason"], "stage_busy");
  EXPECT_EQ(a["msg"], "refused a stream from a: busy");
  EXPECT_EQ(a["component"], "stage");
  const auto b = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(b["level"], "info");
  EXPECT_EQ(b["msg"], "session from b ended");
}

TEST_F(EventLog, ConcurrentLinesNeverInterleave) {
  constexpr int kThreads = 8;
  constexpr int kLines = 400;
  CapturedStderr cap;
  configure(Format::json, Level::info);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([t] {
      const std::string filler(200 + 37 * t, static_cast<char>('a' + t));
      for (int i = 0; i < kLines; ++i)
        warn("t" + std::to_string(t), "test_code", filler, {{"i", i}});
    });
  for (auto& th : threads) th.join();
  const auto lines = cap.lines();
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kLines));
  std::vector<std::set<int>> seen(kThreads);
  for (const auto& l : lines) {
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(l)) << l;
    const std::string comp = j["component"];
    const int t = std::stoi(comp.substr(1));
    ASSERT_EQ(j["msg"], std::string(200 + 37 * t, static_cast<char>('a' + t)));
    seen[t].insert(j["i"].get<int>());
  }
  for (const auto& s : seen) EXPECT_EQ(s.size(), static_cast<size_t>(kLines));
}

}  // namespace
}  // namespace llmesh::logs
