// Reading the model's output: thinking (<think>...</think>) and tool calls in the model's own
// format (Hermes/Qwen <tool_call> JSON, Llama 3.1 JSON, Mistral [TOOL_CALLS]) are separated from
// the answer text, incrementally, so streamed deltas never leak markup into the answer.
// Also: stop strings matched across token boundaries.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "output/json_extent.h"

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
  // What the bytes at the head of the buffer are being read as.
  enum class Mode {
    Content,       // answer text, watching for markers
    Reasoning,     // inside <think>...</think>
    JsonCall,      // a tool call's JSON (object or Mistral array), see call_kind_
    MistralName,   // [TOOL_CALLS]name[CALL_ID]id[ARGS]: reading the name / id
  };
  enum class CallKind { Hermes, Llama, MistralArray, MistralArgs };

  bool step(bool at_end);  // one decision; false when it needs more input
  bool step_content(bool at_end);
  bool step_reasoning(bool at_end);
  bool step_json_call(bool at_end);
  bool step_mistral_name(bool at_end);
  bool finish_json_call(std::string_view json_text, size_t consumed);
  void start_call(CallKind kind, std::string marker_text);
  // The call in progress was not a call after all: its marker and the first `body_bytes` of
  // the buffer become text, and reading resumes as content after them.
  void abandon_call(size_t body_bytes);

  void emit_text(std::string_view s);
  void emit_reasoning(std::string_view s);
  void emit_call(std::string name, std::string arguments);

  std::string_view unread() const { return std::string_view(buf_).substr(head_); }
  void consume(size_t n) { head_ += n; }

  OutputParserOptions opt_;
  std::string content_, reasoning_;
  std::vector<ToolCall> calls_;
  std::vector<OutputEvent> out_;  // events of the current feed()/finish()

  std::string buf_;   // undecided text; bytes before head_ are already consumed
  size_t head_ = 0;
  Mode mode_ = Mode::Content;

  // Content
  bool content_started_ = false;   // a non-whitespace character of the answer went out
  bool think_allowed_ = false;     // <think> may still open (only before any answer text)
  bool strip_after_call_ = false;  // drop whitespace (and Llama's ';') after a tool call
  bool strip_after_think_ = false; // drop newlines after </think>
  // Reasoning
  bool reasoning_started_ = false;  // the newlines right after <think> are behind us
  bool skip_think_tag_ = false;     // starts_thinking, yet the model may repeat <think>
  // Tool call in progress
  CallKind call_kind_ = CallKind::Hermes;
  std::string call_marker_;     // marker text already consumed, returned if it was no call
  JsonExtentScanner json_;      // over unread(), which starts at the call's body
  std::string mistral_name_;    // [TOOL_CALLS]name[ARGS]: the name, once [ARGS] is seen
};

// Stop strings matched across token boundaries: feed() returns the text safe to emit; once a
// stop string appears, matched() is true and the text from the stop string on is never emitted.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  std::string feed(std::string_view text);
  std::string finish();  // held-back tail when generation ended without a match
  bool matched() const { return matched_; }
  // The stop string that matched (empty when none has).
  const std::string& matched_string() const { return matched_string_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool matched_ = false;
  std::string matched_string_;
};

// Tool definitions as a system-prompt section, for templates that have no tools support of
// their own (ChatML fallback): Hermes-style instructions with the JSON schemas.
std::string tool_system_prompt(const nlohmann::ordered_json& tools);

std::string random_call_id(const char* prefix = "call_");

}  // namespace llmesh::api
