#include "server/proxy.h"

#include <fmt/format.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "server/api_error.h"
#include "server/connection_watch.h"

namespace llmesh::api {
namespace {

// One HTTP exchange with another node, run on its own thread; chunks are handed over through
// a bounded queue so a slow client slows the upstream read instead of growing memory.
class HttpUpstreamResponse : public UpstreamResponse {
 public:
  HttpUpstreamResponse(std::string host, int port, std::string api_key, ProxiedRequest req) {
    worker_ = std::thread([this, host, port, api_key, req = std::move(req)]() mutable { run(host, port, api_key, req); });
  }
  ~HttpUpstreamResponse() override {
    cancel();
    worker_.join();
  }

  // Waits for the status line and headers (or failure).
  void wait_head() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return head_ || finished_; });
    if (!head_) throw UpstreamUnavailable(error_.empty() ? "no answer" : error_);
  }

  bool read(std::string& chunk) override {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return !chunks_.empty() || finished_ || cancelled_; });
    if (cancelled_ || chunks_.empty()) return false;
    chunk = std::move(chunks_.front());
    chunks_.pop_front();
    cv_.notify_all();
    return true;
  }
  void cancel() override {
    std::lock_guard<std::mutex> l(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }
  std::string failed() const override {
    std::lock_guard<std::mutex> l(mu_);
    return error_;
  }

 private:
  void run(const std::string& host, int port, const std::string& api_key, const ProxiedRequest& pr) {
    httplib::Client cli(host, port);
    cli.set_connection_timeout(3);
    cli.set_read_timeout(600);
    httplib::Request r;
    r.method = pr.method;
    r.path = pr.path;
    r.body = pr.body;
    r.set_header("Content-Type", pr.content_type.empty() ? "application/json" : pr.content_type);
    for (const auto& [k, v] : pr.headers) r.set_header(k.c_str(), v.c_str());
    if (!api_key.empty()) r.set_header("Authorization", ("Bearer " + api_key).c_str());
    r.response_handler = [this](const httplib::Response& resp) {
      std::lock_guard<std::mutex> l(mu_);
      status = resp.status;
      content_type = resp.get_header_value("Content-Type");
      head_ = true;
      cv_.notify_all();
      return !cancelled_;
    };
    r.content_receiver = [this](const char* data, size_t n, uint64_t, uint64_t) {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return chunks_.size() < 64 || cancelled_; });
      if (cancelled_) return false;
      chunks_.emplace_back(data, n);
      cv_.notify_all();
      return true;
    };
    httplib::Response resp;
    httplib::Error err = httplib::Error::Success;
    bool ok = cli.send(r, resp, err);
    std::lock_guard<std::mutex> l(mu_);
    if (!ok && !cancelled_) error_ = httplib::to_string(err);
    finished_ = true;
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> chunks_;
  bool head_ = false, finished_ = false, cancelled_ = false;
  std::string error_;
  std::thread worker_;
};

}  // namespace

HttpUpstream::HttpUpstream(std::string host, int port, std::string api_key)
    : host_(std::move(host)), port_(port), api_key_(std::move(api_key)) {}

std::string HttpUpstream::describe() const { return fmt::format("http://{}:{}", host_, port_); }

std::unique_ptr<UpstreamResponse> HttpUpstream::send(const ProxiedRequest& req) {
  auto r = std::make_unique<HttpUpstreamResponse>(host_, port_, api_key_, req);
  r->wait_head();
  return r;
}

std::string session_key(const nlohmann::json& body) {
  if (body.contains("user") && body["user"].is_string()) return "user:" + body["user"].get<std::string>();
  if (body.contains("session_id") && body["session_id"].is_string())
    return "session:" + body["session_id"].get<std::string>();
  if (body.contains("metadata") && body["metadata"].is_object() && body["metadata"].contains("user_id") &&
      body["metadata"]["user_id"].is_string())
    return "user:" + body["metadata"]["user_id"].get<std::string>();
  // The conversation's beginning: system prompt plus the first message.
  std::string basis;
  if (body.contains("system")) basis += body["system"].dump();
  if (body.contains("messages") && body["messages"].is_array() && !body["messages"].empty())
    basis += body["messages"][0].dump();
  else if (body.contains("prompt"))
    basis += body["prompt"].dump().substr(0, 2048);
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : basis) h = (h ^ c) * 1099511628211ull;
  return fmt::format("prefix:{:016x}", h);
}

void proxy_request(const ApiContext& ctx, ModelRouter& router, const std::string& model, const nlohmann::json& body,
                   const httplib::Request& req, httplib::Response& res, ApiFlavor flavor) {
  (void)flavor;
  auto nodes = router.candidates(model, session_key(body));
  if (nodes.empty())
    throw ApiError(404, "invalid_request_error",
                   fmt::format("The model '{}' is not served by this node or any node of its mesh (GET /v1/models)", model),
                   "model", "model_not_found");
  proxy_in_order(ctx, nodes, model, req, res);
}

bool proxy_in_order(const ApiContext& ctx, const std::vector<std::shared_ptr<Upstream>>& nodes,
                    const std::string& model, const httplib::Request& req, httplib::Response& res) {
  ProxiedRequest pr{req.method, req.path, req.get_header_value("Content-Type"), req.body, {}};
  for (const char* h : {"anthropic-version", "anthropic-beta"})
    if (req.has_header(h)) pr.headers[h] = req.get_header_value(h);
  std::shared_ptr<UpstreamResponse> up;
  std::string failures, error_body;
  for (size_t i = 0; i < nodes.size(); ++i) {
    auto& node = nodes[i];
    if (!node) {  // this node's turn
      if (!failures.empty() && ctx.opt.log_requests)
        log_line(fmt::format("route: answering here after {}", failures));
      return false;
    }
    std::string why;
    try {
      up = node->send(pr);
      if (up->status < 400) break;
      // Errors are small and final: read them whole. A node that no longer serves the model
      // (the news has not reached us yet), is full or unavailable may be followed by one that
      // answers; any other error is the answer.
      error_body.clear();
      std::string chunk;
      while (error_body.size() < (1u << 20) && up->read(chunk)) error_body += chunk;
      const bool retry = up->status == 429 || up->status == 503 ||
                         (up->status == 404 && error_body.find("model_not_found") != std::string::npos);
      if (!retry || i + 1 == nodes.size()) break;
      why = fmt::format("answered {}", up->status);
      up.reset();
    } catch (const UpstreamUnavailable& e) {
      why = e.what();
    }
    failures += fmt::format("{}{}: {}", failures.empty() ? "" : "; ", node->describe(), why);
    if (ctx.opt.log_requests)
      log_line(fmt::format("route: {} failed before answering ({}); trying the next node (reason upstream_failed)",
                           node->describe(), why));
  }
  if (!up)
    throw ApiError(503, "server_error",
                   fmt::format("No node serving '{}' answered: {}", model, failures), "model", "upstream_unavailable");
  res.status = up->status;
  if (up->status >= 400) {
    // Pass the error on whole, with its own shape and status.
    res.set_content(error_body, up->content_type.empty() ? "application/json" : up->content_type);
    return true;
  }
  auto watch = std::make_shared<ConnectionWatch>(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  const std::string type = up->content_type.empty() ? "application/json" : up->content_type;
  res.set_chunked_content_provider(
      type,
      [up, watch, ctx](size_t, httplib::DataSink& sink) {
        std::string chunk;
        // The upstream ends the exchange; a client that goes away cancels it (and with it the
        // generation on the far node, whose own connection watch sees the upstream close).
        std::mutex m;
        std::condition_variable cv;
        bool reading = true;
        std::thread guard([&] {
          std::unique_lock<std::mutex> l(m);
          while (reading) {
            if (watch->closed()) {
              up->cancel();
              ctx.metrics.disconnect();
              return;
            }
            cv.wait_for(l, std::chrono::milliseconds(50));
          }
        });
        while (up->read(chunk)) {
          if (!sink.write(chunk.data(), chunk.size())) {
            up->cancel();
            break;
          }
        }
        {
          std::lock_guard<std::mutex> l(m);
          reading = false;
        }
        cv.notify_all();
        guard.join();
        sink.done();
        return true;
      },
      [up](bool) { up->cancel(); });
  return true;
}

}  // namespace llmesh::api
