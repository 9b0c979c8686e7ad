#include "server/api_server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "log/event_log.h"
#include "server/connection_watch.h"
#include "server/endpoints.h"
#include "server/proxy.h"

namespace llmesh::api {
namespace {

using Handler = void (*)(const ApiContext&, const httplib::Request&, httplib::Response&);

// Anthropic's SDKs send anthropic-version (and x-api-key); their errors get Anthropic's shape.
ApiFlavor flavor_of(const httplib::Request& req) {
  if (req.path.rfind("/v1/messages", 0) == 0 || req.has_header("anthropic-version")) return ApiFlavor::Anthropic;
  return ApiFlavor::OpenAI;
}

// A request answered with an error, logged with its reason code: the error's code (e.g.
// model_not_found, invalid_api_key), else its type, from either API's error shape.
void log_refusal(const httplib::Request& req, const httplib::Response& res) {
  nlohmann::json body = nlohmann::json::parse(res.body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* err = body.is_object() && body.contains("error") && body["error"].is_object() ? &body["error"] : nullptr;
  auto text = [&](const char* key) {
    return err && err->contains(key) && (*err)[key].is_string() ? (*err)[key].get<std::string>() : std::string();
  };
  std::string reason = text("code");
  if (reason.empty()) reason = text("type");
  if (reason.empty()) reason = fmt::format("http_{}", res.status);
  std::string message = text("message");
  if (message.empty()) message = res.body.substr(0, 300);
  logs::warn("api", reason, fmt::format("{} {} -> {}: {}", req.method, req.path, res.status, message),
             {{"method", req.method}, {"path", req.path}, {"status", res.status}});
}

void write_error(httplib::Response& res, const ApiError& e, ApiFlavor flavor) {
  res.status = e.status;
  if (e.status == 429) res.set_header("Retry-After", "1");
  if (e.status == 503) res.set_header("Retry-After", "2");
  res.set_content(dump_json(error_body(e, flavor)), "application/json");
}

}  // namespace

ApiServer::ApiServer(ServedModel* model, ServerOptions opt, ModelRouter* router)
    : model_(model), router_(router), opt_(std::move(opt)), ctx_{model_, metrics_, opt_, router_},
      http_(std::make_unique<httplib::Server>()) {
  if (!model_ && !router_) throw std::invalid_argument("ApiServer needs a local model or a router");
  // Every request waiting in the scheduler's queue holds an HTTP thread, and proxied requests
  // hold one each while they stream.
  const int threads = opt_.http_threads > 0 ? opt_.http_threads : local_stats().n_parallel + opt_.max_queue + 8;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(opt_.max_body_bytes);
  // SO_REUSEADDR only: the library's default also sets SO_REUSEPORT, which would let a second
  // node bind the same port and silently share its connections.
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http_->set_keep_alive_timeout(10);  // an idle keep-alive connection holds an HTTP thread
  http_->set_read_timeout(30);
  http_->set_write_timeout(30);
  routes();
}

ApiServer::~ApiServer() { stop(); }

SchedulerStats ApiServer::local_stats() const {
  return model_ ? model_->scheduler->stats() : SchedulerStats{};
}

bool ApiServer::authorized(const std::string& authorization, const std::string& x_api_key) const {
  if (opt_.api_key.empty()) return true;
  if (x_api_key == opt_.api_key) return true;
  return authorization == "Bearer " + opt_.api_key;
}

void ApiServer::routes() {
  auto wrap = [this](std::string endpoint, Handler h, bool routable = false) {
    return [this, endpoint, h, routable](const httplib::Request& req, httplib::Response& res) {
      const ApiFlavor flavor = flavor_of(req);
      try {
        if (!authorized(req.get_header_value("Authorization"), req.get_header_value("x-api-key")))
          throw ApiError(401, "invalid_request_error",
                         "Invalid or missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'", "",
                         "invalid_api_key");
        if (!routable || !route(req, res, flavor)) h(ctx_, req, res);
      } catch (const ApiError& e) {
        write_error(res, e, flavor);
      } catch (const std::exception& e) {
        write_error(res, ApiError(500, "server_error", fmt::format("Internal error: {}", e.what())), flavor);
      }
      // The library turns "no status set" into 200 only after the handler returns.
      metrics_.request_done(endpoint, res.status < 0 ? 200 : res.status);
      if (opt_.log_requests && res.status >= 400 && res.status != 499)
        log_refusal(req, res);
    };
  };
  http_->Get("/v1/models", wrap("/v1/models", handle_models));
  http_->Get(R"(/v1/models/([^/]+))", wrap("/v1/models/{id}", handle_model));
  http_->Post("/v1/chat/completions", wrap("/v1/chat/completions", handle_chat_completions, true));
  http_->Post("/v1/completions", wrap("/v1/completions", handle_completions, true));
  http_->Post("/v1/messages", wrap("/v1/messages", handle_messages, true));
  http_->Post("/v1/messages/count_tokens", wrap("/v1/messages/count_tokens", handle_count_tokens, true));

  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    SchedulerStats s = local_stats();
    nlohmann::json j = {{"status", "ok"},
                        {"model", model_ ? nlohmann::json(model_->id) : nlohmann::json(nullptr)},
                        {"context_length", model_ ? model_->n_ctx() : 0},
                        {"slots", {{"total", s.n_parallel}, {"busy", s.active}, {"queued", s.queued}}}};
    if (model_ && !model_->speculative.empty())
      j["speculative"] = {{"proposer", model_->speculative},
                          {"windows", s.spec_windows},
                          {"drafted", s.spec_drafted},
                          {"accepted", s.spec_accepted},
                          {"acceptance", s.spec_drafted ? double(s.spec_accepted) / s.spec_drafted : 0.0},
                          {"tokens_per_verification", s.spec_windows ? double(s.spec_tokens) / s.spec_windows : 0.0}};
    if (model_ && model_->expert_shard && model_->expert_shard_status) j["expert_shard"] = model_->expert_shard_status();
    res.set_content(dump_json(j), "application/json");
  });
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });

  // Statuses the HTTP library produces itself (no route, body too large, bad request line)
  // get the same JSON error shape.
  http_->set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const ApiFlavor flavor = flavor_of(req);
    std::string msg;
    switch (res.status) {
      case 404: msg = fmt::format("No endpoint {} {} on this node (see GET /v1/models, POST /v1/chat/completions, "
                                  "/v1/completions, /v1/messages)", req.method, req.path); break;
      case 405: msg = fmt::format("Method {} is not allowed on {}", req.method, req.path); break;
      case 413: msg = fmt::format("The request body is larger than this node accepts ({} bytes)", opt_.max_body_bytes); break;
      case 414: msg = "The request URI is too long"; break;
      default: msg = fmt::format("HTTP error {}", res.status);
    }
    ApiError e(res.status, res.status == 404 ? "not_found_error" : "invalid_request_error", msg);
    res.set_content(dump_json(error_body(e, flavor)), "application/json");
    metrics_.request_done("other", res.status);
  });
}

std::string ApiServer::metrics_text() const {
  SchedulerStats s = local_stats();
  GaugeSnapshot g{s.active, s.queued, s.n_parallel, s.steps, s.prefill_tokens, {}};
  if (model_) g.speculative = model_->speculative;
  g.spec_windows = s.spec_windows;
  g.spec_drafted = s.spec_drafted;
  g.spec_accepted = s.spec_accepted;
  g.spec_tokens = s.spec_tokens;
  g.spec_failures = s.spec_failures;
  g.spec_window_mean = s.spec_window_mean;
  std::string text = metrics_.render(g);
  if (model_ && model_->extra_metrics) text += model_->extra_metrics();
  if (extra_metrics_) text += extra_metrics_();
  return text;
}

// Requests for a model this node does not serve go to a node that does. Returns false when
// the local handler should answer (a local model, or a body it will reject with a clear error).
bool ApiServer::route(const httplib::Request& req, httplib::Response& res, ApiFlavor flavor) {
  if (!router_) return false;
  nlohmann::json body = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
    if (model_) return false;
    body = parse_body(req.body);  // throws the precise error
    throw bad_request("'model' is required and must be a string", "model");
  }
  const std::string name = body["model"];
  if (model_ && model_->answers_to(name)) {
    // One of several expert shards (docs/moe.md): the session's home shard answers, wherever the
    // request entered; a request another node forwarded here is answered here.
    if (!model_->expert_shard || req.has_header("X-Llmesh-Forwarded")) return false;
    return proxy_in_order(ctx_, router_->shard_candidates(name, session_key(body)), name, req, res);
  }
  // A request another node forwarded here is answered here or nowhere: forwarding it again
  // could bounce it around the mesh while news of who serves what spreads.
  if (req.has_header("X-Llmesh-Forwarded")) {
    if (model_) return false;  // the local handler answers 404 model_not_found
    throw ApiError(404, "invalid_request_error",
                   fmt::format("The model '{}' is not served by this node (a request forwarded by the mesh is "
                               "never forwarded again)", name),
                   "model", "model_not_found");
  }
  proxy_request(ctx_, *router_, name, body, req, res, flavor);
  return true;
}

void ApiServer::add_endpoint(const std::string& method, const std::string& path, ExtraHandler handler,
                             bool needs_api_key) {
  auto h = [this, path, handler, needs_api_key](const httplib::Request& req, httplib::Response& res) {
    const ApiFlavor flavor = flavor_of(req);
    try {
      if (needs_api_key && !authorized(req.get_header_value("Authorization"), req.get_header_value("x-api-key")))
        throw ApiError(401, "invalid_request_error",
                       "Invalid or missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'", "",
                       "invalid_api_key");
      handler(req, res);
    } catch (const ApiError& e) {
      write_error(res, e, flavor);
    } catch (const std::exception& e) {
      write_error(res, ApiError(500, "server_error", fmt::format("Internal error: {}", e.what())), flavor);
    }
    metrics_.request_done(path, res.status < 0 ? 200 : res.status);
  };
  if (method == "GET")
    http_->Get(path, h);
  else if (method == "POST")
    http_->Post(path, h);
  else
    throw std::invalid_argument("add_endpoint: method " + method);
}

void ApiServer::bind() {
  if (opt_.port == 0) {
    port_ = http_->bind_to_any_port(opt_.host);
  } else {
    port_ = http_->bind_to_port(opt_.host, opt_.port) ? opt_.port : -1;
  }
  if (port_ < 0)
    throw std::runtime_error(fmt::format("cannot listen on {}:{} (address in use, or not an address of this host)",
                                         opt_.host, opt_.port));
}

void ApiServer::run() {
  http_->listen_after_bind();
  run_returned_ = true;
}

void ApiServer::stop() {
  if (http_) http_->stop();
}

void ApiServer::drain_and_stop(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& hurry) {
  // A signal can come between bind() and run() starting to listen; stopping a server that is
  // not running yet does nothing, so wait for it to run (or for run() to have returned).
  for (int i = 0; i < 5000 && !http_->is_running() && !run_returned_; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  http_->stop();  // no new connections; requests already read keep going
  while (model_ && std::chrono::steady_clock::now() < deadline && !hurry()) {
    SchedulerStats s = local_stats();
    if (s.active == 0 && s.queued == 0) {
      // Give the HTTP threads a moment to write the last chunks of what just finished.
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      break;
    }
  }
  // Idle keep-alive connections would otherwise hold run() for their whole timeout.
  shutdown_connections(port_);
}

}  // namespace llmesh::api

namespace llmesh::api {
namespace {
int g_signal_pipe[2] = {-1, -1};
extern "C" void on_stop_signal(int sig) {
  unsigned char s = static_cast<unsigned char>(sig);
  if (g_signal_pipe[1] >= 0) (void)!write(g_signal_pipe[1], &s, 1);
}
}  // namespace

int serve_until_signal(ApiServer& server, const ServerOptions& opt, bool json_output, const ServeHooks& hooks) {
  std::signal(SIGPIPE, SIG_IGN);  // a client that vanishes mid-write is handled, not fatal
  server.bind();
  nlohmann::json extra = hooks.on_listening ? hooks.on_listening(server.port()) : nlohmann::json::object();
  if (pipe(g_signal_pipe) != 0) throw std::runtime_error("cannot create the signal pipe");
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::thread watcher([&server, &hooks] {
    unsigned char s = 0;
    while (read(g_signal_pipe[0], &s, 1) < 0 && errno == EINTR) {
    }
    // First signal: finish what is running (up to 60 s); a second one: stop now.
    auto second_signal = [] {
      pollfd p{g_signal_pipe[0], POLLIN, 0};
      return poll(&p, 1, 50) > 0;
    };
    if (s != 0)
      logs::info(hooks.command, "stopping; finishing running requests (signal again to stop now)");
    if (hooks.on_stopping) hooks.on_stopping();
    server.drain_and_stop(std::chrono::steady_clock::now() + std::chrono::seconds(s == 0 ? 0 : 60), second_signal);
  });
  const std::string url = fmt::format("http://{}:{}/v1", opt.host.find(':') != std::string::npos
                                                             ? "[" + opt.host + "]" : opt.host, server.port());
  if (json_output) {
    nlohmann::json line{{"event", "listening"}, {"host", opt.host}, {"port", server.port()}, {"url", url}};
    if (extra.is_object()) line.update(extra);
    std::printf("%s\n", dump_json(line).c_str());
  } else {
    std::printf("llmesh %s: listening on %s (OpenAI: %s/chat/completions, Anthropic: %s/messages)\n",
                hooks.command.c_str(), url.c_str(), url.c_str(), url.c_str());
  }
  std::fflush(stdout);
  server.run();
  on_stop_signal(0);  // wake the watcher if the server stopped on its own
  watcher.join();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  close(g_signal_pipe[0]);
  close(g_signal_pipe[1]);
  g_signal_pipe[0] = g_signal_pipe[1] = -1;
  return 0;
}

}  // namespace llmesh::api
