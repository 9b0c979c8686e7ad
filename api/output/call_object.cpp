#include "output/call_object.h"

#include "output/json_extent.h"

namespace llmesh::api {

using nlohmann::ordered_json;

std::optional<ordered_json> parse_json(std::string_view text) {
  if (!json_depth_within(text)) return std::nullopt;
  ordered_json v = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) return std::nullopt;
  return v;
}

std::string compact_json(const ordered_json& value) {
  return value.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

std::optional<CallObject> read_call_object(const ordered_json& value) {
  if (!value.is_object()) return std::nullopt;
  const ordered_json* call = &value;
  // {"type": "function", "function": {"name": ..., "arguments": ...}}
  if (!value.contains("name") && value.contains("function") && value["function"].is_object())
    call = &value["function"];

  auto name = call->find("name");
  if (name == call->end() || !name->is_string() || name->get_ref<const std::string&>().empty())
    return std::nullopt;

  auto args = call->find("arguments");
  if (args == call->end()) args = call->find("parameters");

  CallObject out;
  out.name = name->get<std::string>();
  if (args == call->end() || args->is_null()) {
    out.arguments = "{}";
  } else if (args->is_object()) {
    out.arguments = compact_json(*args);
  } else if (args->is_string()) {
    // Some models (and some OpenAI-trained habits) write the arguments as a JSON string.
    const std::string& s = args->get_ref<const std::string&>();
    if (s.find_first_not_of(" \t\r\n") == std::string::npos) {
      out.arguments = "{}";
    } else {
      auto inner = parse_json(s);
      if (!inner || !inner->is_object()) return std::nullopt;
      out.arguments = compact_json(*inner);
    }
  } else {
    return std::nullopt;
  }
  return out;
}

}  // namespace llmesh::api
