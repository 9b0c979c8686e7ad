// Chat templates: the model's own `tokenizer.chat_template` (Jinja) rendered by llmesh's
// interpreter of the Jinja subset real templates use, the way Hugging Face transformers renders
// it (trim_blocks, lstrip_blocks, `tojson` without HTML escaping, raise_exception,
// strftime_now). ChatML when a model has none.
#pragma once
#include <stdexcept>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace llmesh::api {

using ojson = nlohmann::ordered_json;

// A template that does not parse, or fails while rendering (raise_exception, type errors,
// undefined calls). what() names the template, the line and column, and the problem.
class TemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ChatInputs {
  // OpenAI-style messages: {role, content (string, null or [{type:"text",text}...]),
  // tool_calls: [{id, type:"function", function:{name, arguments (object)}}], tool_call_id,
  // name, reasoning_content}. Key order is kept (templates print dicts with tojson).
  ojson messages = ojson::array();
  ojson tools;  // null, or OpenAI tools: [{type:"function", function:{name, description, parameters}}]
  bool add_generation_prompt = true;
  ojson extra = ojson::object();  // more top-level variables, e.g. {"enable_thinking": false}
  std::string bos_token, eos_token;
};

class ChatTemplate {
 public:
  // Parses a template; throws TemplateError. `name` appears in error messages.
  static ChatTemplate parse(const std::string& source, const std::string& name = "chat template");
  static ChatTemplate chatml();

  // Throws TemplateError.
  std::string render(const ChatInputs& in) const;

  const std::string& source() const;
  const std::string& name() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace llmesh::api
