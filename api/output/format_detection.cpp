// Which output format a chat template asks the model for, read from the template's source:
// the markers a template prints into its prompt are the ones the model was trained to write.
#include "output/output_parser.h"

namespace llmesh::api {

namespace {
bool mentions(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}
}  // namespace

const char* tool_format_name(ToolFormat f) {
  switch (f) {
    case ToolFormat::None: return "none";
    case ToolFormat::Hermes: return "hermes";
    case ToolFormat::Llama3: return "llama3";
    case ToolFormat::Mistral: return "mistral";
  }
  return "none";
}

ToolFormat detect_tool_format(std::string_view t) {
  if (mentions(t, "<tool_call>")) return ToolFormat::Hermes;
  if (mentions(t, "[TOOL_CALLS]")) return ToolFormat::Mistral;
  // Llama 3.1-3.3: the python tag, the ipython role for tool results, or the JSON
  // instructions ("respond with a JSON for a function call ... {"name": function name,
  // "parameters": dictionary of argument name and its value}").
  if (mentions(t, "<|python_tag|>") || mentions(t, "ipython") ||
      mentions(t, "JSON for a function call") || mentions(t, "dictionary of argument name"))
    return ToolFormat::Llama3;
  return ToolFormat::None;
}

bool detect_thinking(std::string_view t) { return mentions(t, "<think>"); }

}  // namespace llmesh::api
