// The bridge between the scheduler thread and an HTTP request: each choice's sink turns tokens
// into text (UTF-8 safe), applies stop strings, splits thinking and tool calls out, and hands
// the results to the request's channel, which the HTTP thread drains and writes.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "output/output_parser.h"
#include "scheduler/scheduler.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::api {

struct TokenInfo {  // one generated token, for logprobs
  int32_t id;
  std::string piece;  // raw bytes (may be part of a UTF-8 character)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  // (piece, logprob)
};

struct ChannelEvent {
  int choice = 0;
  std::vector<OutputEvent> out;  // text / reasoning / tool call events now certain
  std::vector<TokenInfo> tokens;  // tokens behind them (only when logprobs were asked for)
  int cached_tokens = -1;        // on the first event of a choice: prompt tokens reused from cache
  bool done = false;
  GenerationResult result;       // when done
  std::string stop_string;       // when done by a stop string: which one
  std::string raw_text;          // when done: the whole generated text after stop handling
};

class ResponseChannel {
 public:
  void push(ChannelEvent ev);
  // Waits up to `timeout` for events; returns what arrived (possibly nothing).
  std::vector<ChannelEvent> wait(std::chrono::milliseconds timeout);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ChannelEvent> q_;
};

struct ChoiceConfig {
  std::vector<std::string> stop_strings;
  OutputParserOptions parser;
  std::string prefill;  // text the prompt already put in the model's mouth (forced tool call)
  bool logprobs = false;
};

class ChoiceSink : public GenerationSink {
 public:
  ChoiceSink(const Tokenizer& tok, ChoiceConfig cfg, std::shared_ptr<ResponseChannel> ch,
             int choice, Metrics* metrics);
  bool on_token(const TokenEvent& ev) override;
  void on_done(const GenerationResult& r) override;

 private:
  void emit(std::vector<OutputEvent> out, std::vector<TokenInfo> toks, int cached_tokens = -1);
  void strip_prefill(std::vector<OutputEvent>& out);

  const Tokenizer& tok_;
  ChoiceConfig cfg_;
  std::shared_ptr<ResponseChannel> ch_;
  int choice_;
  Metrics* metrics_;
  StreamDecoder decoder_;
  StopMatcher stop_;
  OutputParser parser_;
  std::string raw_;
  std::chrono::steady_clock::time_point last_token_;
  bool have_token_ = false;
  std::string unsent_prefill_;  // forced prefix not yet seen coming back as text
};

// The scheduler handles of one HTTP request's choices; cancels whatever is still running when
// destroyed, so a request that ends early (error, disconnect) never leaves generation behind.
class RunningRequest {
 public:
  explicit RunningRequest(Scheduler& s) : sched_(s) {}
  ~RunningRequest() { cancel(); }
  void add(Scheduler::Handle h) { handles_.push_back(std::move(h)); }
  void cancel() {
    for (auto& h : handles_) sched_.cancel(h);
  }

 private:
  Scheduler& sched_;
  std::vector<Scheduler::Handle> handles_;
};

}  // namespace llmesh::api
