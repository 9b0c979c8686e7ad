#include "fetch/fetch_progress.h"

#include <unistd.h>

#include <memory>
#include <mutex>

#include <fmt/format.h>

#include "log/event_log.h"

namespace llmesh::mesh {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}

ProgressFn stderr_progress(std::FILE* out) {
  struct State {
    std::mutex mu;
    std::string path;
    int last_decile = -1;
    bool tty = false;
  };
  auto st = std::make_shared<State>();
  st->tty = ::isatty(::fileno(out)) == 1;
  return [st, out](const FetchProgress& p) {
    std::lock_guard<std::mutex> lock(st->mu);
    if (p.path != st->path) {
      st->path = p.path;
      st->last_decile = -1;
    }
    double pct = p.total_bytes ? 100.0 * static_cast<double>(p.done_bytes) /
                                     static_cast<double>(p.total_bytes)
                               : 100.0;
    // JSON logs (docs/logging.md): one event per artifact from the cache, and per tenth fetched.
    const bool json = out == stderr && logs::format() == logs::Format::json;
    // Built only for an event actually logged: this runs for every chunk fetched.
    auto fields = [&] {
      return nlohmann::json{{"path", p.path},
                            {"done_bytes", p.done_bytes},
                            {"total_bytes", p.total_bytes},
                            {"bytes_per_second", p.bytes_per_second},
                            {"cached", p.from_cache}};
    };
    if (p.from_cache && json) {
      logs::info("fetch", fmt::format("{}  {}  cached", p.path, human_bytes(static_cast<double>(p.total_bytes))), fields());
      return;
    }
    if (p.from_cache) {
      fmt::print(out, "{}  {}  cached\n", p.path, human_bytes(static_cast<double>(p.total_bytes)));
      std::fflush(out);
      return;
    }
    std::string line = fmt::format("{}  {:5.1f}%  {} / {}  {}/s", p.path, pct,
                                   human_bytes(static_cast<double>(p.done_bytes)),
                                   human_bytes(static_cast<double>(p.total_bytes)),
                                   human_bytes(p.bytes_per_second));
    if (st->tty && !json) {
      fmt::print(out, "\r{}\x1b[K{}", line, p.finished ? "\n" : "");
    } else {
      int decile = static_cast<int>(pct / 10);
      if (p.finished) decile = 10;
      if (decile == st->last_decile) return;
      st->last_decile = decile;
      if (json) return logs::info("fetch", line, fields());
      fmt::print(out, "{}\n", line);
    }
    std::fflush(out);
  };
}

}  // namespace llmesh::mesh
