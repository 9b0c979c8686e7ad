// Structured logging (event_log.h): rendering of events as text or JSON lines, and one writer.
//
// A mutex and one fwrite per line, not spdlog: all this needs of a logging library is a sink
// that writes whole lines to stderr, and spdlog's headers (with its own fmt) would be compiled
// into every source that logs.
#include "log/event_log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

namespace llmesh::logs {

namespace {

std::atomic<Format> g_format{Format::text};
std::atomic<Level> g_level{Level::info};

std::mutex& output_mutex() {
  static std::mutex m;
  return m;
}

// RFC 3339, UTC, milliseconds: 2026-11-26T13:02:28.123Z.
std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(ms % 1000));
}

bool is_reason_code(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

bool starts_with_word_prefix(std::string_view s, std::string_view word) {
  return s.size() > word.size() + 2 && s.substr(0, word.size()) == word && s.substr(word.size(), 2) == ": ";
}

// Drops "llmesh: " or "llmesh <word>: ", then "<component>: " and "warning: ", from the front of a line.
std::string_view strip_prefixes(std::string_view s, std::string_view component) {
  if (s.substr(0, 8) == "llmesh: ") {
    s.remove_prefix(8);
  } else if (s.substr(0, 7) == "llmesh ") {
    const size_t colon = s.find(": ", 7);
    const size_t space = s.find(' ', 7);
    if (colon != std::string_view::npos && colon > 7 && space == colon + 1) s.remove_prefix(colon + 2);
  }
  if (!component.empty() && starts_with_word_prefix(s, component)) s.remove_prefix(component.size() + 2);
  if (s.substr(0, 9) == "warning: ") s.remove_prefix(9);  // the level says it
  return s;
}

std::string text_line(const LogEvent& e) {
  if (!e.text.empty()) return e.text;
  std::string line = e.component.empty() ? "llmesh: " : "llmesh " + e.component + ": ";
  line += e.message;
  if (!e.reason.empty()) line += " (reason " + e.reason + ")";
  return line;
}

std::string json_line(const LogEvent& e) {
  nlohmann::ordered_json out;
  out["ts"] = utc_timestamp();
  out["level"] = level_name(e.level);
  out["component"] = e.component;
  out["msg"] = e.message;
  if (!e.reason.empty()) out["reason"] = e.reason;
  if (e.fields.is_object())
    for (const auto& [k, v] : e.fields.items())
      if (!out.contains(k)) out[k] = v;  // the fixed members win over a field of the same name
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Text lines go out as written, except that a line break inside one would forge a second line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

LogEvent make(Level level, std::string_view component, std::string_view reason, std::string message,
              nlohmann::json fields) {
  LogEvent e;
  e.level = level;
  e.component = std::string(component);
  e.reason = std::string(reason);
  e.message = std::move(message);
  if (fields.is_object()) e.fields = std::move(fields);
  return e;
}

}  // namespace

void configure(Format f, Level min) {
  g_format.store(f);
  g_level.store(min);
}

Format format() { return g_format.load(); }
Level min_level() { return g_level.load(); }
bool enabled(Level level) { return static_cast<int>(level) >= static_cast<int>(g_level.load()); }

void configure_from_env() {
  Format f = format();
  Level l = min_level();
  if (const char* v = std::getenv("LLMESH_LOG_FORMAT"); v && *v) {
    auto p = parse_format(v);
    if (!p) throw std::invalid_argument(fmt::format("LLMESH_LOG_FORMAT={}: not one of text|json", v));
    f = *p;
  }
  if (const char* v = std::getenv("LLMESH_LOG_LEVEL"); v && *v) {
    auto p = parse_level(v);
    if (!p) throw std::invalid_argument(fmt::format("LLMESH_LOG_LEVEL={}: not one of debug|info|warn|error", v));
    l = *p;
  }
  configure(f, l);
}

std::optional<Format> parse_format(std::string_view name) {
  if (name == "text") return Format::text;
  if (name == "json") return Format::json;
  return std::nullopt;
}

std::optional<Level> parse_level(std::string_view name) {
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn") return Level::warn;
  if (name == "error") return Level::error;
  return std::nullopt;
}

std::string_view level_name(Level level) {
  switch (level) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "info";
}

std::string render(const LogEvent& e, Format f) { return f == Format::json ? json_line(e) : one_line(text_line(e)); }

void emit(const LogEvent& e) {
  if (!enabled(e.level)) return;
  std::string line = render(e, format());
  line += '\n';
  std::lock_guard lock(output_mutex());
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

void debug(std::string_view component, std::string message, nlohmann::json fields) {
  if (enabled(Level::debug)) emit(make(Level::debug, component, {}, std::move(message), std::move(fields)));
}
void info(std::string_view component, std::string message, nlohmann::json fields) {
  if (enabled(Level::info)) emit(make(Level::info, component, {}, std::move(message), std::move(fields)));
}
void warn(std::string_view component, std::string_view reason, std::string message, nlohmann::json fields) {
  if (enabled(Level::warn)) emit(make(Level::warn, component, reason, std::move(message), std::move(fields)));
}
void error(std::string_view component, std::string_view reason, std::string message, nlohmann::json fields) {
  if (enabled(Level::error)) emit(make(Level::error, component, reason, std::move(message), std::move(fields)));
}

LogEvent from_line(std::string_view component, std::string_view line) {
  LogEvent e;
  e.component = std::string(component);
  e.text = std::string(line);
  std::string message(line);
  // The last "(reason code)" of the line, usually at its end.
  for (size_t at = message.rfind("(reason "); at != std::string::npos;
       at = at == 0 ? std::string::npos : message.rfind("(reason ", at - 1)) {
    const size_t start = at + 8;
    const size_t close = message.find(')', start);
    if (close == std::string::npos) continue;
    const std::string_view code = std::string_view(message).substr(start, close - start);
    if (!is_reason_code(code)) continue;
    e.reason = std::string(code);
    e.level = Level::warn;
    size_t cut_from = at;
    if (cut_from > 0 && message[cut_from - 1] == ' ') --cut_from;
    message.erase(cut_from, close + 1 - cut_from);
    break;
  }
  e.message = std::string(strip_prefixes(message, component));
  return e;
}

std::function<void(const std::string&)> line_sink(std::string component, bool quiet, std::string text_prefix) {
  return [component = std::move(component), quiet, prefix = std::move(text_prefix)](const std::string& line) {
    LogEvent e = from_line(component, prefix.empty() ? line : prefix + line);
    if (quiet && e.level < Level::warn) return;
    emit(e);
  };
}

}  // namespace llmesh::logs
