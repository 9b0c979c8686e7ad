// Tools described in the system prompt for models whose chat template has no tools support:
// the model is asked to answer in the Hermes format, which OutputParser reads back.
#include "output/call_object.h"
#include "output/output_parser.h"

namespace llmesh::api {

using nlohmann::ordered_json;

namespace {
// One tool as {"type": "function", "function": {name, description, parameters}}, whether it
// came in OpenAI's shape or Anthropic's ({name, description, input_schema}).
ordered_json function_signature(const ordered_json& tool) {
  if (tool.contains("function")) return tool;
  ordered_json fn = ordered_json::object();
  if (tool.contains("name")) fn["name"] = tool["name"];
  if (tool.contains("description")) fn["description"] = tool["description"];
  if (tool.contains("input_schema")) fn["parameters"] = tool["input_schema"];
  else if (tool.contains("parameters")) fn["parameters"] = tool["parameters"];
  return ordered_json{{"type", "function"}, {"function", std::move(fn)}};
}
}  // namespace

std::string tool_system_prompt(const ordered_json& tools) {
  if (!tools.is_array() || tools.empty()) return {};
  std::string out =
      "# Tools\n\n"
      "You can call functions to help you answer. Their signatures are listed below, one JSON "
      "object per line, between <tools> and </tools>:\n<tools>\n";
  for (const auto& tool : tools) {
    if (!tool.is_object()) continue;
    out += compact_json(function_signature(tool));
    out += '\n';
  }
  out +=
      "</tools>\n\n"
      "To call a function, write its name and its arguments as one JSON object between "
      "<tool_call> and </tool_call>, one such block per call:\n"
      "<tool_call>\n"
      "{\"name\": \"<function name>\", \"arguments\": {<arguments as JSON>}}\n"
      "</tool_call>\n"
      "Then stop and wait: the results come back in the next message.";
  return out;
}

}  // namespace llmesh::api
