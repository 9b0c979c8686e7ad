#include "moe/json_file.h"

#include <fstream>

namespace llmesh::moe {

nlohmann::json parse_json_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read {} {}", what, path));
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) throw std::runtime_error(fmt::format("{} is not valid JSON", path));
  return j;
}

void write_json_file(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", path));
  out << j.dump(1) << '\n';
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", path));
}

}  // namespace llmesh::moe
