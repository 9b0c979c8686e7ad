// The console server: the embedded page, state and events, metrics, the API key, the
// playground's pass-through to the node's API.
#include "console/console_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace llmesh::api {
namespace {

using nlohmann::json;

struct Console {
  std::mutex mu;
  json state = {{"node", {{"id", "n1"}}}, {"members", json::array()}};
  std::unique_ptr<ConsoleServer> server;

  explicit Console(ConsoleOptions o = {}) {
    o.port = 0;
    o.refresh = std::chrono::milliseconds(20);
    server = std::make_unique<ConsoleServer>(
        o,
        [this] {
          std::lock_guard lk(mu);
          return state;
        },
        [] { return std::string("llmesh_test_metric 1\n"); });
    server->bind();
    server->start();
  }
  void set(const json& s) {
    std::lock_guard lk(mu);
    state = s;
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(10);
    return c;
  }
};

TEST(ConsoleServer, ServesThePageWithItsOwnResourcesOnly) {
  Console c;
  auto cli = c.client();
  auto page = cli.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(page->body.find("console.js"), std::string::npos);
  // No resource from anywhere else: no http(s) URL in any embedded file.
  size_t n = 0;
  const ConsoleAsset* assets = console_assets(n);
  ASSERT_GE(n, 3u);
  for (size_t i = 0; i < n; i++) {
    std::string body(reinterpret_cast<const char*>(assets[i].data), assets[i].size);
    // (The SVG namespace is a name, never fetched.)
    for (size_t at = body.find("http"); at != std::string::npos; at = body.find("http", at + 1)) {
      bool url = body.compare(at, 7, "http://") == 0 || body.compare(at, 8, "https://") == 0;
      EXPECT_TRUE(!url || body.compare(at, 26, "http://www.w3.org/2000/svg") == 0)
          << assets[i].path << ": " << body.substr(at, 60);
    }
    auto r = cli.Get(assets[i].path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, body);
    EXPECT_EQ(r->get_header_value("Content-Type"), assets[i].content_type);
  }
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(page->get_header_value("X-Content-Type-Options"), "nosniff");
  auto missing = cli.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(missing->body.find("No GET /nope on the console"), std::string::npos);
}

TEST(ConsoleServer, StateAndMetrics) {
  Console c;
  auto cli = c.client();
  auto st = cli.Get("/api/state");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->status, 200);
  EXPECT_EQ(json::parse(st->body)["node"]["id"], "n1");
  auto m = cli.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body, "llmesh_test_metric 1\n");
  EXPECT_EQ(m->get_header_value("Content-Type"), "text/plain; version=0.0.4");
}

TEST(ConsoleServer, ApiKeyGuardsEverythingButThePage) {
  ConsoleOptions o;
  o.api_key = "sekrit";
  Console c(o);
  auto cli = c.client();
  EXPECT_EQ(cli.Get("/")->status, 200);
  for (const char* path : {"/api/state", "/metrics", "/api/events"}) {
    auto r = cli.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_api_key");
  }
  EXPECT_EQ(cli.Get("/api/state", {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(cli.Get("/api/state", {{"Cookie", "llmesh_console_key=sekri"}})->status, 401);
  EXPECT_EQ(cli.Get("/api/state", {{"Authorization", "Bearer sekrit"}})->status, 200);
  EXPECT_EQ(cli.Get("/api/state", {{"x-api-key", "sekrit"}})->status, 200);
  EXPECT_EQ(cli.Get("/api/state", {{"Cookie", "theme=dark; llmesh_console_key=sekrit"}})->status, 200);
}

// Reads an event stream until `want` events arrived; returns their data lines.
std::vector<std::string> read_events(int port, size_t want, const std::function<void(size_t)>& on_event = {}) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(10);
  std::vector<std::string> events;
  std::string buf;
  cli.Get("/api/events", [&](const char* data, size_t n) {
    buf.append(data, n);
    size_t end;
    while ((end = buf.find("\n\n")) != std::string::npos) {
      std::string ev = buf.substr(0, end);
      buf.erase(0, end + 2);
      if (ev.rfind("event: state\ndata: ", 0) == 0) {
        events.push_back(ev.substr(19));
        if (on_event) on_event(events.size());
      }
    }
    return events.size() < want;
  });
  return events;
}

TEST(ConsoleServer, EventsSendTheStateWhenItChanges) {
  Console c;
  auto events = read_events(c.server->port(), 3, [&](size_t n) { c.set({{"node", {{"id", "n1"}}}, {"step", n}}); });
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(json::parse(events[0])["node"]["id"], "n1");
  EXPECT_EQ(json::parse(events[1])["step"], 1);
  EXPECT_EQ(json::parse(events[2])["step"], 2);
}

TEST(ConsoleServer, EventStreamsAreLimitedAndEndOnStop) {
  ConsoleOptions o;
  o.max_event_streams = 1;
  Console c(o);
  std::atomic<bool> first{false};
  std::thread reader([&] {
    httplib::Client cli("127.0.0.1", c.server->port());
    cli.set_read_timeout(30);
    cli.Get("/api/events", [&](const char*, size_t) {
      first = true;
      return true;  // keeps reading until the server ends the stream
    });
  });
  while (!first) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto cli = c.client();
  auto r = cli.Get("/api/events");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "too_many_streams");
  c.server->stop();  // returns once the open stream has ended
  reader.join();
}

TEST(ConsoleServer, PlaygroundRequestsReachTheNodesApiStreamed) {
  httplib::Server api;
  std::string seen_auth, seen_body;
  api.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
    seen_auth = req.get_header_value("Authorization");
    seen_body = req.body;
    res.status = 200;
    res.set_chunked_content_provider("text/event-stream", [](size_t off, httplib::DataSink& sink) {
      std::string chunk = "data: {\"n\": " + std::to_string(off) + "}\n\n";
      if (off > 40) {
        sink.write("data: [DONE]\n\n", 14);
        sink.done();
        return true;
      }
      return sink.write(chunk.data(), chunk.size());
    });
  });
  api.Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
    res.status = 401;
    res.set_content(R"({"error": {"message": "key!", "code": "invalid_api_key"}})", "application/json");
  });
  int api_port = api.bind_to_any_port("127.0.0.1");
  std::thread t([&] { api.listen_after_bind(); });
  ConsoleOptions o;
  o.api_port = api_port;
  Console c(o);
  auto cli = c.client();
  auto r = cli.Post("/v1/chat/completions", {{"Cookie", "llmesh_console_key=k%20y"}}, R"({"stream": true})",
                    "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_NE(r->body.find("data: {\"n\": 0}"), std::string::npos);
  EXPECT_NE(r->body.find("data: [DONE]"), std::string::npos);
  EXPECT_EQ(seen_auth, "Bearer k y");  // the page's cookie becomes the API's key
  EXPECT_EQ(seen_body, R"({"stream": true})");
  auto models = cli.Get("/v1/models");  // the API's own errors pass through as they are
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  EXPECT_EQ(json::parse(models->body)["error"]["code"], "invalid_api_key");
  api.stop();
  t.join();
  auto down = cli.Get("/v1/models");
  ASSERT_TRUE(down);
  EXPECT_EQ(down->status, 502);
  EXPECT_EQ(json::parse(down->body)["error"]["code"], "api_unreachable");
}

TEST(ConsoleServer, BindNamesTheAddress) {
  Console c;
  ConsoleOptions o;
  o.port = c.server->port();
  ConsoleServer second(o, [] { return json::object(); }, [] { return std::string(); });
  try {
    second.bind();
    FAIL() << "bound a port in use";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(o.port)), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace llmesh::api
