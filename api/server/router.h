// Serving models this node does not hold: the router names the nodes that serve a model (best
// first), and an upstream carries one HTTP exchange to such a node and streams the answer
// back. The mesh implements both over its encrypted node-to-node streams; HttpUpstream goes
// straight to another node's HTTP API (tests, or a LAN without the mesh).
#pragma once
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmesh::api {

struct ProxiedRequest {
  std::string method;  // "POST"
  std::string path;    // "/v1/chat/completions"
  std::string content_type;
  std::string body;
  std::map<std::string, std::string> headers;  // forwarded: anthropic-version, anthropic-beta
};

// An answer being streamed back. read() blocks until the next chunk, returns false at the end
// (or on failure: `failed()` then says why). cancel() makes read() return false promptly and
// tells the far side to stop generating.
class UpstreamResponse {
 public:
  virtual ~UpstreamResponse() = default;
  int status = 0;
  std::string content_type;
  virtual bool read(std::string& chunk) = 0;
  virtual void cancel() = 0;
  virtual std::string failed() const = 0;  // empty when it ended normally
};

// Before the first byte of the answer a failure is retryable on another node.
class UpstreamUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Upstream {
 public:
  virtual ~Upstream() = default;
  virtual std::string describe() const = 0;  // for logs and errors: "node 3fa2c1e09b7d at 10.0.0.2:9337"
  // Sends the request and waits for the answer's status and headers. Throws UpstreamUnavailable.
  virtual std::unique_ptr<UpstreamResponse> send(const ProxiedRequest& req) = 0;
};

struct RemoteModel {
  std::string id;
  int64_t created = 0;
  int context_length = 0;
  int nodes = 0;  // how many nodes serve it
};

class ModelRouter {
 public:
  virtual ~ModelRouter() = default;
  // Models served elsewhere in the mesh (for /v1/models).
  virtual std::vector<RemoteModel> models() = 0;
  // Nodes serving `model`, best first (load, latency), the first one sticky for `session_key`
  // so a conversation keeps landing where its prefix is cached. Empty: nobody serves it.
  virtual std::vector<std::shared_ptr<Upstream>> candidates(const std::string& model,
                                                             const std::string& session_key) = 0;
  // For a model this node serves as one of several mixture-of-experts shards (docs/moe.md): the
  // nodes to try for the session, best first, with nullptr standing for this node. The session's
  // home shard comes first, so a conversation stays on one group of experts whichever node it
  // enters by. Default: this node alone.
  virtual std::vector<std::shared_ptr<Upstream>> shard_candidates(const std::string& model,
                                                                   const std::string& session_key) {
    (void)model;
    (void)session_key;
    return {nullptr};
  }
};

// Another node's HTTP API, reached directly.
class HttpUpstream : public Upstream {
 public:
  HttpUpstream(std::string host, int port, std::string api_key = "");
  std::string describe() const override;
  std::unique_ptr<UpstreamResponse> send(const ProxiedRequest& req) override;

 private:
  std::string host_;
  int port_;
  std::string api_key_;
};

// The key that keeps a conversation on one node: the client's `user` / `session_id` /
// Anthropic `metadata.user_id` when given, else a hash of the conversation's beginning
// (system prompt and first user turn), which every later turn repeats.
std::string session_key(const nlohmann::json& body);

}  // namespace llmesh::api
