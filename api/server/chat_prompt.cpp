#include "server/chat_prompt.h"

#include <fmt/format.h>

#include <cctype>

#include "server/api_error.h"

namespace llmesh::api {
namespace {

// For templates without tools support: tool calls and results become Hermes-style text the
// model was told about in the system prompt.
ojson messages_without_tool_roles(const ojson& messages) {
  ojson out = ojson::array();
  for (const auto& m : messages) {
    std::string role = m.value("role", "");
    if (role == "assistant" && m.contains("tool_calls") && m["tool_calls"].is_array()) {
      std::string content = m.contains("content") && m["content"].is_string() ? m["content"].get<std::string>() : "";
      for (const auto& tc : m["tool_calls"]) {
        ojson call = {{"name", tc["function"]["name"]}, {"arguments", tc["function"]["arguments"]}};
        if (!content.empty()) content += "\n";
        content += "<tool_call>\n" + dump_json(call) + "\n</tool_call>";
      }
      out.push_back({{"role", "assistant"}, {"content", content}});
    } else if (role == "tool") {
      std::string text = m.contains("content") && m["content"].is_string() ? m["content"].get<std::string>() : "";
      std::string block = "<tool_response>\n" + text + "\n</tool_response>";
      // Consecutive results share one user turn, as Qwen-style templates do.
      if (!out.empty() && out.back()["role"] == "user" && out.back().value("__tool_results", false)) {
        out.back()["content"] = out.back()["content"].get<std::string>() + "\n" + block;
      } else {
        out.push_back({{"role", "user"}, {"content", block}, {"__tool_results", true}});
      }
    } else {
      out.push_back(m);
    }
  }
  for (auto& m : out) m.erase("__tool_results");
  return out;
}

std::string forced_prefix(ToolFormat f, ToolChoice c, const std::string& name) {
  const std::string quoted = dump_json(nlohmann::json(name));
  switch (f) {
    case ToolFormat::Llama3:
      return c == ToolChoice::Named ? "{\"name\": " + quoted + ", \"parameters\": " : "{\"name\": \"";
    case ToolFormat::Mistral:
      return c == ToolChoice::Named ? "[TOOL_CALLS][{\"name\": " + quoted + ", \"arguments\": " : "[TOOL_CALLS]";
    default:
      return c == ToolChoice::Named ? "<tool_call>\n{\"name\": " + quoted + ", \"arguments\": "
                                    : "<tool_call>\n{\"name\": \"";
  }
}

// Mistral's templates accept only 9-character alphanumeric call ids; other ids are mapped to
// one derived from them, the same on every turn so calls and results still pair up.
std::string mistral_id(const std::string& id) {
  static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  bool ok = id.size() == 9;
  for (char c : id) ok = ok && std::isalnum(static_cast<unsigned char>(c));
  if (ok) return id;
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
  std::string out;
  for (int i = 0; i < 9; i++, h /= 62) out += chars[h % 62];
  return out;
}

ojson with_mistral_ids(ojson messages) {
  for (auto& m : messages) {
    if (m.contains("tool_calls") && m["tool_calls"].is_array())
      for (auto& tc : m["tool_calls"])
        if (tc.contains("id") && tc["id"].is_string()) tc["id"] = mistral_id(tc["id"].get<std::string>());
    if (m.contains("tool_call_id") && m["tool_call_id"].is_string())
      m["tool_call_id"] = mistral_id(m["tool_call_id"].get<std::string>());
  }
  return messages;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

ChatPrompt build_chat_prompt(const ServedModel& model, const ChatRequest& req) {
  const bool use_tools = req.tool_choice != ToolChoice::None && req.tools.is_array() && !req.tools.empty();
  const bool forced = use_tools && (req.tool_choice == ToolChoice::Required || req.tool_choice == ToolChoice::Named);

  ChatInputs in;
  in.messages = req.messages;
  in.add_generation_prompt = true;
  in.bos_token = model.tokenizer->bos() >= 0 ? model.tokenizer->token_text(model.tokenizer->bos()) : "";
  in.eos_token = model.tokenizer->eos() >= 0 ? model.tokenizer->token_text(model.tokenizer->eos()) : "";
  in.extra = req.template_kwargs.is_object() ? req.template_kwargs : ojson::object();
  if (req.enable_thinking) in.extra["enable_thinking"] = *req.enable_thinking;
  // A forced tool call starts the answer; thinking first would be cut off.
  if (forced && model.thinking) in.extra["enable_thinking"] = false;

  if (use_tools && model.template_has_tools) {
    in.tools = req.tools;
    if (model.tool_format == ToolFormat::Mistral) in.messages = with_mistral_ids(in.messages);
  } else {
    // The template cannot show tools or tool turns: describe them in the system prompt.
    in.messages = messages_without_tool_roles(req.messages);
    if (use_tools) {
      std::string section = tool_system_prompt(req.tools);
      if (!in.messages.empty() && in.messages[0].value("role", "") == "system") {
        std::string sys = in.messages[0]["content"].is_string() ? in.messages[0]["content"].get<std::string>() : "";
        in.messages[0]["content"] = sys.empty() ? section : sys + "\n\n" + section;
      } else {
        in.messages.insert(in.messages.begin(), ojson{{"role", "system"}, {"content", section}});
      }
    }
  }

  ChatPrompt p;
  try {
    p.text = model.chat_template.render(in);
  } catch (const TemplateError& e) {
    throw bad_request(fmt::format("The model's chat template rejected this conversation: {}", e.what()),
                      "messages");
  }
  p.parser.tools = use_tools ? model.tool_format : ToolFormat::None;
  p.parser.thinking = model.thinking;
  {
    std::string t = p.text;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    p.parser.starts_thinking = model.thinking && ends_with(t, "<think>");
  }
  if (forced) {
    p.prefill = forced_prefix(model.tool_format, req.tool_choice, req.forced_tool);
    p.text += p.prefill;
  }
  p.tokens = model.tokenize_prompt(p.text);
  return p;
}

Submission submit_chat(const ApiContext& ctx, const ChatRequest& cr, GenerationRequest gr, ChoiceConfig cfg,
                       std::optional<int64_t> max_tokens, bool clamp_max_tokens) {
  ChatPrompt prompt = build_chat_prompt(*ctx.model, cr);
  cfg.parser = prompt.parser;
  cfg.prefill = prompt.prefill;
  gr.prompt = std::move(prompt.tokens);
  gr.max_tokens = budget_tokens(ctx, gr.prompt.size(), max_tokens, clamp_max_tokens);
  gr.stop_tokens = ctx.model->stop_tokens;
  std::vector<GenerationRequest> reqs;
  reqs.push_back(std::move(gr));
  std::vector<ChoiceConfig> cfgs;
  cfgs.push_back(std::move(cfg));
  return submit_choices(ctx, std::move(reqs), std::move(cfgs));
}

}  // namespace llmesh::api
