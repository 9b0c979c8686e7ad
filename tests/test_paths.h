// Where tests find ../shared and the llmesh binary.
#pragma once
#include <cstdlib>
#include <string>

namespace llmesh::test {
inline std::string shared_dir() {
  if (const char* e = std::getenv("LLMESH_SHARED")) return e;
  return LLMESH_SHARED_DIR;
}
inline std::string model_path(const std::string& name) { return shared_dir() + "/models/" + name; }
inline std::string llmesh_binary() { return std::string(LLMESH_BINARY_DIR) + "/llmesh"; }
}  // namespace llmesh::test
