// llmesh: one binary, many subcommands.
#include <cstdio>
#include <exception>
#include <map>

#include "cli/commands.h"
#include "log/event_log.h"

int main(int argc, char** argv) {
  CLI::App app{"llmesh: a peer-to-peer mesh that serves large language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("llmesh ") + LLMESH_VERSION);
  std::map<CLI::App*, llmesh::cli::Runner> runners;
  auto add = [&](llmesh::cli::Runner (*f)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    auto r = f(app);
    runners[app.get_subcommands({})[before]] = std::move(r);
  };
  add(llmesh::cli::add_inspect);
  add(llmesh::cli::add_run);
  add(llmesh::cli::add_bench);
  add(llmesh::cli::add_serve);
  add(llmesh::cli::add_client);
  add(llmesh::cli::add_invite);
  add(llmesh::cli::add_status);
  add(llmesh::cli::add_discover);
  add(llmesh::cli::add_package);
  add(llmesh::cli::add_fetch);
  add(llmesh::cli::add_moe);
  CLI11_PARSE(app, argc, argv);
  // LLMESH_LOG_FORMAT and LLMESH_LOG_LEVEL (docs/logging.md), for every command; `serve` and
  // `client` options override them.
  try {
    llmesh::logs::configure_from_env();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llmesh: error: %s\n", e.what());
    return 1;
  }
  for (auto& [sub, run] : runners) {
    if (sub->parsed()) {
      try {
        return run();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "llmesh %s: error: %s\n", sub->get_name().c_str(), e.what());
        return 1;
      }
    }
  }
  return 1;
}
