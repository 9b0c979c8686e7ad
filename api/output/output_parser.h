// Reading the model's output: thinking (<think>...</think>) and tool calls in the model's own
// format (Hermes/Qwen <tool_call> JSON, Llama 3.1 JSON, Mistral [TOOL_CALLS]) are separated from
// the answer text, incrementally, so streamed deltas never leak markup into the answer.
// Also: stop strings matched across token boundaries.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmesh::api {

enum class ToolFormat { None, Hermes, Llama3, Mistral };
const char* tool_format_name(ToolFormat f);

// The format a chat template makes the model write tool calls in (from the template source).
ToolFormat detect_tool_format(std::string_view template_source);
// Whether the template makes the model think in <think>...</think>.
bool detect_thinking(std::string_view template_source);

struct ToolCall {
  std::string id;         // "call_" + 24 random alphanumerics
  std::string name;
  std::string arguments;  // JSON object text
};

struct OutputEvent {
  enum class Kind { Text, Reasoning, ToolCall } kind;
  std::string text;  // Text / Reasoning: the delta
  int index = -1;    // ToolCall: index among this response's tool calls
  ToolCall call;     // ToolCall: complete call
};

struct OutputParserOptions {
  ToolFormat tools = ToolFormat::None;  // None: tool-call markup is plain text
  bool thinking = false;       // <think>...</think> is reasoning, not text
  bool starts_thinking = false;  // the prompt already opened <think> (output begins inside it)
};

class OutputParser {
 public:
  explicit OutputParser(const OutputParserOptions& opt);
  // Feeds newly generated text; returns the events now certain. Text that could still be
  // the start of a marker is held back until it is decided.
  std::vector<OutputEvent> feed(std::string_view text);
  // End of output: flushes what was held back. A tool call that never completed or is not
  // valid JSON is returned as text (nothing is dropped).
  std::vector<OutputEvent> finish();

  // Everything so far.
  const std::string& content() const { return content_; }
  const std::string& reasoning() const { return reasoning_; }
  const std::vector<ToolCall>& tool_calls() const { return calls_; }

 private:
  OutputParserOptions opt_;
  std::string content_, reasoning_;
  std::vector<ToolCall> calls_;
  std::string pending_;
  int state_ = 0;
};

// Stop strings matched across token boundaries: feed() returns the text safe to emit; once a
// stop string appears, matched() is true and the text from the stop string on is never emitted.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  std::string feed(std::string_view text);
  std::string finish();  // held-back tail when generation ended without a match
  bool matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool matched_ = false;
};

// Tool definitions as a system-prompt section, for templates that have no tools support of
// their own (ChatML fallback): Hermes-style instructions with the JSON schemas.
std::string tool_system_prompt(const nlohmann::ordered_json& tools);

std::string random_call_id(const char* prefix = "call_");

}  // namespace llmesh::api
