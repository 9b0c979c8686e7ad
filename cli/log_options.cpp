#include "cli/log_options.h"

#include <stdexcept>

#include <CLI/CLI.hpp>

#include "log/event_log.h"

namespace llmesh::cli {

void add_log_options(CLI::App* sub, LogCliOptions& o) {
  sub->add_option("--log-format", o.format,
                  "Log lines on stderr as text (default) or json, one object per line (docs/logging.md); "
                  "overrides LLMESH_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}));
  sub->add_option("--log-level", o.level,
                  "Least severe log level printed: debug, info (default), warn or error; overrides LLMESH_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
}

void apply_log_options(const LogCliOptions& o) {
  logs::Format f = logs::format();
  logs::Level l = logs::min_level();
  if (!o.format.empty()) {
    auto p = logs::parse_format(o.format);
    if (!p) throw std::invalid_argument("--log-format " + o.format + ": not one of text|json");
    f = *p;
  }
  if (!o.level.empty()) {
    auto p = logs::parse_level(o.level);
    if (!p) throw std::invalid_argument("--log-level " + o.level + ": not one of debug|info|warn|error");
    l = *p;
  }
  logs::configure(f, l);
}

}  // namespace llmesh::cli
