// The HTTP server of a node: OpenAI- and Anthropic-compatible endpoints over one served model,
// plus /health and /metrics. Requests are validated on the HTTP threads; generation runs on
// the scheduler's thread; every response is written by the request's own HTTP thread.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "server/metrics.h"
#include "server/request_flow.h"
#include "server/router.h"
#include "server/served_model.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace llmesh::api {

class ApiServer {
 public:
  ApiServer(ServedModel& model, ServerOptions opt) : ApiServer(&model, std::move(opt), nullptr) {}
  // `model` may be null (a client node), `router` may be null (no mesh): at least one is set.
  ApiServer(ServedModel* model, ServerOptions opt, ModelRouter* router);
  ~ApiServer();

  // Binds opt.host:opt.port (port 0: any free port); throws std::runtime_error naming the
  // address when it cannot.
  void bind();
  int port() const { return port_; }
  // Serves until stop(); call after bind().
  void run();
  void stop();
  // Graceful stop: stops accepting, lets running and queued requests finish (until
  // `deadline` or `hurry()` returns true), then closes every connection so run() returns.
  void drain_and_stop(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& hurry);

  Metrics& metrics() { return metrics_; }
  // The Prometheus text GET /metrics answers: this node's serving metrics, the model's own
  // (ServedModel::extra_metrics), then set_extra_metrics()'s (the mesh's).
  std::string metrics_text() const;
  void set_extra_metrics(std::function<std::string()> more) { extra_metrics_ = std::move(more); }

  // More endpoints on the same server (the mesh's /mesh/*). Register before run(). An ApiError
  // thrown by the handler is answered in the API's error shape; with needs_api_key the API key
  // (if the server has one) is checked first, like every /v1 endpoint.
  using ExtraHandler = std::function<void(const httplib::Request&, httplib::Response&)>;
  void add_endpoint(const std::string& method, const std::string& path, ExtraHandler handler,
                    bool needs_api_key = true);

 private:
  void routes();
  bool route(const httplib::Request& req, httplib::Response& res, ApiFlavor flavor);
  bool authorized(const std::string& authorization, const std::string& x_api_key) const;

  SchedulerStats local_stats() const;

  ServedModel* model_;
  ModelRouter* router_;
  ServerOptions opt_;
  Metrics metrics_;
  ApiContext ctx_;
  std::unique_ptr<httplib::Server> http_;
  std::function<std::string()> extra_metrics_;
  int port_ = -1;
  std::atomic<bool> run_returned_{false};
};

}  // namespace llmesh::api

namespace llmesh::api {

// Binds, prints where it listens (one JSON line with --json, else a human line), and serves
// until SIGINT/SIGTERM. Returns the process exit code.
struct ServeHooks {
  // After bind, before the listening line: extra fields for the JSON line (and its own lines).
  std::function<nlohmann::json(int port)> on_listening;
  // The first stop signal arrived: before running requests are drained.
  std::function<void()> on_stopping;
  std::string command = "serve";  // names the command in the lines it prints
};
int serve_until_signal(ApiServer& server, const ServerOptions& opt, bool json_output, const ServeHooks& hooks = {});

}  // namespace llmesh::api
