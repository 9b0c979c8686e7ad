// How a mixture-of-experts model uses its experts (llmesh moe profile, docs/moe.md): per layer,
// each expert's gate mass (the router's probability summed over the profiled tokens) and
// selection count (tokens routed to it), and from them a ranking, hottest first. Written to and
// read from a JSON ranking file.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/thread_pool.h"
#include "model/model.h"

namespace llmesh::moe {

struct ModelShape {
  std::string name;  // general.name or the file's stem
  int n_layer = 0;
  int n_expert = 0;
  int n_expert_used = 0;
  // A hash of every layer's router weights (the same bytes in a GGUF and in its layer package):
  // tells this model from another of the same shape. Empty when unknown (older files).
  std::string fingerprint;
  static ModelShape of(const Model& m, const std::string& fallback_name = "");
  bool operator==(const ModelShape&) const = default;
  // Throws std::runtime_error saying how `other` differs (a ranking or plan for another model):
  // the shape, or the fingerprint when both have one.
  void check_matches(const ModelShape& other, const std::string& what) const;
};

struct ExpertProfile {
  ModelShape model;
  int64_t tokens = 0;              // tokens profiled
  int64_t sequences = 0;
  std::vector<double> gate_mass;   // [layer * n_expert + expert]
  std::vector<uint64_t> selected;  // [layer * n_expert + expert]

  double mass(int layer, int expert) const { return gate_mass[static_cast<size_t>(layer) * model.n_expert + expert]; }
  uint64_t count(int layer, int expert) const { return selected[static_cast<size_t>(layer) * model.n_expert + expert]; }
  // The layer's experts, hottest first: by gate mass, then selection count, then index.
  std::vector<int> ranking(int layer) const;

  nlohmann::json to_json() const;  // the ranking file
  // Validates everything (a ranking file is untrusted input); throws std::runtime_error naming
  // the field that is wrong.
  static ExpertProfile from_json(const nlohmann::json& j);
  static ExpertProfile read(const std::string& path);
  void write(const std::string& path) const;
};

// Runs the model over `sequences` (each from position 0, chunks of `batch` tokens) and collects
// the routing statistics. `progress(done_tokens, total_tokens)` is called after each chunk.
ExpertProfile profile_experts(const Model& model, ThreadPool& pool, const std::vector<std::vector<int32_t>>& sequences,
                              int batch = 256,
                              const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace llmesh::moe
