// Reading one tool call out of the JSON a model wrote, whatever the format's spelling:
// {"name", "arguments"} (Hermes, Mistral), {"name", "parameters"} (Llama 3.1), the OpenAI-like
// {"function": {...}} wrapper, and arguments given as a string that holds JSON.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace llmesh::api {

struct CallObject {
  std::string name;
  std::string arguments;  // compact JSON object text
};

// Empty when `value` is not a tool call (no name, or arguments that are not an object).
std::optional<CallObject> read_call_object(const nlohmann::ordered_json& value);

// Parses JSON without exceptions; nullopt when it is not valid or nests too deep.
std::optional<nlohmann::ordered_json> parse_json(std::string_view text);

// Compact JSON text; invalid UTF-8 in strings is replaced rather than throwing.
std::string compact_json(const nlohmann::ordered_json& value);

}  // namespace llmesh::api
