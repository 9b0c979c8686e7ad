// The web console of a node (docs/console.md): a page that shows the mesh as it is (topology,
// placement, load, a chat playground), served on its own port (3131 by default) with
//   GET /, /console.css, /console.js    the page (embedded in the binary: no internet resource)
//   GET /api/state                      the node's status with the mesh view (as /mesh/status)
//   GET /api/events                     the same as server-sent events, whenever it changes
//   GET /metrics                        Prometheus: this node's serving metrics and the mesh's
//   /v1/models, /v1/chat/completions, /v1/completions, /v1/messages
//                                       passed to the node's own API, streamed (the playground)
// When the node has an API key, everything but the page itself needs it: an Authorization
// (Bearer) or x-api-key header, or the llmesh_console_key cookie the page sets when asked.
//
//   ConsoleServer console(opt, [&] { return status(); }, [&] { return metrics(); });
//   console.bind();   // throws naming the address
//   console.start();  // serves on its own thread until stop()
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace llmesh::api {

struct ConsoleOptions {
  std::string host = "127.0.0.1";
  int port = 3131;  // 0: any free port
  // The node's own API, which the playground talks to through the console.
  std::string api_host = "127.0.0.1";
  int api_port = 0;
  std::string api_key;         // the node's API key: empty when it has none
  int max_event_streams = 32;  // open /api/events streams (each holds a thread); more get 503
  std::chrono::milliseconds refresh{1000};  // how often /api/events looks for a change
  std::chrono::seconds ping{15};            // a comment line when nothing changed for this long
};

// One embedded file of the page (console_assets.cpp, generated from api/console/web).
struct ConsoleAsset {
  const char* path;  // "/index.html"
  const char* content_type;
  const unsigned char* data;
  std::size_t size;
};
const ConsoleAsset* console_assets(std::size_t& count);

class ConsoleServer {
 public:
  using StateFn = std::function<nlohmann::json()>;
  using MetricsFn = std::function<std::string()>;
  ConsoleServer(ConsoleOptions opt, StateFn state, MetricsFn metrics);
  ~ConsoleServer();  // stop()
  ConsoleServer(const ConsoleServer&) = delete;
  ConsoleServer& operator=(const ConsoleServer&) = delete;

  // Binds opt.host:opt.port; throws std::runtime_error naming the address when it cannot.
  void bind();
  int port() const { return port_; }
  std::string url() const;  // http://host:port/
  // Serves on a thread of its own until stop().
  void start();
  // Ends the event streams and the server; returns when its thread has.
  void stop();

 private:
  void routes();
  bool authorized(const httplib::Request& req) const;
  void proxy(const httplib::Request& req, httplib::Response& res);

  ConsoleOptions opt_;
  StateFn state_;
  MetricsFn metrics_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::atomic<int> streams_{0};
};

}  // namespace llmesh::api
