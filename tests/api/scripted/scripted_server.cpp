// llmesh_scripted_server: the real HTTP server, scheduler, chat template and output parser in
// front of a scripted model, so SDK tests can make the "model" call tools deterministically.
//   llmesh_scripted_server --gguf qwen3-tiny-q8_0.gguf --script rules.json [--port 0] [--json]
#include <CLI/CLI.hpp>

#include <fstream>

#include "gguf/gguf.h"
#include "scripted_model.h"
#include "server/api_server.h"

int main(int argc, char** argv) {
  using namespace llmesh;
  CLI::App app{"llmesh API server in front of a scripted model (tests only)"};
  std::string gguf_path, script_path, name = "scripted", api_key;
  int port = 0, parallel = 4, ctx = 4096, max_queue = 8;
  bool json = false;
  app.add_option("--gguf", gguf_path, "GGUF whose tokenizer and chat template to use")->required();
  app.add_option("--script", script_path, "JSON list of {when, say} rules")->required();
  app.add_option("--port", port);
  app.add_option("--parallel", parallel);
  app.add_option("--ctx", ctx);
  app.add_option("--max-queue", max_queue);
  app.add_option("--name", name);
  app.add_option("--api-key", api_key);
  app.add_flag("--json", json);
  CLI11_PARSE(app, argc, argv);
  try {
    auto file = GgufFile::open(gguf_path);
    auto tok = Tokenizer::from_gguf(*file);
    std::ifstream in(script_path);
    auto rules = test::ScriptedBatchModel::rules_from_json(nlohmann::json::parse(in));
    test::ScriptedBatchModel model(*tok, rules, ctx, parallel);
    SchedulerOptions so;
    so.n_parallel = parallel;
    so.max_queue = max_queue;
    Scheduler sched(model, so);
    api::ServedModel sm;
    sm.id = name;
    sm.tokenizer = tok.get();
    sm.scheduler = &sched;
    if (auto t = file->opt_string("tokenizer.chat_template")) sm.chat_template = api::ChatTemplate::parse(*t);
    sm.describe_from_template();
    api::ServerOptions opt;
    opt.port = port;
    opt.api_key = api_key;
    opt.max_queue = max_queue;
    api::ApiServer server(sm, opt);
    return api::serve_until_signal(server, opt, json);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llmesh_scripted_server: error: %s\n", e.what());
    return 1;
  }
}
