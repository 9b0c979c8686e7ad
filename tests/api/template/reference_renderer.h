// Runs tests/api/template/render_reference.py (Python jinja2 set up as Hugging Face does)
// on a batch of cases in one process, so the comparison tests stay fast.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "subprocess.h"

namespace llmesh::test {

struct ReferenceCase {
  std::string template_source;
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
};

struct ReferenceResult {
  bool ok = false;
  std::string output;  // the rendering, or the Python error
};

inline bool python_jinja2_available() {
  static const bool available = run_command("python3 -c 'import jinja2' 2>/dev/null").exit_code == 0;
  return available;
}

// Empty optional when Python or jinja2 is missing (the tests then skip).
inline std::optional<std::vector<ReferenceResult>> render_with_jinja2(const std::vector<ReferenceCase>& cases) {
  if (!python_jinja2_available()) return std::nullopt;
  nlohmann::ordered_json input = nlohmann::ordered_json::array();
  for (auto& c : cases) input.push_back({{"template", c.template_source}, {"vars", c.vars}});
  char path[] = "/tmp/llmesh_template_cases_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return std::nullopt;
  close(fd);
  std::ofstream(path) << input.dump();
  auto r = run_command("python3 " + std::string(LLMESH_SOURCE_DIR) + "/tests/api/template/render_reference.py " + path);
  std::remove(path);
  if (r.exit_code != 0) return std::nullopt;
  auto parsed = nlohmann::json::parse(r.output);
  std::vector<ReferenceResult> out;
  for (auto& e : parsed) {
    ReferenceResult res;
    res.ok = e["ok"].get<bool>();
    res.output = res.ok ? e["output"].get<std::string>() : e["error"].get<std::string>();
    out.push_back(std::move(res));
  }
  return out;
}

}  // namespace llmesh::test
