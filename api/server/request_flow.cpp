#include "server/request_flow.h"

#include "log/event_log.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <random>

namespace llmesh::api {

namespace {
const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}
}  // namespace

std::optional<double> opt_number(const json& body, const char* key, double lo, double hi) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number())
    throw bad_request(fmt::format("'{}' must be a number, got {}", key, type_name(*it)), key);
  double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    throw bad_request(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v), key);
  return v;
}

std::optional<int64_t> opt_int(const json& body, const char* key, int64_t lo, int64_t hi) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  bool integral = it->is_number_integer() ||
                  (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>() &&
                   std::abs(it->get<double>()) < 9e15);
  if (!integral)
    throw bad_request(fmt::format("'{}' must be an integer, got {}", key, type_name(*it)), key);
  int64_t v = it->is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(it->get<uint64_t>(), INT64_MAX))
              : it->is_number_integer() ? it->get<int64_t>()
                                        : static_cast<int64_t>(it->get<double>());
  if (v < lo || v > hi)
    throw bad_request(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v), key);
  return v;
}

std::optional<bool> opt_bool(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean())
    throw bad_request(fmt::format("'{}' must be a boolean, got {}", key, type_name(*it)), key);
  return it->get<bool>();
}

std::optional<std::string> opt_string(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string())
    throw bad_request(fmt::format("'{}' must be a string, got {}", key, type_name(*it)), key);
  return it->get<std::string>();
}

std::vector<std::string> stop_list(const json& body, const char* key, size_t max) {
  auto it = body.find(key);
  std::vector<std::string> out;
  if (it == body.end() || it->is_null()) return out;
  if (it->is_string()) {
    if (!it->get<std::string>().empty()) out.push_back(it->get<std::string>());
    return out;
  }
  if (!it->is_array())
    throw bad_request(fmt::format("'{}' must be a string or an array of strings", key), key);
  if (it->size() > max)
    throw bad_request(fmt::format("'{}' may hold at most {} strings, got {}", key, max, it->size()), key);
  for (size_t i = 0; i < it->size(); i++) {
    const json& s = (*it)[i];
    if (!s.is_string())
      throw bad_request(fmt::format("'{}[{}]' must be a string, got {}", key, i, type_name(s)), key);
    if (s.get<std::string>().empty())
      throw bad_request(fmt::format("'{}[{}]' must not be empty", key, i), key);
    out.push_back(s.get<std::string>());
  }
  return out;
}

void reject_unknown_fields(const json& body, const std::vector<std::string>& known) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end())
      throw bad_request(fmt::format("Unrecognized request argument supplied: {}", it.key()), it.key());
  }
}

json parse_body(const std::string& body) {
  if (body.empty()) throw bad_request("The request body is empty; expected a JSON object");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw bad_request(fmt::format("The request body is not valid JSON: {}", e.what()));
  }
  if (!j.is_object())
    throw bad_request(fmt::format("The request body must be a JSON object, got {}", type_name(j)));
  return j;
}

void check_model(const ApiContext& ctx, const json& body, ApiFlavor flavor) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) throw bad_request("'model' is required", "model");
  if (!it->is_string()) throw bad_request("'model' must be a string", "model");
  const std::string name = it->get<std::string>();
  if (!ctx.model->answers_to(name))
    throw ApiError(404, "invalid_request_error",
                   fmt::format("The model '{}' does not exist on this node; it serves '{}' (GET /v1/models)",
                               name, ctx.model->id),
                   "model", "model_not_found");
}

int budget_tokens(const ApiContext& ctx, size_t prompt_tokens, std::optional<int64_t> requested, bool clamp) {
  const int64_t n_ctx = ctx.model->n_ctx();
  if (static_cast<int64_t>(prompt_tokens) >= n_ctx)
    throw bad_request(fmt::format("This model's maximum context length is {} tokens. However, your "
                                  "messages resulted in {} tokens, leaving no room to generate. (This "
                                  "node gives each request {} tokens; `llmesh serve --ctx N` sets it.)",
                                  n_ctx, prompt_tokens, n_ctx),
                      "messages", "context_length_exceeded");
  int64_t room = n_ctx - static_cast<int64_t>(prompt_tokens);
  if (!requested) return static_cast<int>(room);
  if (clamp) return static_cast<int>(std::min(*requested, room));
  if (*requested > room)
    throw bad_request(fmt::format("This model's maximum context length is {} tokens. However, you "
                                  "requested {} tokens ({} in the messages, {} in the completion). "
                                  "Please reduce the length of the messages or completion.",
                                  n_ctx, prompt_tokens + *requested, prompt_tokens, *requested),
                      "max_tokens", "context_length_exceeded");
  return static_cast<int>(*requested);
}

Submission submit_choices(const ApiContext& ctx, std::vector<GenerationRequest> reqs,
                          std::vector<ChoiceConfig> cfgs) {
  if (ctx.model->unavailable)
    if (std::string why = ctx.model->unavailable(); !why.empty())
      throw ApiError(503, "service_unavailable", fmt::format("The model cannot answer right now: {}. Retry shortly.", why),
                     "", "model_unavailable");
  Submission sub;
  sub.start = std::chrono::steady_clock::now();
  sub.channel = std::make_shared<ResponseChannel>();
  sub.running = std::make_shared<RunningRequest>(*ctx.model->scheduler);
  sub.n_choices = static_cast<int>(reqs.size());
  for (size_t i = 0; i < reqs.size(); i++) {
    auto sink = std::make_shared<ChoiceSink>(*ctx.model->tokenizer, std::move(cfgs[i]), sub.channel,
                                             static_cast<int>(i), &ctx.metrics);
    sub.prompt_tokens += reqs[i].prompt.size();
    try {
      sub.running->add(ctx.model->scheduler->submit(std::move(reqs[i]), sink));
    } catch (const QueueFull& e) {
      throw ApiError(429, "rate_limit_exceeded",
                     fmt::format("This node is busy: all slots are generating and the queue is full ({}). "
                                 "Retry shortly.", e.what()),
                     "", "rate_limit_exceeded");
    } catch (const std::invalid_argument& e) {
      throw bad_request(e.what());
    }
  }
  return sub;
}

bool pump(const ApiContext& ctx, Submission& sub, const ConnectionWatch* watch,
          const std::function<bool(std::vector<ChannelEvent>&)>& on_events,
          const std::function<bool()>& keepalive) {
  int done = 0;
  auto last_write = std::chrono::steady_clock::now();
  // Checks the socket often (cheap) but writes keep-alives only every opt.keepalive.
  const auto poll_every = std::min<std::chrono::milliseconds>(ctx.opt.keepalive, std::chrono::milliseconds(100));
  while (done < sub.n_choices) {
    auto evs = sub.channel->wait(poll_every);
    if (!evs.empty()) {
      for (auto& e : evs)
        if (e.done) done++;
      if (!on_events(evs)) break;
      last_write = std::chrono::steady_clock::now();
      continue;
    }
    if (watch && watch->closed()) break;
    if (keepalive && std::chrono::steady_clock::now() - last_write >= ctx.opt.keepalive) {
      if (!keepalive()) break;
      last_write = std::chrono::steady_clock::now();
    }
  }
  if (done < sub.n_choices) {
    sub.running->cancel();
    ctx.metrics.disconnect();
    if (ctx.opt.log_requests) log_line("client went away: generation cancelled, slot freed (reason client_disconnected)");
    return false;
  }
  return true;
}

// A request's line (docs/logging.md): in text, prefixed with its UTC time as before; in JSON, an
// event of component "api" whose " (reason code)" suffix, where there is one, is its reason.
void log_line(const std::string& text) {
  logs::LogEvent e = logs::from_line("api", text);
  if (!logs::enabled(e.level)) return;
  if (logs::format() == logs::Format::json) return logs::emit(e);
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  e.text = fmt::format("{}.{:03d}Z {}", stamp, static_cast<int>(ms), text);
  logs::emit(e);
}

void record_choice(const ApiContext& ctx, const Submission& sub, const GenerationResult& r) {
  if (ctx.opt.log_requests) {
    double total = std::chrono::duration<double>(r.finished - sub.start).count();
    double ttft = r.completion_tokens ? std::chrono::duration<double>(r.first_token - sub.start).count() : 0;
    double decode = std::chrono::duration<double>(r.finished - r.first_token).count();
    log_line(fmt::format("generated: prompt {} ({} cached) + {} tokens, first token {:.3f} s, {:.1f} tok/s, "
                         "{:.2f} s in all, finish {}{}",
                         r.prompt_tokens, r.cached_tokens, r.completion_tokens, ttft,
                         r.completion_tokens > 1 && decode > 0 ? (r.completion_tokens - 1) / decode : 0.0, total,
                         finish_reason_name(r.finish),
                         r.error.empty() ? "" : ": " + r.error + " (reason generation_failed)"));
  }
  ctx.metrics.tokens(r.prompt_tokens, r.cached_tokens, r.completion_tokens);
  if (r.completion_tokens > 0)
    ctx.metrics.first_token(std::chrono::duration<double>(r.first_token - sub.start).count());
  ctx.metrics.request_duration(std::chrono::duration<double>(r.finished - sub.start).count());
}

std::string random_id(const std::string& prefix, size_t n) {
  static const char chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string s = prefix;
  for (size_t i = 0; i < n; i++) s += chars[rng() % (sizeof chars - 1)];
  return s;
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

}  // namespace llmesh::api
