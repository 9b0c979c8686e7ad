// Structured logging of a node: one line per event on stderr, as readable text (the default) or
// as one JSON object per line, with a reason code on every refusal and failure (docs/logging.md).
//
// Process-wide and thread-safe. The mesh libraries do not use it directly: they report lines
// through their options' `log` callbacks (tests capture those), and the CLI hands them
// `line_sink`, which turns each line into an event (a trailing " (reason code)" becomes the
// reason). Include this header from .cpp files only: it pulls in nlohmann/json.hpp.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace llmesh::logs {

enum class Level { debug, info, warn, error };
enum class Format { text, json };

struct LogEvent {
  Level level = Level::info;
  std::string component;  // what logged it: "mesh", "transport", "serve", "api", ...
  std::string reason;     // snake_case code of a refusal or failure (docs/logging.md); empty otherwise
  std::string message;    // what happened, without a "llmesh ...: " prefix or a "(reason ...)" suffix
  nlohmann::json fields = nlohmann::json::object();  // extra JSON members (ignored by the text format)
  // The text-format line, when it is not "llmesh <component>: <message> (reason <reason>)": lines
  // taken from a library callback (from_line) are printed in text exactly as the library wrote them.
  std::string text;
};

// Process-wide settings; the defaults are text and info.
void configure(Format format, Level min_level);
Format format();
Level min_level();
bool enabled(Level level);
// LLMESH_LOG_FORMAT (text|json) and LLMESH_LOG_LEVEL (debug|info|warn|error), where set. A value
// that is not one of those throws std::invalid_argument naming the variable and the allowed values.
void configure_from_env();

std::optional<Format> parse_format(std::string_view name);  // "text" | "json"
std::optional<Level> parse_level(std::string_view name);    // "debug" | "info" | "warn" | "error"
std::string_view level_name(Level level);

// The line an event is printed as (no newline). Never throws on hostile text: invalid UTF-8 is
// replaced (U+FFFD) in JSON, control characters are escaped.
std::string render(const LogEvent& event, Format format);
// One line on stderr when the event's level is enabled; lines of concurrent emits never interleave.
void emit(const LogEvent& event);

void debug(std::string_view component, std::string message, nlohmann::json fields = {});
void info(std::string_view component, std::string message, nlohmann::json fields = {});
void warn(std::string_view component, std::string_view reason, std::string message, nlohmann::json fields = {});
void error(std::string_view component, std::string_view reason, std::string message, nlohmann::json fields = {});

// An event from a line of a library's log callback: a trailing " (reason code)" becomes the reason
// and makes it a warning; the message drops a leading "llmesh: " / "llmesh <word>: ",
// "<component>: " and "warning: ". In text, the line is printed unchanged.
LogEvent from_line(std::string_view component, std::string_view line);
// A callback for the options' `log` members: from_line + emit. quiet: only warnings and errors.
// text_prefix goes in front of each line (in text; "llmesh serve: "), as the CLI printed them.
std::function<void(const std::string&)> line_sink(std::string component, bool quiet = false,
                                                  std::string text_prefix = {});

}  // namespace llmesh::logs
