#include "output/output_parser.h"

#include <utility>

#include "output/call_object.h"
#include "output/marker_search.h"

namespace llmesh::api {

namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kLlamaPythonTag = "<|python_tag|>";
constexpr std::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr std::string_view kMistralArgs = "[ARGS]";
constexpr std::string_view kMistralCallId = "[CALL_ID]";

constexpr std::string_view kSpace = " \t\r\n";
constexpr std::string_view kNewlines = "\r\n";
constexpr size_t npos = std::string_view::npos;

// Whitespace at the end of the answer is held back because it is dropped when a tool call
// follows; a longer run than this is clearly part of the answer and goes out.
constexpr size_t kMaxHeldSpace = 64;
// A Mistral [TOOL_CALLS]name[CALL_ID]id[ARGS] longer than this is not a call.
constexpr size_t kMaxMistralName = 128;

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool is_name_char(char c) { return is_alnum(c) || c == '_' || c == '-' || c == '.'; }

// Length of the run of `chars` that `text` ends with, or npos when longer than `limit`.
size_t trailing_run(std::string_view text, std::string_view chars, size_t limit) {
  size_t n = 0;
  while (n < text.size() && chars.find(text[text.size() - 1 - n]) != npos) {
    if (++n > limit) return npos;
  }
  return n;
}

std::string_view trim_end(std::string_view s, std::string_view chars) {
  size_t last = s.find_last_not_of(chars);
  return last == npos ? std::string_view() : s.substr(0, last + 1);
}

enum class TagMatch { Whole, Partial, No };
TagMatch match_tag(std::string_view text, std::string_view tag) {
  if (text.starts_with(tag)) return TagMatch::Whole;
  if (tag.starts_with(text)) return TagMatch::Partial;
  return TagMatch::No;
}

}  // namespace

OutputParser::OutputParser(const OutputParserOptions& opt) : opt_(opt) {
  if (opt_.starts_thinking) opt_.thinking = true;
  if (opt_.starts_thinking) {
    mode_ = Mode::Reasoning;
    skip_think_tag_ = true;
  }
  think_allowed_ = opt_.thinking && !opt_.starts_thinking;
}

std::vector<OutputEvent> OutputParser::feed(std::string_view text) {
  buf_.append(text);
  while (step(false)) {
  }
  // Dropping the consumed bytes once per feed (not per step) keeps hostile input linear.
  buf_.erase(0, head_);
  head_ = 0;
  return std::exchange(out_, {});
}

std::vector<OutputEvent> OutputParser::finish() {
  while (step(true)) {
  }
  buf_.clear();
  head_ = 0;
  return std::exchange(out_, {});
}

bool OutputParser::step(bool at_end) {
  switch (mode_) {
    case Mode::Content: return step_content(at_end);
    case Mode::Reasoning: return step_reasoning(at_end);
    case Mode::JsonCall: return step_json_call(at_end);
    case Mode::MistralName: return step_mistral_name(at_end);
  }
  return false;
}

bool OutputParser::step_content(bool at_end) {
  if (strip_after_call_ || strip_after_think_) {
    // Separators after a tool call (Llama 3 joins calls with ';') and the blank line after
    // </think> are layout, not answer.
    std::string_view skip = kNewlines;
    if (strip_after_call_) skip = opt_.tools == ToolFormat::Llama3 ? " \t\r\n;" : kSpace;
    std::string_view u = unread();
    size_t n = u.find_first_not_of(skip);
    if (n == npos) {
      consume(u.size());
      return false;
    }
    consume(n);
    strip_after_call_ = strip_after_think_ = false;
  }
  std::string_view u = unread();
  if (u.empty()) return false;

  // Openings recognised only before any answer text: <think>, and calls written as bare JSON:
  // Llama 3's object, and Mistral's list when the decoder did not render [TOOL_CALLS].
  const bool llama = opt_.tools == ToolFormat::Llama3;
  const char bare_json = llama ? '{' : opt_.tools == ToolFormat::Mistral ? '[' : 0;
  if (!content_started_ && (think_allowed_ || bare_json != 0)) {
    size_t n = u.find_first_not_of(kSpace);
    if (n == npos) {
      if (!at_end) return false;
    } else {
      std::string_view rest = u.substr(n);
      if (think_allowed_) {
        TagMatch m = match_tag(rest, kThinkOpen);
        if (m == TagMatch::Whole) {
          consume(n + kThinkOpen.size());
          think_allowed_ = false;
          mode_ = Mode::Reasoning;
          return true;
        }
        if (m == TagMatch::Partial && !at_end) return false;
      }
      if (bare_json != 0 && rest.front() == bare_json &&
          match_tag(rest, kMistralCalls) == TagMatch::No) {
        std::string space(u.substr(0, n));
        consume(n);
        start_call(llama ? CallKind::Llama : CallKind::MistralArray, std::move(space));
        return true;
      }
    }
  }

  std::string_view marker;
  if (opt_.tools == ToolFormat::Hermes) marker = kHermesOpen;
  if (opt_.tools == ToolFormat::Mistral) marker = kMistralCalls;
  if (opt_.tools == ToolFormat::Llama3) marker = kLlamaPythonTag;
  MarkerHit hit = find_marker(u, {marker});

  if (hit.found() && !hit.partial) {
    // Whitespace between the answer and a tool call is dropped (kept with the marker in case
    // the call turns out to be text after all).
    std::string_view before = trim_end(u.substr(0, hit.pos), kSpace);
    emit_text(before);
    std::string marker_text(u.substr(before.size(), hit.pos - before.size()));
    marker_text += marker;
    consume(hit.pos + marker.size());
    if (opt_.tools == ToolFormat::Mistral) {
      mode_ = Mode::MistralName;
      call_marker_ = std::move(marker_text);
    } else {
      start_call(llama ? CallKind::Llama : CallKind::Hermes, std::move(marker_text));
    }
    return true;
  }

  size_t safe = u.size();
  if (!at_end) {
    if (hit.found()) safe = hit.pos;
    if (!marker.empty()) {
      size_t space = trailing_run(u.substr(0, safe), kSpace, kMaxHeldSpace);
      if (space != npos) safe -= space;
    }
  }
  emit_text(u.substr(0, safe));
  consume(safe);
  return false;
}

bool OutputParser::step_reasoning(bool at_end) {
  std::string_view u = unread();
  if (!reasoning_started_) {
    size_t n = u.find_first_not_of(kNewlines);
    if (n == npos) {
      consume(u.size());
      return false;
    }
    consume(n);
    u = unread();
    if (skip_think_tag_) {
      // The prompt opened <think>, but a model may still write its own.
      TagMatch m = match_tag(u, kThinkOpen);
      if (m == TagMatch::Whole) {
        consume(kThinkOpen.size());
        skip_think_tag_ = false;
        return true;
      }
      if (m == TagMatch::Partial && !at_end) return false;
      skip_think_tag_ = false;
    }
    reasoning_started_ = true;
  }

  size_t close = u.find(kThinkClose);
  if (close != npos) {
    emit_reasoning(trim_end(u.substr(0, close), kNewlines));
    consume(close + kThinkClose.size());
    mode_ = Mode::Content;
    strip_after_think_ = true;
    think_allowed_ = false;
    return true;
  }
  size_t safe = u.size();
  if (!at_end) {
    safe -= partial_suffix_length(u, kThinkClose);
    // Newlines right before </think> are dropped, so they wait to see what follows.
    size_t newlines = trailing_run(u.substr(0, safe), kNewlines, kMaxHeldSpace);
    if (newlines != npos) safe -= newlines;
  }
  emit_reasoning(u.substr(0, safe));
  consume(safe);
  return false;
}

void OutputParser::start_call(CallKind kind, std::string marker_text) {
  mode_ = Mode::JsonCall;
  call_kind_ = kind;
  call_marker_ = std::move(marker_text);
  json_.reset(kind == CallKind::MistralArray ? "[{" : "{");
}

bool OutputParser::step_json_call(bool at_end) {
  std::string_view u = unread();
  switch (json_.scan(u)) {
    case JsonExtentScanner::State::Invalid:
      abandon_call(json_.invalid_at());
      return true;
    case JsonExtentScanner::State::Open:
      if (!at_end) return false;
      abandon_call(u.size());
      return true;
    case JsonExtentScanner::State::Complete: break;
  }
  const size_t end = json_.end();
  std::string_view json_text = u.substr(json_.begin(), end - json_.begin());
  if (call_kind_ != CallKind::Hermes) return finish_json_call(json_text, end);

  // Hermes: the JSON must be followed by </tool_call>.
  std::string_view rest = u.substr(end);
  size_t n = rest.find_first_not_of(kSpace);
  if (n == npos) {
    if (!at_end) return false;
    abandon_call(u.size());
    return true;
  }
  switch (match_tag(rest.substr(n), kHermesClose)) {
    case TagMatch::Whole: return finish_json_call(json_text, end + n + kHermesClose.size());
    case TagMatch::Partial:
      if (!at_end) return false;
      abandon_call(u.size());
      return true;
    case TagMatch::No: break;
  }
  abandon_call(end + n);
  return true;
}

bool OutputParser::finish_json_call(std::string_view json_text, size_t consumed) {
  std::vector<CallObject> calls;
  bool ok = false;
  if (auto value = parse_json(json_text)) {
    if (call_kind_ == CallKind::MistralArgs) {
      ok = value->is_object();
      if (ok) calls.push_back({mistral_name_, compact_json(*value)});
    } else if (value->is_array()) {
      // Mistral's list of calls is taken whole or not at all.
      ok = call_kind_ == CallKind::MistralArray && !value->empty();
      for (const auto& element : *value) {
        auto call = read_call_object(element);
        if (!call) {
          ok = false;
          break;
        }
        calls.push_back(std::move(*call));
      }
    } else if (auto call = read_call_object(*value)) {
      ok = true;
      calls.push_back(std::move(*call));
    }
  }
  if (!ok) {
    abandon_call(consumed);
    return true;
  }
  for (auto& call : calls) emit_call(std::move(call.name), std::move(call.arguments));
  consume(consumed);
  mode_ = Mode::Content;
  strip_after_call_ = true;
  return true;
}

bool OutputParser::step_mistral_name(bool at_end) {
  // After [TOOL_CALLS]: either a JSON list of calls (v0.3) or name[CALL_ID]id[ARGS]{...}.
  std::string_view u = unread();
  size_t pos = u.find_first_not_of(kSpace);
  if (pos == npos) {
    if (!at_end) return false;
    abandon_call(u.size());
    return true;
  }
  if (u[pos] == '[' || u[pos] == '{') {
    start_call(CallKind::MistralArray, std::move(call_marker_));
    return true;
  }
  const size_t name_begin = pos;
  while (pos < u.size() && is_name_char(u[pos]) && pos - name_begin <= kMaxMistralName) ++pos;
  const std::string_view name = u.substr(name_begin, pos - name_begin);
  if (name.empty() || name.size() > kMaxMistralName) {
    abandon_call(pos);
    return true;
  }
  if (pos == u.size()) {
    if (!at_end) return false;
    abandon_call(pos);
    return true;
  }
  // The optional [CALL_ID] is read past; calls get our own ids (see docs/tool-calls.md).
  std::string_view rest = u.substr(pos);
  if (rest.starts_with(kMistralCallId)) {
    pos += kMistralCallId.size();
    const size_t id_begin = pos;
    while (pos < u.size() && is_alnum(u[pos]) && pos - id_begin <= kMaxMistralName) ++pos;
    if (pos - id_begin > kMaxMistralName) {
      abandon_call(pos);
      return true;
    }
    rest = u.substr(pos);
  } else if (match_tag(rest, kMistralCallId) == TagMatch::Partial && !at_end) {
    return false;
  }
  switch (match_tag(rest, kMistralArgs)) {
    case TagMatch::Whole: {
      std::string marker_text = std::move(call_marker_);
      marker_text += u.substr(0, pos + kMistralArgs.size());
      mistral_name_ = std::string(name);
      consume(pos + kMistralArgs.size());
      start_call(CallKind::MistralArgs, std::move(marker_text));
      return true;
    }
    case TagMatch::Partial:
      if (!at_end) return false;
      break;
    case TagMatch::No: break;
  }
  abandon_call(rest.empty() ? u.size() : pos);
  return true;
}

void OutputParser::abandon_call(size_t body_bytes) {
  std::string text = std::move(call_marker_);
  call_marker_.clear();
  text += unread().substr(0, body_bytes);
  consume(body_bytes);
  mode_ = Mode::Content;
  emit_text(text);
}

void OutputParser::emit_text(std::string_view s) {
  if (s.empty()) return;
  content_ += s;
  if (s.find_first_not_of(kSpace) != npos) content_started_ = true;
  if (!out_.empty() && out_.back().kind == OutputEvent::Kind::Text) {
    out_.back().text += s;
  } else {
    OutputEvent event;
    event.kind = OutputEvent::Kind::Text;
    event.text = std::string(s);
    out_.push_back(std::move(event));
  }
}

void OutputParser::emit_reasoning(std::string_view s) {
  if (s.empty()) return;
  reasoning_ += s;
  if (!out_.empty() && out_.back().kind == OutputEvent::Kind::Reasoning) {
    out_.back().text += s;
  } else {
    OutputEvent event;
    event.kind = OutputEvent::Kind::Reasoning;
    event.text = std::string(s);
    out_.push_back(std::move(event));
  }
}

void OutputParser::emit_call(std::string name, std::string arguments) {
  OutputEvent event;
  event.kind = OutputEvent::Kind::ToolCall;
  event.index = static_cast<int>(calls_.size());
  event.call = ToolCall{random_call_id(), std::move(name), std::move(arguments)};
  calls_.push_back(event.call);
  out_.push_back(std::move(event));
}

}  // namespace llmesh::api
