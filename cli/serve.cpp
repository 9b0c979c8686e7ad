// llmesh serve -m MODEL.gguf: an OpenAI- and Anthropic-compatible HTTP endpoint for one model.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/log_options.h"
#include "cli/engine_options.h"
#include "cli/mesh_runtime.h"
#include "cli/moe_shard_options.h"
#include "cli/moe_shard_serving.h"
#include "cli/spec_options.h"
#include "cli/split_serving.h"
#include "log/event_log.h"
#include "scheduler/scheduler.h"
#include "server/api_server.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::cli {
namespace {

struct ServeOptions {
  EngineOptions engine;
  int port = 9337;
  std::string listen = "127.0.0.1";
  int parallel = 4;
  int max_queue = 64;
  std::string api_key;
  std::string chat_template;
  std::string name;
  std::vector<std::string> aliases;
  size_t max_body_mb = 32;
  bool json = false;
  bool quiet = false;
  MeshCliOptions mesh;
  LogCliOptions log;
  SplitOptions split;
  SpecCliOptions spec;
  MoeShardOptions moe;
};

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

int run_serve(ServeOptions& o) {
  apply_log_options(o.log);
  if (o.api_key.empty())
    if (const char* k = std::getenv("LLMESH_API_KEY")) o.api_key = k;
  if (!is_loopback(o.listen) && o.api_key.empty())
    logs::warn("serve", "no_api_key",
               fmt::format("warning: listening on {} without an API key: anyone who can reach this address can use "
                           "the model. Set --api-key or LLMESH_API_KEY.",
                           o.listen),
               {{"listen", o.listen}});

  // A split model: this node holds the embeddings and maybe a layer range; the rest is the
  // mesh's (cli/split_serving.h). Otherwise the whole model is loaded here.
  std::unique_ptr<SplitServing> split;
  LoadedEngine e;
  std::unique_ptr<LocalBatchModel> local_model;
  // A mixture-of-experts shard: the trunk plus the plan's experts for this node (docs/moe.md).
  if (o.moe.enabled() && o.split.enabled())
    throw std::invalid_argument("--moe-plan cannot be combined with --layers or --split");
  std::optional<moe::MoePlan> plan = apply_moe_shard(o.moe, o.engine);
  if (o.moe.exact && o.mesh.no_mesh) throw std::invalid_argument("--moe-exact needs the mesh: drop --no-mesh");
  if (o.mesh.no_mesh && (o.mesh.discovery.publish || o.mesh.discovery.auto_join || o.mesh.lan.lan()))
    throw std::invalid_argument("--publish, --auto and --discovery need the mesh: drop --no-mesh");
  if (o.mesh.no_mesh && (o.mesh.console_port_given || !o.mesh.console_listen.empty()))
    throw std::invalid_argument("--console-port and --console-listen need the mesh (the console shows it): drop --no-mesh");
  if (o.split.enabled()) {
    if (o.mesh.no_mesh) throw std::invalid_argument("--layers and --split need the mesh: drop --no-mesh");
    o.split.name = o.name;
    split = std::make_unique<SplitServing>(o.engine, o.split, o.parallel, o.quiet);
  } else {
    e = load_engine(o.engine, o.parallel);
    if (plan) check_moe_shard_model(*plan, o.moe, *e.model);
    local_model = std::make_unique<LocalBatchModel>(*e.forward);
  }
  // Before the scheduler, so it outlives the forward passes that may ask its peers for experts.
  std::unique_ptr<MoeShardServing> shard;
  if (plan) shard = std::make_unique<MoeShardServing>(*plan, o.moe, *e.model, static_cast<int>(e.pool->size()), o.quiet);
  const Model& entry_model = split ? split->entry_model() : *e.model;
  auto tok = Tokenizer::from_gguf(entry_model.file());
  BatchModel& batch_model = split ? split->batch_model() : *local_model;
  SchedulerOptions so;
  so.n_parallel = o.parallel;
  so.max_queue = o.max_queue;
  so.step_tokens = o.engine.batch;
  o.spec.fetch_cache = o.engine.fetch_cache;
  // The draft runs here, on the node that samples: on a split model's entry, its own pool.
  SpecSetup spec = make_spec(o.spec, entry_model, split ? nullptr : e.pool.get(), o.engine.threads, o.parallel,
                             batch_model.n_ctx());
  so.draft = spec.source.get();
  so.window = spec.window;
  Scheduler scheduler(batch_model, so);

  api::ServedModel sm;
  // The id clients use: --name, else a package's model id, else the file name without .gguf.
  sm.id = split ? split->model_id()
          : !o.name.empty() ? o.name
          : !e.model_id.empty() ? e.model_id
                                : std::filesystem::path(o.engine.model).stem().string();
  sm.aliases = o.aliases;
  struct stat st {};
  if (stat(o.engine.model.c_str(), &st) == 0) sm.created = st.st_mtime;
  sm.tokenizer = tok.get();
  if (split) {
    sm.unavailable = [sp = split.get()] { return sp->unavailable(); };
    sm.extra_metrics = [sp = split.get()] { return sp->metrics_text(); };
  }
  sm.scheduler = &scheduler;
  sm.speculative = spec.description;
  if (shard) {
    sm.expert_shard = true;
    sm.expert_shard_status = [sh = shard.get()] { return sh->status_json(); };
  }
  const auto& cfg = entry_model.config();
  sm.info = {{"architecture", cfg.arch_name}, {"n_layer", cfg.n_layer}, {"n_ctx_train", cfg.n_ctx_train},
             {"n_vocab", cfg.n_vocab}};

  std::string source;
  std::string origin;
  if (!o.chat_template.empty()) {
    std::ifstream in(o.chat_template, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read --chat-template " + o.chat_template);
    std::stringstream ss;
    ss << in.rdbuf();
    source = ss.str();
    origin = o.chat_template;
  } else if (auto t = entry_model.file().opt_string("tokenizer.chat_template")) {
    source = *t;
    origin = "the model's tokenizer.chat_template";
  }
  if (!source.empty()) {
    try {
      sm.chat_template = api::ChatTemplate::parse(source, origin);
    } catch (const api::TemplateError& err) {
      if (!o.chat_template.empty()) throw;
      logs::warn("serve", "chat_template_unsupported",
                 fmt::format("warning: {}; using ChatML instead (override with --chat-template)", err.what()));
    }
  }
  sm.describe_from_template();
  if (!o.json)
    logs::info("serve",
               fmt::format("model '{}' ({}, {} layers), {} slots x {} tokens of context, chat template: {}, tool "
                           "calls: {}{}{}{}",
                           sm.id, cfg.arch_name, cfg.n_layer, o.parallel, sm.n_ctx(),
                           source.empty() ? "ChatML (the model has none)" : origin,
                           api::tool_format_name(sm.tool_format), sm.thinking ? ", thinks in <think>" : "",
                           spec.source ? ", speculative: " : "", spec.description),
               {{"model", sm.id}, {"layers", cfg.n_layer}, {"slots", o.parallel}, {"context", sm.n_ctx()}});
  if (plan && !o.json)
    logs::info("serve", fmt::format("expert shard {} of {} (plan {}): {} experts of {}{}", o.moe.shard,
                                    plan->shards().size(), shard->record().plan, shard->experts_held(),
                                    plan->model.n_layer * plan->model.n_expert, o.moe.exact ? ", exact mode" : ""));

  api::ServerOptions so2;
  so2.host = o.listen;
  so2.port = o.port;
  so2.api_key = o.api_key;
  so2.max_queue = o.max_queue;
  so2.max_body_bytes = o.max_body_mb << 20;
  so2.log_requests = !o.quiet;

  std::unique_ptr<MeshRuntime> mesh;
  if (!o.mesh.no_mesh) {
    LocalNode local;
    local.role = gossip::Role::server;
    local.model = &sm;
    local.threads = split ? split->threads() : static_cast<int>(e.pool->size());
    if (split) {
      SplitServing* sp = split.get();
      local.describe = [sp](gossip::NodeState& st) { sp->describe(st); };
      local.take_stream = [sp](std::shared_ptr<mesh::Stream>& st) { return sp->take_stream(st); };
      local.split_status = [sp] { return sp->status_json(); };
    }
    if (shard) {
      MoeShardServing* sh = shard.get();
      local.describe = [sh](gossip::NodeState& st) {
        for (auto& m : st.models) m.experts = sh->record();
      };
      local.take_stream = [sh](std::shared_ptr<mesh::Stream>& st) { return sh->take_stream(st); };
    }
    local.api_key = o.api_key;
    local.api_host = o.listen;
    mesh = std::make_unique<MeshRuntime>(o.mesh, local, o.quiet);
    if (split) split->attach(mesh->node());
    if (shard) shard->attach(mesh->node(), *e.forward);
  }
  api::ApiServer server(&sm, so2, mesh ? mesh->router() : nullptr);
  api::ServeHooks hooks;
  if (mesh) {
    mesh->add_endpoints(server);
    hooks.on_listening = [&](int port) { return mesh->on_listening(port); };
    hooks.on_stopping = [&] { mesh->on_stopping(); };
  }
  int rc = api::serve_until_signal(server, so2, o.json, hooks);
  if (split) split->stop();
  if (shard) shard->stop();  // before the mesh's transport goes away
  return rc;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* sub = app.add_subcommand("serve", "Serve a model over OpenAI- and Anthropic-compatible HTTP APIs");
  add_engine_options(sub, o->engine);
  sub->add_option("--port", o->port, "TCP port (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  sub->add_option("--listen", o->listen, "Address to listen on")->capture_default_str();
  sub->add_option("--parallel", o->parallel, "Requests generated at once (KV cache slots)")
      ->check(CLI::Range(1, 256))->capture_default_str();
  sub->add_option("--max-queue", o->max_queue, "Requests waiting for a slot before new ones get 429")
      ->check(CLI::Range(0, 100000))->capture_default_str();
  sub->add_option("--api-key", o->api_key, "Require this key (Authorization: Bearer / x-api-key); also LLMESH_API_KEY");
  sub->add_option("--chat-template", o->chat_template, "Jinja chat template file (overrides the model's)")
      ->check(CLI::ExistingFile);
  sub->add_option("--name", o->name, "Model id clients use (default: the file name without .gguf)");
  sub->add_option("--alias", o->aliases, "More model names to answer to (repeatable), e.g. for agents with fixed names");
  sub->add_option("--max-body-mb", o->max_body_mb, "Largest request body in MiB")->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print the listening address as one JSON line");
  sub->add_flag("-q,--quiet", o->quiet, "No log line per request on stderr");
  add_mesh_options(sub, o->mesh, /*client=*/false);
  add_log_options(sub, o->log);
  add_split_options(sub, o->split);
  add_spec_options(sub, o->spec);
  add_moe_shard_options(sub, o->moe, /*exact=*/true);
  return [o] { return run_serve(*o); };
}

}  // namespace llmesh::cli
