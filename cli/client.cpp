// llmesh client --join TOKEN: an API-only mesh node. It holds no model: every request goes to a
// node of the mesh that serves the model asked for, streamed end to end.
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/log_options.h"
#include "cli/mesh_runtime.h"
#include "identity/node_identity.h"
#include "server/api_server.h"

namespace llmesh::cli {
namespace {

struct ClientOptions {
  int port = 9337;
  std::string listen = "127.0.0.1";
  std::string api_key;
  int max_queue = 64;
  size_t max_body_mb = 32;
  bool json = false;
  bool quiet = false;
  MeshCliOptions mesh;
  LogCliOptions log;
};

int run_client(ClientOptions& o) {
  apply_log_options(o.log);
  if (o.api_key.empty())
    if (const char* k = std::getenv("LLMESH_API_KEY")) o.api_key = k;
  if (o.mesh.join.empty() && !o.mesh.discovery.auto_join && !std::getenv("LLMESH_JOIN") &&
      !std::filesystem::exists(mesh::default_home() / "peers.json") &&
      !(o.mesh.lan.lan() && std::filesystem::exists(mesh::default_home() / "mesh.json")))
    throw std::runtime_error(
        "a client needs a mesh: --join TOKEN (ask a member to run `llmesh invite`), or --auto to join a public "
        "mesh found on nostr relays, or --discovery lan with the mesh's secret in $LLMESH_HOME/mesh.json");
  LocalNode local;
  local.role = gossip::Role::client;
  local.api_key = o.api_key;
  local.api_host = o.listen;
  MeshRuntime mesh(o.mesh, local, o.quiet);

  api::ServerOptions so;
  so.host = o.listen;
  so.port = o.port;
  so.api_key = o.api_key;
  so.max_queue = o.max_queue;
  so.max_body_bytes = o.max_body_mb << 20;
  so.log_requests = !o.quiet;
  api::ApiServer server(nullptr, so, mesh.router());
  mesh.add_endpoints(server);
  api::ServeHooks hooks;
  hooks.command = "client";
  hooks.on_listening = [&](int port) { return mesh.on_listening(port); };
  hooks.on_stopping = [&] { mesh.on_stopping(); };
  return api::serve_until_signal(server, so, o.json, hooks);
}

}  // namespace

Runner add_client(CLI::App& app) {
  auto o = std::make_shared<ClientOptions>();
  CLI::App* sub = app.add_subcommand(
      "client", "Join a mesh as an API-only node: serves every model of the mesh on a local endpoint, holds none");
  sub->add_option("--port", o->port, "TCP port of the API (0: any free port)")->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub->add_option("--listen", o->listen, "Address the API listens on")->capture_default_str();
  sub->add_option("--api-key", o->api_key, "Require this key (Authorization: Bearer / x-api-key); also LLMESH_API_KEY");
  sub->add_option("--max-queue", o->max_queue, "Requests in flight before new ones get 429")
      ->check(CLI::Range(0, 100000))->capture_default_str();
  sub->add_option("--max-body-mb", o->max_body_mb, "Largest request body in MiB")->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print the listening address (and the join result) as one JSON line");
  sub->add_flag("-q,--quiet", o->quiet, "No log line per request on stderr");
  add_mesh_options(sub, o->mesh, /*client=*/true);
  add_log_options(sub, o->log);
  return [o] { return run_client(*o); };
}

}  // namespace llmesh::cli
