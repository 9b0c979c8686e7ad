// Shared helpers for the chat-template tests: the variables Hugging Face passes to a
// template, as both llmesh's ChatInputs and the Python reference's keyword arguments.
#pragma once
#include <string>

#include "reference_renderer.h"
#include "template/chat_template.h"

namespace llmesh::test {

inline nlohmann::ordered_json reference_vars(const api::ChatInputs& in) {
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  vars["messages"] = in.messages;
  vars["tools"] = in.tools;
  vars["add_generation_prompt"] = in.add_generation_prompt;
  vars["bos_token"] = in.bos_token;
  vars["eos_token"] = in.eos_token;
  for (auto it = in.extra.begin(); it != in.extra.end(); ++it) vars[it.key()] = it.value();
  return vars;
}

// Renders with llmesh; "!ERROR: ..." when it throws, so results compare as strings.
inline std::string render_or_error(const api::ChatTemplate& t, const api::ChatInputs& in, bool& threw) {
  threw = false;
  try {
    return t.render(in);
  } catch (const api::TemplateError& e) {
    threw = true;
    return std::string("!ERROR: ") + e.what();
  }
}

}  // namespace llmesh::test
