#include "console/console_server.h"

#include <httplib.h>
#include <fmt/format.h>

#include <cstring>

#include "log/event_log.h"
#include "server/api_error.h"
#include "server/router.h"

namespace llmesh::api {

using nlohmann::json;

namespace {

constexpr const char* kCookie = "llmesh_console_key";

// What the page may load and reach: itself only (docs/console.md). Styles set by the script on
// elements (CSSOM) need no 'unsafe-inline'; the SVG is built the same way.
constexpr const char* kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

// An error answer, logged with its reason (the code, else the type) like the API's own.
void json_error(const httplib::Request& req, httplib::Response& res, int status, const std::string& type,
                const std::string& message, const std::string& code = "") {
  logs::warn("console", code.empty() ? type : code, fmt::format("{} {} -> {}: {}", req.method, req.path, status, message),
             {{"method", req.method}, {"path", req.path}, {"status", status}});
  res.status = status;
  res.set_content(dump_json(error_body(ApiError(status, type, message, "", code), ApiFlavor::OpenAI)),
                  "application/json");
}

// The value of cookie `name` in a Cookie header, or "".
std::string cookie_value(const std::string& header, const std::string& name) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t end = header.find(';', pos);
    if (end == std::string::npos) end = header.size();
    std::string part = header.substr(pos, end - pos);
    size_t b = part.find_first_not_of(' ');
    if (b != std::string::npos) part = part.substr(b);
    if (part.size() > name.size() && part.compare(0, name.size(), name) == 0 && part[name.size()] == '=')
      return httplib::detail::decode_url(part.substr(name.size() + 1), false);
    pos = end + 1;
  }
  return "";
}

bool same_key(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); i++) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

ConsoleServer::ConsoleServer(ConsoleOptions opt, StateFn state, MetricsFn metrics)
    : opt_(std::move(opt)), state_(std::move(state)), metrics_(std::move(metrics)),
      http_(std::make_unique<httplib::Server>()) {
  // Each event stream and each playground answer holds a thread while it lasts.
  const size_t threads = static_cast<size_t>(opt_.max_event_streams) + 8;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(8u << 20);
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;  // SO_REUSEADDR only: SO_REUSEPORT would let two nodes share the port silently
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http_->set_keep_alive_timeout(5);
  http_->set_read_timeout(30);
  http_->set_write_timeout(30);
  routes();
}

ConsoleServer::~ConsoleServer() { stop(); }

std::string ConsoleServer::url() const {
  const std::string host = opt_.host == "0.0.0.0" || opt_.host.empty() ? "127.0.0.1"
                           : opt_.host == "::"                         ? "[::1]"
                           : opt_.host.find(':') != std::string::npos  ? "[" + opt_.host + "]"
                                                                       : opt_.host;
  return fmt::format("http://{}:{}/", host, port_);
}

bool ConsoleServer::authorized(const httplib::Request& req) const {
  if (opt_.api_key.empty()) return true;
  const std::string bearer = req.get_header_value("Authorization");
  if (bearer.rfind("Bearer ", 0) == 0 && same_key(bearer.substr(7), opt_.api_key)) return true;
  if (req.has_header("x-api-key") && same_key(req.get_header_value("x-api-key"), opt_.api_key)) return true;
  return same_key(cookie_value(req.get_header_value("Cookie"), kCookie), opt_.api_key);
}

void ConsoleServer::routes() {
  auto secure = [](httplib::Response& res) {
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Content-Security-Policy", kContentSecurityPolicy);
  };
  size_t n = 0;
  const ConsoleAsset* assets = console_assets(n);
  for (size_t i = 0; i < n; i++) {
    const ConsoleAsset a = assets[i];
    auto serve = [a, secure](const httplib::Request&, httplib::Response& res) {
      secure(res);
      res.set_header("Cache-Control", "no-cache");
      res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.content_type);
    };
    http_->Get(a.path, serve);
    if (std::strcmp(a.path, "/index.html") == 0) http_->Get("/", serve);
  }

  auto guarded = [this, secure](auto handler) {
    return [this, secure, handler](const httplib::Request& req, httplib::Response& res) {
      secure(res);
      if (!authorized(req))
        return json_error(req, res, 401, "invalid_request_error",
                          "This node has an API key: send it as 'Authorization: Bearer KEY' (the console page asks "
                          "for it once and keeps it in a cookie)",
                          "invalid_api_key");
      try {
        handler(req, res);
      } catch (const std::exception& e) {
        json_error(req, res, 500, "server_error", fmt::format("Internal error: {}", e.what()));
      }
    };
  };
  http_->Get("/api/state", guarded([this](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_content(dump_json(state_()), "application/json");
  }));
  http_->Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_(), "text/plain; version=0.0.4");
  }));
  http_->Get("/api/events", guarded([this](const httplib::Request& req, httplib::Response& res) {
    if (streams_.fetch_add(1) >= opt_.max_event_streams) {
      streams_--;
      res.set_header("Retry-After", "5");
      return json_error(req, res, 503, "overloaded_error",
                        fmt::format("This console already serves {} live streams; try again later", opt_.max_event_streams),
                        "too_many_streams");
    }
    res.set_header("Cache-Control", "no-store");
    // The last state sent and when, per stream.
    struct Stream {
      std::string last;
      std::chrono::steady_clock::time_point sent{};
    };
    auto st = std::make_shared<Stream>();
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st](size_t, httplib::DataSink& sink) {
          {
            std::unique_lock lk(mu_);
            // Every call after the first waits a refresh period (or for stop()).
            if (st->sent != std::chrono::steady_clock::time_point{})
              cv_.wait_for(lk, opt_.refresh, [&] { return stopping_; });
            if (stopping_) return false;
          }
          std::string now = dump_json(state_());
          auto t = std::chrono::steady_clock::now();
          std::string out;
          if (now != st->last) {
            out = "event: state\ndata: " + now + "\n\n";
            st->last = std::move(now);
          } else if (t - st->sent >= opt_.ping) {
            out = ": ping\n\n";
          } else {
            return true;
          }
          st->sent = t;
          return sink.write(out.data(), out.size());
        },
        [this](bool) { streams_--; });
  }));
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/messages"})
    http_->Post(path, [this](const httplib::Request& req, httplib::Response& res) { proxy(req, res); });
  http_->Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) { proxy(req, res); });

  // Statuses the library produces itself (no route, body too large) get the JSON error shape; an
  // answer a handler wrote (it has a Content-Type: the API's own errors, passed through) is kept.
  http_->set_error_handler([secure](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.has_header("Content-Type")) return;
    secure(res);
    json_error(req, res, res.status, res.status == 404 ? "not_found_error" : "invalid_request_error",
               res.status == 404 ? fmt::format("No {} {} on the console (the page is at /)", req.method, req.path)
                                 : fmt::format("HTTP error {}", res.status));
  });
}

// The playground's requests go to the node's own API, as they came, streamed back as they
// arrive; the key comes from the request's headers or the page's cookie.
void ConsoleServer::proxy(const httplib::Request& req, httplib::Response& res) {
  ProxiedRequest pr;
  pr.method = req.method;
  pr.path = req.path;
  pr.content_type = req.get_header_value("Content-Type");
  pr.body = req.body;
  for (const char* h : {"Authorization", "x-api-key", "anthropic-version", "anthropic-beta"})
    if (req.has_header(h)) pr.headers[h] = req.get_header_value(h);
  const std::string key = cookie_value(req.get_header_value("Cookie"), kCookie);
  if (!pr.headers.count("Authorization") && !pr.headers.count("x-api-key") && !key.empty())
    pr.headers["Authorization"] = "Bearer " + key;
  HttpUpstream api(opt_.api_host, opt_.api_port);
  std::shared_ptr<UpstreamResponse> answer;
  try {
    answer = api.send(pr);
  } catch (const std::exception& e) {
    return json_error(req, res, 502, "api_error",
                      fmt::format("The node's API at {} did not answer: {}", api.describe(), e.what()),
                      "api_unreachable");
  }
  res.status = answer->status;
  res.set_header("Cache-Control", "no-store");
  res.set_chunked_content_provider(
      answer->content_type.empty() ? "application/json" : answer->content_type,
      [this, answer](size_t, httplib::DataSink& sink) {
        {
          std::lock_guard lk(mu_);
          if (stopping_) return false;  // the releaser cancels the answer
        }
        std::string chunk;
        if (!answer->read(chunk)) {
          sink.done();
          return true;
        }
        return sink.write(chunk.data(), chunk.size());
      },
      [answer](bool ok) {
        if (!ok) answer->cancel();  // the browser went away: the node stops generating
      });
}

void ConsoleServer::bind() {
  port_ = opt_.port == 0 ? http_->bind_to_any_port(opt_.host)
                         : (http_->bind_to_port(opt_.host, opt_.port) ? opt_.port : -1);
  if (port_ < 0)
    throw std::runtime_error(fmt::format("cannot listen on {}:{} for the console (address in use, or not an "
                                         "address of this host)", opt_.host, opt_.port));
}

void ConsoleServer::start() {
  thread_ = std::thread([this] { http_->listen_after_bind(); });
}

void ConsoleServer::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    for (int i = 0; i < 2000 && !http_->is_running(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    http_->stop();
    thread_.join();
  }
}

}  // namespace llmesh::api
