// Anthropic-compatible endpoints: /v1/messages (plain and streaming) and
// /v1/messages/count_tokens. Conversations are converted to OpenAI's message shape, which is
// what chat templates are written for.
#include <fmt/format.h>

#include "server/chat_prompt.h"
#include "server/endpoints.h"

namespace llmesh::api {
namespace {

std::string text_of_blocks(const json& content, const std::string& where, bool allow_string = true) {
  if (content.is_string() && allow_string) return content.get<std::string>();
  if (!content.is_array())
    throw bad_request(fmt::format("{}: must be a string or an array of content blocks", where));
  std::string out;
  for (size_t i = 0; i < content.size(); i++) {
    const json& b = content[i];
    std::string bw = fmt::format("{}.{}", where, i);
    if (!b.is_object() || !b.contains("type") || !b["type"].is_string())
      throw bad_request(fmt::format("{}: a content block must be an object with a 'type'", bw));
    std::string type = b["type"];
    if (type != "text")
      throw bad_request(fmt::format("{}.type: '{}' blocks are not supported here: this node serves a text-only model", bw, type));
    if (!b.contains("text") || !b["text"].is_string()) throw bad_request(fmt::format("{}.text: Field required", bw));
    if (!out.empty()) out += "\n";
    out += b["text"].get<std::string>();
  }
  return out;
}

// Anthropic messages -> OpenAI-shaped messages for the chat template.
ojson convert_messages(const json& body) {
  ojson out = ojson::array();
  if (body.contains("system") && !body["system"].is_null()) {
    std::string sys = text_of_blocks(body["system"], "system");
    out.push_back({{"role", "system"}, {"content", sys}});
  }
  if (!body.contains("messages")) throw bad_request("messages: Field required");
  const json& msgs = body["messages"];
  if (!msgs.is_array()) throw bad_request("messages: Input should be a valid list");
  if (msgs.empty()) throw bad_request("messages: at least one message is required");
  for (size_t i = 0; i < msgs.size(); i++) {
    const json& m = msgs[i];
    std::string w = fmt::format("messages.{}", i);
    if (!m.is_object()) throw bad_request(fmt::format("{}: Input should be an object", w));
    if (!m.contains("role") || !m["role"].is_string()) throw bad_request(fmt::format("{}.role: Field required", w));
    std::string role = m["role"];
    if (role != "user" && role != "assistant")
      throw bad_request(fmt::format("{}.role: Input should be 'user' or 'assistant', got '{}'", w, role));
    if (!m.contains("content")) throw bad_request(fmt::format("{}.content: Field required", w));
    const json& content = m["content"];
    if (content.is_string()) {
      out.push_back({{"role", role}, {"content", content.get<std::string>()}});
      continue;
    }
    if (!content.is_array()) throw bad_request(fmt::format("{}.content: must be a string or an array of content blocks", w));
    std::string text, thinking;
    ojson calls = ojson::array();
    for (size_t k = 0; k < content.size(); k++) {
      const json& b = content[k];
      std::string bw = fmt::format("{}.content.{}", w, k);
      if (!b.is_object() || !b.contains("type") || !b["type"].is_string())
        throw bad_request(fmt::format("{}: a content block must be an object with a 'type'", bw));
      std::string type = b["type"];
      if (type == "text") {
        if (!b.contains("text") || !b["text"].is_string()) throw bad_request(fmt::format("{}.text: Field required", bw));
        if (!text.empty()) text += "\n";
        text += b["text"].get<std::string>();
      } else if (type == "tool_use") {
        if (role != "assistant") throw bad_request(fmt::format("{}: tool_use blocks belong in assistant messages", bw));
        if (!b.contains("name") || !b["name"].is_string()) throw bad_request(fmt::format("{}.name: Field required", bw));
        if (!b.contains("id") || !b["id"].is_string()) throw bad_request(fmt::format("{}.id: Field required", bw));
        ojson input = b.contains("input") ? ojson::parse(b["input"].dump()) : ojson::object();
        calls.push_back({{"id", b["id"].get<std::string>()}, {"type", "function"},
                         {"function", {{"name", b["name"].get<std::string>()}, {"arguments", input}}}});
      } else if (type == "tool_result") {
        if (role != "user") throw bad_request(fmt::format("{}: tool_result blocks belong in user messages", bw));
        if (!b.contains("tool_use_id") || !b["tool_use_id"].is_string())
          throw bad_request(fmt::format("{}.tool_use_id: Field required", bw));
        std::string result = b.contains("content") && !b["content"].is_null()
                                 ? text_of_blocks(b["content"], bw + ".content") : "";
        if (b.value("is_error", false)) result = "Error: " + result;
        // Results come before any text of the same turn, as tool messages.
        out.push_back({{"role", "tool"}, {"tool_call_id", b["tool_use_id"].get<std::string>()}, {"content", result}});
      } else if (type == "thinking") {
        if (b.contains("thinking") && b["thinking"].is_string()) thinking += b["thinking"].get<std::string>();
      } else if (type == "redacted_thinking") {
        // Opaque to us; nothing to show the model.
      } else {
        throw bad_request(fmt::format("{}.type: '{}' blocks are not supported: this node serves a text-only model "
                                      "with client-side tools", bw, type));
      }
    }
    if (role == "assistant") {
      ojson a = {{"role", "assistant"}, {"content", text}};
      if (!thinking.empty()) a["reasoning_content"] = thinking;
      if (!calls.empty()) a["tool_calls"] = calls;
      out.push_back(std::move(a));
    } else if (!text.empty() || out.empty() || out.back()["role"] != "tool") {
      out.push_back({{"role", "user"}, {"content", text}});
    }
  }
  return out;
}

ojson convert_tools(const json& body) {
  if (!body.contains("tools") || body["tools"].is_null()) return ojson();
  const json& tools = body["tools"];
  if (!tools.is_array()) throw bad_request("tools: Input should be a valid list");
  ojson out = ojson::array();
  for (size_t i = 0; i < tools.size(); i++) {
    const json& t = tools[i];
    std::string w = fmt::format("tools.{}", i);
    if (!t.is_object()) throw bad_request(fmt::format("{}: Input should be an object", w));
    if (t.contains("type") && t["type"].is_string() && t["type"] != "custom")
      throw bad_request(fmt::format("{}.type: Anthropic-hosted tool '{}' is not available on this node; define "
                                    "the tool with a name and input_schema instead", w, t["type"].get<std::string>()));
    if (!t.contains("name") || !t["name"].is_string() || t["name"].get<std::string>().empty())
      throw bad_request(fmt::format("{}.name: Field required", w));
    if (!t.contains("input_schema") || !t["input_schema"].is_object())
      throw bad_request(fmt::format("{}.input_schema: Field required", w));
    ojson fn = {{"name", t["name"].get<std::string>()}};
    if (t.contains("description") && t["description"].is_string()) fn["description"] = t["description"].get<std::string>();
    fn["parameters"] = ojson::parse(t["input_schema"].dump());
    out.push_back({{"type", "function"}, {"function", fn}});
  }
  return out;
}

void parse_tool_choice(const json& body, const ojson& tools, ChatRequest& cr) {
  if (!body.contains("tool_choice") || body["tool_choice"].is_null()) return;
  const json& tc = body["tool_choice"];
  if (!tc.is_object() || !tc.contains("type") || !tc["type"].is_string())
    throw bad_request("tool_choice: must be an object with a 'type' (auto, any, tool, none)");
  std::string t = tc["type"];
  if (t == "auto") cr.tool_choice = ToolChoice::Auto;
  else if (t == "none") cr.tool_choice = ToolChoice::None;
  else if (t == "any") cr.tool_choice = ToolChoice::Required;
  else if (t == "tool") {
    if (!tc.contains("name") || !tc["name"].is_string()) throw bad_request("tool_choice.name: Field required");
    cr.tool_choice = ToolChoice::Named;
    cr.forced_tool = tc["name"];
    bool found = false;
    if (tools.is_array())
      for (const auto& x : tools) found |= x["function"]["name"] == cr.forced_tool;
    if (!found) throw bad_request(fmt::format("tool_choice.name: '{}' is not one of the tools", cr.forced_tool));
  } else {
    throw bad_request(fmt::format("tool_choice.type: must be auto, any, tool or none, got '{}'", t));
  }
  if ((cr.tool_choice == ToolChoice::Required) && !tools.is_array())
    throw bad_request("tool_choice: 'any' requires tools");
}

ChatRequest chat_request(const json& body) {
  ChatRequest cr;
  cr.messages = convert_messages(body);
  cr.tools = convert_tools(body);
  parse_tool_choice(body, cr.tools, cr);
  // Anthropic's models think only when asked to.
  cr.enable_thinking = false;
  if (body.contains("thinking") && !body["thinking"].is_null()) {
    const json& th = body["thinking"];
    if (!th.is_object() || !th.contains("type") || !th["type"].is_string())
      throw bad_request("thinking: must be {type: \"enabled\", budget_tokens} or {type: \"disabled\"}");
    std::string t = th["type"];
    if (t == "enabled") cr.enable_thinking = true;
    else if (t != "disabled") throw bad_request(fmt::format("thinking.type: must be 'enabled' or 'disabled', got '{}'", t));
  }
  return cr;
}

const char* stop_reason(const GenerationResult& r, bool tool_calls, const std::string& stop_string) {
  if (r.finish == FinishReason::Length || r.finish == FinishReason::ContextFull) return "max_tokens";
  if (tool_calls) return "tool_use";
  if (!stop_string.empty()) return "stop_sequence";
  return "end_turn";
}

json usage(const GenerationResult& r) {
  return {{"input_tokens", r.prompt_tokens - r.cached_tokens}, {"output_tokens", r.completion_tokens},
          {"cache_read_input_tokens", r.cached_tokens}, {"cache_creation_input_tokens", 0}};
}

std::string event(const char* name, const json& data) {
  return fmt::format("event: {}\ndata: {}\n\n", name, dump_json(data));
}

json tool_use_block(const ToolCall& c) {
  json input;
  try {
    input = json::parse(c.arguments);
  } catch (const std::exception&) {
    input = json::object();
  }
  std::string id = c.id.rfind("call_", 0) == 0 ? "toolu_" + c.id.substr(5) : c.id;
  return {{"type", "tool_use"}, {"id", id}, {"name", c.name}, {"input", input}};
}

}  // namespace

void handle_count_tokens(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res) {
  json body = parse_body(req.body);
  check_model(ctx, body, ApiFlavor::Anthropic);
  ChatRequest cr = chat_request(body);
  ChatPrompt p = build_chat_prompt(*ctx.model, cr);
  res.set_content(dump_json(json{{"input_tokens", p.tokens.size()}}), "application/json");
}

void handle_messages(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res) {
  json body = parse_body(req.body);
  check_model(ctx, body, ApiFlavor::Anthropic);
  if (!body.contains("max_tokens")) throw bad_request("max_tokens: Field required");
  auto max_tokens = opt_int(body, "max_tokens", 1, INT32_MAX);
  const bool stream = opt_bool(body, "stream").value_or(false);
  if (body.contains("mcp_servers") && !body["mcp_servers"].is_null() && !body["mcp_servers"].empty())
    throw bad_request("mcp_servers: MCP connectors are not available on this node");

  ChatRequest cr = chat_request(body);
  GenerationRequest gr;
  json sbody = {{"temperature", opt_number(body, "temperature", 0, 1).value_or(1.0)}};
  if (body.contains("top_p")) sbody["top_p"] = body["top_p"];
  if (body.contains("top_k")) sbody["top_k"] = body["top_k"];
  gr.sampling = sampling_from(sbody, ctx.model->tokenizer->n_vocab(), nullptr);
  ChoiceConfig cfg;
  cfg.stop_strings = stop_list(body, "stop_sequences", 16);
  auto sub = std::make_shared<Submission>(submit_chat(ctx, cr, std::move(gr), std::move(cfg), max_tokens,
                                                      /*clamp_max_tokens=*/true));
  const size_t prompt_size = sub->prompt_tokens;
  auto watch = std::make_shared<ConnectionWatch>(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  const std::string id = random_id("msg_");
  const std::string model = body["model"];

  if (!stream) {
    json content = json::array();
    std::string text, thinking, stop_string;
    std::vector<ToolCall> calls;
    GenerationResult result;
    // Blocks keep the order the model wrote them in: thinking, text, tool calls.
    auto flush_text = [&] {
      if (!thinking.empty()) content.push_back({{"type", "thinking"}, {"thinking", thinking}, {"signature", ""}});
      if (!text.empty()) content.push_back({{"type", "text"}, {"text", text}});
      thinking.clear();
      text.clear();
    };
    bool ok = pump(ctx, *sub, watch.get(), [&](std::vector<ChannelEvent>& evs) {
      for (auto& e : evs) {
        for (auto& o : e.out) {
          if (o.kind == OutputEvent::Kind::Text) text += o.text;
          else if (o.kind == OutputEvent::Kind::Reasoning) thinking += o.text;
          else {
            flush_text();
            calls.push_back(o.call);
            content.push_back(tool_use_block(o.call));
          }
        }
        if (e.done) {
          result = e.result;
          stop_string = e.stop_string;
        }
      }
      return true;
    }, nullptr);
    if (!ok) {
      res.status = 499;
      return;
    }
    flush_text();
    record_choice(ctx, *sub, result);
    if (result.finish == FinishReason::Error) throw ApiError(500, "api_error", "Generation failed: " + result.error);
    if (content.empty()) content.push_back({{"type", "text"}, {"text", ""}});
    json out = {{"id", id}, {"type", "message"}, {"role", "assistant"}, {"model", model}, {"content", content},
                {"stop_reason", stop_reason(result, !calls.empty(), stop_string)},
                {"stop_sequence", stop_string.empty() ? json(nullptr) : json(stop_string)},
                {"usage", usage(result)}};
    res.set_content(dump_json(out), "application/json");
    return;
  }

  stream_response(res, "text/event-stream", [ctx, sub, watch, id, model, prompt_size](auto& write) {
    // message_start waits for the request's first event, so its usage already splits the
    // prompt into computed and cached tokens the way message_delta will.
    bool started = false;
    auto start_message = [&](int cached) {
      started = true;
      json u = {{"input_tokens", static_cast<int>(prompt_size) - cached}, {"output_tokens", 0},
                {"cache_read_input_tokens", cached}, {"cache_creation_input_tokens", 0}};
      json start = {{"type", "message_start"},
                    {"message", {{"id", id}, {"type", "message"}, {"role", "assistant"}, {"model", model},
                                 {"content", json::array()}, {"stop_reason", nullptr}, {"stop_sequence", nullptr},
                                 {"usage", u}}}};
      return write(event("message_start", start));
    };
    int index = -1;           // current block
    std::string open_type;    // "", "text", "thinking"
    bool pinged = false, any_call = false, failed = false;
    GenerationResult result;
    std::string stop_string;
    auto open = [&](const json& block) {
      index++;
      if (!write(event("content_block_start", {{"type", "content_block_start"}, {"index", index}, {"content_block", block}})))
        return false;
      if (!pinged) {
        pinged = true;
        return write(event("ping", {{"type", "ping"}}));
      }
      return true;
    };
    auto close = [&] {
      if (open_type.empty()) return true;
      open_type.clear();
      return write(event("content_block_stop", {{"type", "content_block_stop"}, {"index", index}}));
    };
    auto delta = [&](const json& d) {
      return write(event("content_block_delta", {{"type", "content_block_delta"}, {"index", index}, {"delta", d}}));
    };
    bool ok = pump(ctx, *sub, watch.get(), [&](std::vector<ChannelEvent>& evs) {
      for (auto& e : evs) {
        if (!started && !start_message(e.done ? e.result.cached_tokens : std::max(0, e.cached_tokens))) return false;
        for (auto& o : e.out) {
          if (o.kind == OutputEvent::Kind::Text || o.kind == OutputEvent::Kind::Reasoning) {
            const bool is_text = o.kind == OutputEvent::Kind::Text;
            const char* type = is_text ? "text" : "thinking";
            if (open_type != type) {
              if (!close()) return false;
              json block = is_text ? json{{"type", "text"}, {"text", ""}}
                                   : json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}};
              if (!open(block)) return false;
              open_type = type;
            }
            json d = is_text ? json{{"type", "text_delta"}, {"text", o.text}}
                             : json{{"type", "thinking_delta"}, {"thinking", o.text}};
            if (!delta(d)) return false;
          } else {
            if (!close()) return false;
            json block = tool_use_block(o.call);
            block["input"] = json::object();
            if (!open(block)) return false;
            if (!delta({{"type", "input_json_delta"}, {"partial_json", o.call.arguments}})) return false;
            if (!write(event("content_block_stop", {{"type", "content_block_stop"}, {"index", index}}))) return false;
            any_call = true;
          }
        }
        if (e.done) {
          result = e.result;
          stop_string = e.stop_string;
          record_choice(ctx, *sub, result);
          if (result.finish == FinishReason::Error) {
            failed = true;
            return write(event("error", {{"type", "error"}, {"error", {{"type", "api_error"},
                                                                      {"message", "Generation failed: " + result.error}}}}));
          }
        }
      }
      return true;
    }, [&] {
      // Before the first block the documented sequence has no ping; the connection watch
      // notices a vanished client meanwhile.
      return index < 0 || write(event("ping", {{"type", "ping"}}));
    });
    if (!ok || failed || !started) return;
    if (index < 0) {  // an empty answer is still one (empty) text block
      if (!open({{"type", "text"}, {"text", ""}})) return;
      open_type = "text";
    }
    if (!close()) return;
    json md = {{"type", "message_delta"},
               {"delta", {{"stop_reason", stop_reason(result, any_call, stop_string)},
                          {"stop_sequence", stop_string.empty() ? json(nullptr) : json(stop_string)}}},
               {"usage", usage(result)}};
    if (!write(event("message_delta", md))) return;
    write(event("message_stop", {{"type", "message_stop"}}));
  });
}

}  // namespace llmesh::api
