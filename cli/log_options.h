// --log-format and --log-level of `llmesh serve` and `llmesh client` (docs/logging.md). They
// override LLMESH_LOG_FORMAT / LLMESH_LOG_LEVEL, which cli/main.cpp applies to every command.
#pragma once
#include <string>

namespace CLI {
class App;
}

namespace llmesh::cli {

struct LogCliOptions {
  std::string format;  // "" (keep the environment's), "text" or "json"
  std::string level;   // "" (keep the environment's), "debug", "info", "warn" or "error"
};

void add_log_options(CLI::App* sub, LogCliOptions& o);
// Call first thing in the command's runner, before anything logs.
void apply_log_options(const LogCliOptions& o);

}  // namespace llmesh::cli
