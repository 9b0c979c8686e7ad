// OpenAI-compatible endpoints: /v1/models, /v1/chat/completions, /v1/completions.
#include <fmt/chrono.h>
#include <fmt/format.h>

#include <random>

#include "server/chat_prompt.h"
#include "server/endpoints.h"
#include "server/router.h"

namespace llmesh::api {
namespace {

const std::vector<std::string> kChatFields = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "n", "stop", "seed", "frequency_penalty", "presence_penalty",
    "logprobs", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls", "user", "metadata",
    "store", "logit_bias", "response_format", "service_tier", "reasoning_effort", "modalities",
    // llama.cpp / vLLM extensions
    "top_k", "min_p", "repeat_penalty", "chat_template_kwargs"};

const std::vector<std::string> kCompletionFields = {
    "model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n",
    "stop", "seed", "frequency_penalty", "presence_penalty", "logprobs", "echo", "best_of",
    "logit_bias", "user", "suffix", "top_k", "min_p", "repeat_penalty"};

// Text of a message's content: a string, null, or text parts.
std::string content_text(const json& content, const std::string& where) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw bad_request(fmt::format("'{}' must be a string or an array of content parts", where), where);
  std::string out;
  for (size_t j = 0; j < content.size(); j++) {
    const json& part = content[j];
    std::string pw = fmt::format("{}[{}]", where, j);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      throw bad_request(fmt::format("'{}' must be an object with a 'type'", pw), pw);
    std::string type = part["type"];
    if (type == "text" || type == "refusal") {
      const char* key = type == "text" ? "text" : "refusal";
      if (!part.contains(key) || !part[key].is_string())
        throw bad_request(fmt::format("'{}.{}' must be a string", pw, key), pw + "." + key);
      if (!out.empty()) out += "\n";
      out += part[key].get<std::string>();
    } else {
      throw bad_request(fmt::format("Content part type '{}' is not supported at '{}': this node "
                                    "serves a text-only model",
                                    type, pw),
                        pw + ".type");
    }
  }
  return out;
}

ojson tool_call_arguments(const json& args) {
  if (args.is_string()) {
    try {
      return ojson::parse(args.get<std::string>());
    } catch (const std::exception&) {
      return ojson(args.get<std::string>());  // not JSON: the template prints it as given
    }
  }
  return ojson::parse(args.dump());
}

ojson convert_messages(const json& msgs) {
  if (!msgs.is_array()) throw bad_request("'messages' must be an array", "messages");
  if (msgs.empty()) throw bad_request("'messages' must contain at least one message", "messages");
  ojson out = ojson::array();
  for (size_t i = 0; i < msgs.size(); i++) {
    const json& m = msgs[i];
    std::string w = fmt::format("messages[{}]", i);
    if (!m.is_object()) throw bad_request(fmt::format("'{}' must be an object", w), w);
    if (!m.contains("role") || !m["role"].is_string())
      throw bad_request(fmt::format("'{}.role' is required and must be a string", w), w + ".role");
    std::string role = m["role"];
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      throw bad_request(fmt::format("'{}.role' must be one of system, developer, user, assistant, tool; got '{}'", w, role),
                        w + ".role");
    ojson o = {{"role", role}};
    bool has_content = m.contains("content") && !m["content"].is_null();
    if (!has_content && role != "assistant")
      throw bad_request(fmt::format("'{}.content' is required for role '{}'", w, role), w + ".content");
    o["content"] = content_text(m.value("content", json()), w + ".content");
    if (m.contains("name")) {
      if (!m["name"].is_string()) throw bad_request(fmt::format("'{}.name' must be a string", w), w + ".name");
      o["name"] = m["name"].get<std::string>();
    }
    if (role == "assistant") {
      if (m.contains("reasoning_content") && m["reasoning_content"].is_string())
        o["reasoning_content"] = m["reasoning_content"].get<std::string>();
      if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
        const json& tcs = m["tool_calls"];
        if (!tcs.is_array()) throw bad_request(fmt::format("'{}.tool_calls' must be an array", w), w + ".tool_calls");
        ojson calls = ojson::array();
        for (size_t k = 0; k < tcs.size(); k++) {
          const json& tc = tcs[k];
          std::string tw = fmt::format("{}.tool_calls[{}]", w, k);
          if (!tc.is_object() || !tc.contains("function") || !tc["function"].is_object() ||
              !tc["function"].contains("name") || !tc["function"]["name"].is_string())
            throw bad_request(fmt::format("'{}' must be {{id, type: \"function\", function: {{name, arguments}}}}", tw), tw);
          ojson fn = {{"name", tc["function"]["name"].get<std::string>()},
                      {"arguments", tool_call_arguments(tc["function"].value("arguments", json("{}")))}};
          calls.push_back({{"id", tc.value("id", "")}, {"type", "function"}, {"function", fn}});
        }
        if (!calls.empty()) o["tool_calls"] = calls;
      }
      if (!has_content && !o.contains("tool_calls"))
        throw bad_request(fmt::format("'{}' needs 'content' or 'tool_calls'", w), w + ".content");
    }
    if (role == "tool") {
      if (!m.contains("tool_call_id") || !m["tool_call_id"].is_string())
        throw bad_request(fmt::format("'{}.tool_call_id' is required for tool messages", w), w + ".tool_call_id");
      o["tool_call_id"] = m["tool_call_id"].get<std::string>();
    }
    out.push_back(std::move(o));
  }
  return out;
}

ojson convert_tools(const json& body) {
  if (!body.contains("tools") || body["tools"].is_null()) return ojson();
  const json& tools = body["tools"];
  if (!tools.is_array()) throw bad_request("'tools' must be an array", "tools");
  ojson out = ojson::array();
  for (size_t i = 0; i < tools.size(); i++) {
    const json& t = tools[i];
    std::string w = fmt::format("tools[{}]", i);
    if (!t.is_object() || t.value("type", "") != "function")
      throw bad_request(fmt::format("'{}.type' must be \"function\" (the only tool type this node supports)", w), w + ".type");
    if (!t.contains("function") || !t["function"].is_object() || !t["function"].contains("name") ||
        !t["function"]["name"].is_string() || t["function"]["name"].get<std::string>().empty())
      throw bad_request(fmt::format("'{}.function.name' is required", w), w + ".function.name");
    out.push_back(ojson::parse(t.dump()));
  }
  return out;
}

void parse_tool_choice(const json& body, const ojson& tools, ChatRequest& cr) {
  if (!body.contains("tool_choice") || body["tool_choice"].is_null()) return;
  const json& tc = body["tool_choice"];
  if (tc.is_string()) {
    std::string s = tc;
    if (s == "auto") cr.tool_choice = ToolChoice::Auto;
    else if (s == "none") cr.tool_choice = ToolChoice::None;
    else if (s == "required") cr.tool_choice = ToolChoice::Required;
    else throw bad_request("'tool_choice' must be \"none\", \"auto\", \"required\" or {type: \"function\", function: {name}}", "tool_choice");
  } else if (tc.is_object() && tc.value("type", "") == "function" && tc.contains("function") &&
             tc["function"].is_object() && tc["function"].contains("name") && tc["function"]["name"].is_string()) {
    cr.tool_choice = ToolChoice::Named;
    cr.forced_tool = tc["function"]["name"];
  } else {
    throw bad_request("'tool_choice' must be \"none\", \"auto\", \"required\" or {type: \"function\", function: {name}}", "tool_choice");
  }
  if (cr.tool_choice != ToolChoice::None && cr.tool_choice != ToolChoice::Auto && !tools.is_array())
    throw bad_request("'tool_choice' requires 'tools'", "tool_choice");
  if (cr.tool_choice == ToolChoice::Named) {
    bool found = false;
    for (const auto& t : tools) found |= t["function"]["name"] == cr.forced_tool;
    if (!found) throw bad_request(fmt::format("'tool_choice' names '{}', which is not in 'tools'", cr.forced_tool), "tool_choice");
  }
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(c);
  return b;
}

json chat_logprob_entries(const std::vector<TokenInfo>& toks) {
  json out = json::array();
  for (const auto& t : toks) {
    json top = json::array();
    for (const auto& [piece, lp] : t.top) top.push_back({{"token", piece}, {"logprob", lp}, {"bytes", bytes_of(piece)}});
    out.push_back({{"token", t.piece}, {"logprob", t.logprob}, {"bytes", bytes_of(t.piece)}, {"top_logprobs", top}});
  }
  return out;
}

const char* openai_finish(const GenerationResult& r, bool tool_calls) {
  switch (r.finish) {
    case FinishReason::Length:
    case FinishReason::ContextFull: return "length";
    default: return tool_calls ? "tool_calls" : "stop";
  }
}

json usage_json(int prompt, int cached, int completion, int reasoning = -1) {
  json u = {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}};
  if (reasoning >= 0) u["completion_tokens_details"] = {{"reasoning_tokens", reasoning}};
  return u;
}

json tool_call_json(const ToolCall& c) {
  return {{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}};
}

struct StreamFlags {
  bool include_usage = false;
};

StreamFlags stream_flags(const json& body, bool stream) {
  StreamFlags f;
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    if (!stream) throw bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    if (!body["stream_options"].is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
    f.include_usage = opt_bool(body["stream_options"], "include_usage").value_or(false);
  }
  return f;
}

void reject_unsupported_chat(const json& body) {
  if (auto n = opt_int(body, "n", 1, 128); n && *n != 1)
    throw bad_request("'n' must be 1: this node generates one choice per request (send several requests instead)", "n");
  if (body.contains("response_format") && !body["response_format"].is_null()) {
    const json& rf = body["response_format"];
    if (!rf.is_object() || rf.value("type", "") != "text")
      throw bad_request("'response_format' types other than \"text\" (json_object, json_schema) are not supported yet", "response_format");
  }
  if (body.contains("modalities") && !body["modalities"].is_null() && body["modalities"] != json::array({"text"}))
    throw bad_request("Only the \"text\" modality is supported", "modalities");
  opt_bool(body, "parallel_tool_calls");
  opt_bool(body, "store");
  opt_string(body, "user");
  if (body.contains("metadata") && !body["metadata"].is_null() && !body["metadata"].is_object())
    throw bad_request("'metadata' must be an object", "metadata");
}

}  // namespace

SamplingParams sampling_from(const json& body, int n_vocab, std::vector<std::pair<int32_t, float>>* bias) {
  SamplingParams sp;
  sp.temperature = static_cast<float>(opt_number(body, "temperature", 0, 2).value_or(1.0));
  sp.top_p = static_cast<float>(opt_number(body, "top_p", 0, 1).value_or(1.0));
  if (sp.top_p <= 0) sp.temperature = 0;  // top_p 0 keeps only the most likely token
  if (sp.top_p <= 0) sp.top_p = 1;
  sp.top_k = static_cast<int>(opt_int(body, "top_k", 0, 1 << 20).value_or(0));
  sp.min_p = static_cast<float>(opt_number(body, "min_p", 0, 1).value_or(0));
  sp.frequency_penalty = static_cast<float>(opt_number(body, "frequency_penalty", -2, 2).value_or(0));
  sp.presence_penalty = static_cast<float>(opt_number(body, "presence_penalty", -2, 2).value_or(0));
  sp.repeat_penalty = static_cast<float>(opt_number(body, "repeat_penalty", 0.01, 10).value_or(1));
  sp.repeat_last_n = -1;
  if (auto seed = opt_int(body, "seed", INT64_MIN, INT64_MAX)) sp.seed = static_cast<uint64_t>(*seed);
  else sp.seed = std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32);
  if (std::string err = sp.validate(); !err.empty()) throw bad_request(err);
  if (bias && body.contains("logit_bias") && !body["logit_bias"].is_null()) {
    const json& lb = body["logit_bias"];
    if (!lb.is_object()) throw bad_request("'logit_bias' must be an object mapping token ids to biases", "logit_bias");
    for (auto it = lb.begin(); it != lb.end(); ++it) {
      char* end = nullptr;
      long id = std::strtol(it.key().c_str(), &end, 10);
      if (it.key().empty() || *end != '\0' || id < 0 || id >= n_vocab)
        throw bad_request(fmt::format("'logit_bias' key '{}' is not a token id of this model (0..{})", it.key(), n_vocab - 1), "logit_bias");
      if (!it->is_number() || it->get<double>() < -100 || it->get<double>() > 100)
        throw bad_request(fmt::format("'logit_bias[{}]' must be a number between -100 and 100", it.key()), "logit_bias");
      bias->emplace_back(static_cast<int32_t>(id), it->get<float>());
    }
  }
  return sp;
}

void stream_response(httplib::Response& res, const char* content_type, StreamBody body) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto shared = std::make_shared<StreamBody>(std::move(body));
  res.set_chunked_content_provider(content_type, [shared](size_t, httplib::DataSink& sink) {
    (*shared)([&sink](const std::string& s) { return sink.write(s.data(), s.size()); });
    sink.done();
    return true;
  });
}

namespace {
json model_entry(const std::string& id, int64_t created, int context_length, const json& meta) {
  json m = {{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "llmesh"},
            {"context_length", context_length}};
  if (!meta.is_null()) m["meta"] = meta;
  // Anthropic's model list shape too, so either SDK can list models.
  m["type"] = "model";
  m["display_name"] = id;
  m["created_at"] = fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(static_cast<std::time_t>(created)));
  return m;
}
}  // namespace

void handle_models(const ApiContext& ctx, const httplib::Request&, httplib::Response& res) {
  json data = json::array();
  if (ctx.model) {
    data.push_back(model_entry(ctx.model->id, ctx.model->created, ctx.model->n_ctx(), ctx.model->info));
    for (const auto& a : ctx.model->aliases) data.push_back(model_entry(a, ctx.model->created, ctx.model->n_ctx(), nullptr));
  }
  if (ctx.router) {
    for (const auto& m : ctx.router->models()) {
      if (ctx.model && ctx.model->answers_to(m.id)) continue;
      data.push_back(model_entry(m.id, m.created, m.context_length, json{{"nodes", m.nodes}}));
    }
  }
  json out = {{"object", "list"}, {"data", data}, {"has_more", false},
              {"first_id", data.empty() ? json(nullptr) : data.front()["id"]},
              {"last_id", data.empty() ? json(nullptr) : data.back()["id"]}};
  res.set_content(dump_json(out), "application/json");
}

void handle_model(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string id = req.matches.size() > 1 ? std::string(req.matches[1]) : "";
  if (ctx.model && ctx.model->answers_to(id)) {
    res.set_content(dump_json(model_entry(id, ctx.model->created, ctx.model->n_ctx(), nullptr)), "application/json");
    return;
  }
  if (ctx.router)
    for (const auto& m : ctx.router->models())
      if (m.id == id) {
        res.set_content(dump_json(model_entry(id, m.created, m.context_length, json{{"nodes", m.nodes}})),
                        "application/json");
        return;
      }
  throw ApiError(404, "invalid_request_error", fmt::format("The model '{}' does not exist on this node or its mesh", id),
                 "model", "model_not_found");
}

void handle_chat_completions(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res) {
  json body = parse_body(req.body);
  reject_unknown_fields(body, kChatFields);
  check_model(ctx, body, ApiFlavor::OpenAI);
  if (!body.contains("messages")) throw bad_request("'messages' is required", "messages");
  reject_unsupported_chat(body);
  const bool stream = opt_bool(body, "stream").value_or(false);
  StreamFlags flags = stream_flags(body, stream);

  ChatRequest cr;
  cr.messages = convert_messages(body["messages"]);
  cr.tools = convert_tools(body);
  parse_tool_choice(body, cr.tools, cr);
  if (auto effort = opt_string(body, "reasoning_effort")) {
    if (*effort != "none" && *effort != "minimal" && *effort != "low" && *effort != "medium" && *effort != "high")
      throw bad_request("'reasoning_effort' must be none, minimal, low, medium or high", "reasoning_effort");
    cr.enable_thinking = *effort != "none" && *effort != "minimal";
  }
  if (body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()) {
    if (!body["chat_template_kwargs"].is_object()) throw bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs");
    cr.template_kwargs = ojson::parse(body["chat_template_kwargs"].dump());
  }

  GenerationRequest gr;
  gr.sampling = sampling_from(body, ctx.model->tokenizer->n_vocab(), &gr.logit_bias);
  const bool logprobs = opt_bool(body, "logprobs").value_or(false);
  auto top = opt_int(body, "top_logprobs", 0, 20);
  if (top && !logprobs) throw bad_request("'top_logprobs' requires 'logprobs': true", "top_logprobs");
  gr.top_logprobs = logprobs ? static_cast<int>(top.value_or(0)) : -1;
  auto max_tokens = opt_int(body, "max_completion_tokens", 1, INT32_MAX);
  if (!max_tokens) max_tokens = opt_int(body, "max_tokens", 1, INT32_MAX);

  ChoiceConfig cfg;
  cfg.stop_strings = stop_list(body, "stop", 4);
  cfg.logprobs = logprobs;
  auto sub = std::make_shared<Submission>(submit_chat(ctx, cr, std::move(gr), std::move(cfg), max_tokens));
  auto watch = std::make_shared<ConnectionWatch>(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  const std::string id = random_id("chatcmpl-");
  const int64_t created = unix_now();
  const std::string model = body["model"];

  if (!stream) {
    std::string content, reasoning;
    std::vector<ToolCall> calls;
    json lp_entries = json::array();
    GenerationResult result;
    bool ok = pump(ctx, *sub, watch.get(), [&](std::vector<ChannelEvent>& evs) {
      for (auto& e : evs) {
        for (auto& o : e.out) {
          if (o.kind == OutputEvent::Kind::Text) content += o.text;
          else if (o.kind == OutputEvent::Kind::Reasoning) reasoning += o.text;
          else calls.push_back(o.call);
        }
        for (auto& t : chat_logprob_entries(e.tokens)) lp_entries.push_back(t);
        if (e.done) result = e.result;
      }
      return true;
    }, nullptr);
    if (!ok) {
      res.status = 499;  // the client is gone; nobody reads this
      return;
    }
    record_choice(ctx, *sub, result);
    if (result.finish == FinishReason::Error)
      throw ApiError(500, "server_error", "Generation failed: " + result.error);
    json msg = {{"role", "assistant"}, {"content", content.empty() && !calls.empty() ? json(nullptr) : json(content)},
                {"refusal", nullptr}};
    if (!reasoning.empty()) msg["reasoning_content"] = reasoning;
    if (!calls.empty()) {
      json tcs = json::array();
      for (auto& c : calls) tcs.push_back(tool_call_json(c));
      msg["tool_calls"] = tcs;
    }
    json choice = {{"index", 0}, {"message", msg}, {"finish_reason", openai_finish(result, !calls.empty())},
                   {"logprobs", logprobs ? json{{"content", lp_entries}, {"refusal", nullptr}} : json(nullptr)}};
    json out = {{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", model},
                {"system_fingerprint", "llmesh"}, {"choices", json::array({choice})},
                {"usage", usage_json(result.prompt_tokens, result.cached_tokens, result.completion_tokens)}};
    res.set_content(dump_json(out), "application/json");
    return;
  }

  stream_response(res, "text/event-stream", [ctx, sub, watch, id, created, model, flags, logprobs](auto& write) {
    auto chunk = [&](json delta, json finish, json lp) {
      json c = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                {"system_fingerprint", "llmesh"},
                {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"logprobs", std::move(lp)},
                                          {"finish_reason", std::move(finish)}}})}};
      if (flags.include_usage) c["usage"] = nullptr;
      return write("data: " + dump_json(c) + "\n\n");
    };
    if (!chunk({{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}, nullptr, nullptr)) {
      sub->running->cancel();
      return;
    }
    int n_calls = 0;
    GenerationResult result;
    bool failed = false;
    bool ok = pump(ctx, *sub, watch.get(), [&](std::vector<ChannelEvent>& evs) {
      for (auto& e : evs) {
        json lp = logprobs && !e.tokens.empty() ? json{{"content", chat_logprob_entries(e.tokens)}, {"refusal", nullptr}}
                                                : json(nullptr);
        bool lp_sent = false;
        for (auto& o : e.out) {
          json delta;
          if (o.kind == OutputEvent::Kind::Text) delta = {{"content", o.text}};
          else if (o.kind == OutputEvent::Kind::Reasoning) delta = {{"reasoning_content", o.text}};
          else {
            json call = tool_call_json(o.call);
            call["index"] = n_calls++;
            delta = {{"tool_calls", json::array({call})}};
          }
          if (!chunk(delta, nullptr, lp_sent ? json(nullptr) : lp)) return false;
          lp_sent = true;
        }
        if (!lp_sent && !lp.is_null() && !chunk(json::object(), nullptr, lp)) return false;
        if (e.done) {
          result = e.result;
          record_choice(ctx, *sub, result);
          if (result.finish == FinishReason::Error) {
            failed = true;
            json err = error_body(ApiError(500, "server_error", "Generation failed: " + result.error), ApiFlavor::OpenAI);
            return write("data: " + dump_json(err) + "\n\n");
          }
          if (!chunk(json::object(), openai_finish(result, n_calls > 0), nullptr)) return false;
        }
      }
      return true;
    }, [&] { return write(": keep-alive\n\n"); });
    if (!ok || failed) return;
    if (flags.include_usage) {
      json u = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                {"system_fingerprint", "llmesh"}, {"choices", json::array()},
                {"usage", usage_json(result.prompt_tokens, result.cached_tokens, result.completion_tokens)}};
      if (!write("data: " + dump_json(u) + "\n\n")) return;
    }
    write("data: [DONE]\n\n");
  });
}

// ---------------------------------------------------------------- /v1/completions

namespace {

std::vector<std::vector<int32_t>> completion_prompts(const ApiContext& ctx, const json& body,
                                                     std::vector<std::string>& texts) {
  if (!body.contains("prompt") || body["prompt"].is_null()) throw bad_request("'prompt' is required", "prompt");
  const json& p = body["prompt"];
  const int n_vocab = ctx.model->tokenizer->n_vocab();
  auto from_ids = [&](const json& arr, const std::string& where) {
    std::vector<int32_t> ids;
    for (const auto& v : arr) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= n_vocab)
        throw bad_request(fmt::format("'{}' must hold token ids in 0..{}", where, n_vocab - 1), "prompt");
      ids.push_back(v.get<int32_t>());
    }
    return ids;
  };
  std::vector<std::vector<int32_t>> out;
  auto add_text = [&](const std::string& s) {
    std::vector<int32_t> ids = ctx.model->tokenizer->encode(s, /*add_special=*/true, /*parse_special=*/true);
    texts.push_back(s);
    out.push_back(std::move(ids));
  };
  if (p.is_string()) {
    add_text(p.get<std::string>());
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    out.push_back(from_ids(p, "prompt"));
    texts.push_back(ctx.model->tokenizer->decode(out.back()));
  } else if (p.is_array() && !p.empty()) {
    if (p.size() > 64) throw bad_request("'prompt' may hold at most 64 prompts", "prompt");
    for (size_t i = 0; i < p.size(); i++) {
      if (p[i].is_string()) add_text(p[i].get<std::string>());
      else if (p[i].is_array()) {
        out.push_back(from_ids(p[i], fmt::format("prompt[{}]", i)));
        texts.push_back(ctx.model->tokenizer->decode(out.back()));
      } else throw bad_request(fmt::format("'prompt[{}]' must be a string or an array of token ids", i), "prompt");
    }
  } else {
    throw bad_request("'prompt' must be a string, an array of strings, or token ids", "prompt");
  }
  for (size_t i = 0; i < out.size(); i++)
    if (out[i].empty()) throw bad_request(fmt::format("prompt {} is empty: nothing to continue from", i), "prompt");
  return out;
}

struct CompletionLogprobs {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();
  size_t offset = 0;
  void add(const std::vector<TokenInfo>& toks) {
    for (const auto& t : toks) {
      tokens.push_back(t.piece);
      token_logprobs.push_back(t.logprob);
      json top = json::object();
      for (const auto& [piece, lp] : t.top) top[piece] = lp;
      top_logprobs.push_back(top);
      text_offset.push_back(offset);
      offset += t.piece.size();
    }
  }
  json to_json() const {
    return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs},
            {"text_offset", text_offset}};
  }
};

}  // namespace

void handle_completions(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res) {
  json body = parse_body(req.body);
  reject_unknown_fields(body, kCompletionFields);
  check_model(ctx, body, ApiFlavor::OpenAI);
  if (auto n = opt_int(body, "n", 1, 128); n && *n != 1)
    throw bad_request("'n' must be 1: this node generates one choice per prompt", "n");
  if (auto b = opt_int(body, "best_of", 1, 128); b && *b != 1)
    throw bad_request("'best_of' must be 1", "best_of");
  if (auto s = opt_string(body, "suffix"); s && !s->empty())
    throw bad_request("'suffix' (fill-in-the-middle) is not supported", "suffix");
  opt_string(body, "user");
  const bool stream = opt_bool(body, "stream").value_or(false);
  StreamFlags flags = stream_flags(body, stream);
  const bool echo = opt_bool(body, "echo").value_or(false);
  auto lp = opt_int(body, "logprobs", 0, 5);
  if (echo && lp) throw bad_request("'echo' together with 'logprobs' is not supported (prompt logprobs are not computed)", "echo");

  std::vector<std::string> texts;
  auto prompts = completion_prompts(ctx, body, texts);
  auto max_tokens = opt_int(body, "max_tokens", 0, INT32_MAX).value_or(16);
  std::vector<std::pair<int32_t, float>> bias;
  SamplingParams sp = sampling_from(body, ctx.model->tokenizer->n_vocab(), &bias);
  auto stops = stop_list(body, "stop", 4);

  std::vector<GenerationRequest> reqs;
  std::vector<ChoiceConfig> cfgs;
  for (auto& p : prompts) {
    GenerationRequest gr;
    gr.max_tokens = budget_tokens(ctx, p.size(), max_tokens);
    gr.prompt = std::move(p);
    gr.sampling = sp;
    gr.logit_bias = bias;
    gr.top_logprobs = lp ? static_cast<int>(*lp) : -1;
    gr.stop_tokens = ctx.model->stop_tokens;
    reqs.push_back(std::move(gr));
    ChoiceConfig cfg;
    cfg.stop_strings = stops;
    cfg.logprobs = lp.has_value();
    cfgs.push_back(std::move(cfg));
  }
  const int n = static_cast<int>(reqs.size());
  // max_tokens 0 with echo: just the prompt back.
  auto sub = std::make_shared<Submission>();
  bool generate = max_tokens > 0;
  if (generate) *sub = submit_choices(ctx, std::move(reqs), std::move(cfgs));
  auto watch = std::make_shared<ConnectionWatch>(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  const std::string id = random_id("cmpl-");
  const int64_t created = unix_now();
  const std::string model = body["model"];

  if (!stream) {
    std::vector<std::string> text(n);
    std::vector<CompletionLogprobs> lps(n);
    std::vector<GenerationResult> results(n);
    if (echo)
      for (int i = 0; i < n; i++) text[i] = texts[i];
    if (generate) {
      bool ok = pump(ctx, *sub, watch.get(), [&](std::vector<ChannelEvent>& evs) {
        for (auto& e : evs) {
          for (auto& o : e.out) text[e.choice] += o.text;
          lps[e.choice].add(e.tokens);
          if (e.done) results[e.choice] = e.result;
        }
        return true;
      }, nullptr);
      if (!ok) {
        res.status = 499;
        return;
      }
    }
    json choices = json::array();
    int pt = 0, ct = 0, cached = 0;
    for (int i = 0; i < n; i++) {
      if (generate) {
        record_choice(ctx, *sub, results[i]);
        if (results[i].finish == FinishReason::Error)
          throw ApiError(500, "server_error", "Generation failed: " + results[i].error);
      }
      pt += generate ? results[i].prompt_tokens : static_cast<int>(prompts[i].size());
      ct += results[i].completion_tokens;
      cached += results[i].cached_tokens;
      choices.push_back({{"index", i}, {"text", text[i]}, {"logprobs", lp ? lps[i].to_json() : json(nullptr)},
                         {"finish_reason", generate ? openai_finish(results[i], false) : "length"}});
    }
    json out = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
                {"system_fingerprint", "llmesh"}, {"choices", choices}, {"usage", usage_json(pt, cached, ct)}};
    res.set_content(dump_json(out), "application/json");
    return;
  }

  std::vector<size_t> prompt_sizes;
  for (auto& p : prompts) prompt_sizes.push_back(p.size());
  stream_response(res, "text/event-stream", [ctx, sub, watch, id, created, model, flags, lp, echo, texts, n, generate,
                                             prompt_sizes](auto& write) {
    auto chunk = [&](int index, const std::string& text, json finish, json lpj) {
      json c = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
                {"system_fingerprint", "llmesh"},
                {"choices", json::array({{{"index", index}, {"text", text}, {"logprobs", std::move(lpj)},
                                          {"finish_reason", std::move(finish)}}})}};
      if (flags.include_usage) c["usage"] = nullptr;
      return write("data: " + dump_json(c) + "\n\n");
    };
    if (echo)
      for (int i = 0; i < n; i++)
        if (!chunk(i, texts[i], nullptr, nullptr)) return;
    int pt = 0, ct = 0, cached = 0;
    if (generate) {
      bool failed = false;
      bool ok = pump(ctx, *sub, watch.get(), [&](std::vector<ChannelEvent>& evs) {
        for (auto& e : evs) {
          std::string text;
          for (auto& o : e.out) text += o.text;
          json lpj = nullptr;
          if (lp && !e.tokens.empty()) {
            CompletionLogprobs c;
            c.add(e.tokens);
            lpj = c.to_json();
          }
          if ((!text.empty() || !lpj.is_null()) && !chunk(e.choice, text, nullptr, lpj)) return false;
          if (e.done) {
            record_choice(ctx, *sub, e.result);
            pt += e.result.prompt_tokens;
            ct += e.result.completion_tokens;
            cached += e.result.cached_tokens;
            if (e.result.finish == FinishReason::Error) {
              failed = true;
              json err = error_body(ApiError(500, "server_error", "Generation failed: " + e.result.error), ApiFlavor::OpenAI);
              return write("data: " + dump_json(err) + "\n\n");
            }
            if (!chunk(e.choice, "", openai_finish(e.result, false), nullptr)) return false;
          }
        }
        return true;
      }, [&] { return write(": keep-alive\n\n"); });
      if (!ok || failed) return;
    } else {
      for (int i = 0; i < n; i++) {
        pt += static_cast<int>(prompt_sizes[i]);
        if (!chunk(i, "", "length", nullptr)) return;
      }
    }
    if (flags.include_usage) {
      json u = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
                {"choices", json::array()}, {"usage", usage_json(pt, cached, ct)}};
      if (!write("data: " + dump_json(u) + "\n\n")) return;
    }
    write("data: [DONE]\n\n");
  });
}

}  // namespace llmesh::api
