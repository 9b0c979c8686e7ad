#include "server/served_model.h"

#include <algorithm>

namespace llmesh::api {

bool ServedModel::answers_to(const std::string& name) const {
  return name == id || std::find(aliases.begin(), aliases.end(), name) != aliases.end();
}

void ServedModel::describe_from_template() {
  const std::string& src = chat_template.source();
  // A template "has tools" when it reads the `tools` variable.
  template_has_tools = src.find("tools") != std::string::npos;
  tool_format = template_has_tools ? detect_tool_format(src) : ToolFormat::Hermes;
  // Without a recognisable format the fallback system prompt (Hermes style) teaches one.
  if (tool_format == ToolFormat::None) {
    tool_format = ToolFormat::Hermes;
    template_has_tools = false;
  }
  thinking = detect_thinking(src);
  stop_tokens.clear();
  for (int32_t i = 0; i < tokenizer->n_vocab(); i++)
    if (tokenizer->is_eog(i)) stop_tokens.push_back(i);
}

std::vector<int32_t> ServedModel::tokenize_prompt(const std::string& text) const {
  std::vector<int32_t> ids = tokenizer->encode(text, /*add_special=*/false, /*parse_special=*/true);
  if (tokenizer->add_bos() && tokenizer->bos() >= 0 && (ids.empty() || ids[0] != tokenizer->bos()))
    ids.insert(ids.begin(), tokenizer->bos());
  return ids;
}

}  // namespace llmesh::api
