// The JSON files of engine/moe (ranking files, plan files): read and decoded with the file's
// path in every error, written whole.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace llmesh::moe {

// Parses `path` (`what` names it in errors: "the plan file").
nlohmann::json parse_json_file(const std::string& path, const char* what);
void write_json_file(const std::string& path, const nlohmann::json& j);

// decode(json) -> T; its errors (and JSON type errors it did not catch) come back naming `path`.
template <typename Decode>
auto read_json_file(const std::string& path, const char* what, Decode decode) {
  nlohmann::json j = parse_json_file(path, what);
  try {
    return decode(j);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("{}: {}", path, e.what()));
  } catch (const nlohmann::json::exception& e) {  // a field of an unexpected type the checks missed
    throw std::runtime_error(fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace llmesh::moe
