// Subcommands of the `llmesh` binary. Each registers its options on the app and returns the
// function that runs it.
#pragma once
#include <functional>

#include <CLI/CLI.hpp>

namespace llmesh::cli {

using Runner = std::function<int()>;
Runner add_inspect(CLI::App& app);
Runner add_run(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_serve(CLI::App& app);
Runner add_client(CLI::App& app);
Runner add_invite(CLI::App& app);
Runner add_status(CLI::App& app);
Runner add_discover(CLI::App& app);
Runner add_package(CLI::App& app);
Runner add_fetch(CLI::App& app);
Runner add_moe(CLI::App& app);

}  // namespace llmesh::cli
