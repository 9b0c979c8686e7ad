// What every generating endpoint shares: reading typed fields with clear errors, checking the
// context budget, submitting choices to the scheduler, and driving a response until every
// choice is done or the client is gone.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/api_error.h"
#include "server/connection_watch.h"
#include "server/generation.h"
#include "server/metrics.h"
#include "server/served_model.h"

namespace llmesh::api {

using json = nlohmann::json;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 9337;
  std::string api_key;                       // empty: no authentication
  size_t max_body_bytes = 32u << 20;         // larger request bodies get 413
  int http_threads = 0;                      // 0: n_parallel + max_queue + 8
  std::chrono::milliseconds keepalive{500};  // how often a waiting response checks its client
  int max_queue = 64;                        // reported in errors; the scheduler enforces it
  bool log_requests = true;                  // one line per finished generation / error on stderr
};

// A timestamped line on stderr (the server's log).
void log_line(const std::string& text);

class ModelRouter;

struct ApiContext {
  ServedModel* model;  // null on a node without a local model (client nodes)
  Metrics& metrics;
  const ServerOptions& opt;
  ModelRouter* router = nullptr;  // models served elsewhere (the mesh); null: this node only
};

// ---- typed field access: every wrong type or range names the field ----
std::optional<double> opt_number(const json& body, const char* key, double lo, double hi);
std::optional<int64_t> opt_int(const json& body, const char* key, int64_t lo, int64_t hi);
std::optional<bool> opt_bool(const json& body, const char* key);
std::optional<std::string> opt_string(const json& body, const char* key);
// "stop": a string or a list of up to `max` non-empty strings.
std::vector<std::string> stop_list(const json& body, const char* key, size_t max);
// Rejects fields not in `known` with OpenAI's "Unrecognized request argument supplied".
void reject_unknown_fields(const json& body, const std::vector<std::string>& known);
json parse_body(const std::string& body);

// Picks max_tokens. A prompt that leaves no room is a clear 400 (context_length_exceeded).
// A requested limit beyond the room left is also that 400, unless `clamp` (Anthropic's
// max_tokens is a required cap that agents set for large models): then generation may run to
// the end of the context and reports max_tokens there. Without a request: the room left.
int budget_tokens(const ApiContext& ctx, size_t prompt_tokens, std::optional<int64_t> requested,
                  bool clamp = false);
void check_model(const ApiContext& ctx, const json& body, ApiFlavor flavor);

struct Submission {
  std::shared_ptr<ResponseChannel> channel;
  std::shared_ptr<RunningRequest> running;
  int n_choices = 0;
  size_t prompt_tokens = 0;  // of all choices together
  std::chrono::steady_clock::time_point start;
};
// Submits one GenerationRequest per choice. QueueFull -> ApiError 429, invalid -> 400.
Submission submit_choices(const ApiContext& ctx, std::vector<GenerationRequest> reqs,
                          std::vector<ChoiceConfig> cfgs);

// Drives a submission: calls on_events with what arrives; while nothing arrives, calls
// keepalive every opt.keepalive (streams write a comment/ping; it returns false when the
// client is gone). Returns false when the client went away (everything is cancelled).
bool pump(const ApiContext& ctx, Submission& sub, const ConnectionWatch* watch,
          const std::function<bool(std::vector<ChannelEvent>&)>& on_events,
          const std::function<bool()>& keepalive);

// Records usage/latency metrics for a finished choice.
void record_choice(const ApiContext& ctx, const Submission& sub, const GenerationResult& r);

std::string random_id(const std::string& prefix, size_t n = 24);
int64_t unix_now();

}  // namespace llmesh::api
