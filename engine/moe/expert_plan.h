// Grouping the experts of a mixture-of-experts model onto the nodes of a mesh (llmesh moe plan,
// docs/moe.md): per layer, a hot core (the hottest experts by the profile) replicated on every
// node, plus the remaining experts dealt out with `overlap` copies each (hottest first, each copy
// to the least-loaded node), so that losing one node keeps every expert on some node when
// overlap >= 2. Before a grouping is served it passes the quality gate (moe/shard_quality.h):
// when a shard fails, the core grows and the grouping is tried again.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/calibration.h"
#include "moe/expert_profile.h"
#include "moe/shard_quality.h"

namespace llmesh::moe {

using ExpertSet = std::vector<std::vector<int>>;  // [layer] -> sorted experts

struct Grouping {
  int core = 0;                 // experts per layer on every node
  std::vector<ExpertSet> shards;
};

// Deals the experts as described above. Throws std::invalid_argument on nodes < 1, overlap
// outside 1..nodes, or core outside 0..n_expert.
Grouping deal_experts(const ExpertProfile& profile, int nodes, int overlap, int core);

// The fraction of shard j's experts (over all layers) that shard i holds: 1 for a replica or a
// superset. Used to order failover (docs/moe.md, "Sessions and failover").
double coverage(const ExpertSet& i, const ExpertSet& j);
// True when the shards other than `lost` still hold every expert of every layer.
bool covers_all_without(const std::vector<ExpertSet>& shards, size_t lost, int n_expert);

struct TriedGrouping {
  Grouping grouping;
  std::vector<ShardQuality> quality;  // per shard
  bool passes = false;
};

struct PlanOptions {
  int nodes = 1;
  int overlap = 0;     // 0: min(2, nodes)
  int core = -1;       // -1: search from 0 upward until every shard passes; else only this core
  QualityGate gate;
};

struct MoePlan {
  ModelShape model;
  int nodes = 0;
  int overlap = 0;
  QualityGate gate;
  int64_t calibration_tokens = 0;
  int64_t calibration_sequences = 0;
  std::vector<TriedGrouping> tried;  // in the order tried; the last one is chosen
  std::vector<uint64_t> shard_bytes;  // weights each shard maps (trunk + its experts)
  uint64_t model_bytes = 0;           // the whole model's weights

  const TriedGrouping& chosen() const { return tried.back(); }
  const std::vector<ExpertSet>& shards() const { return chosen().grouping.shards; }
  bool passes() const { return !tried.empty() && chosen().passes; }
  // A digest of the model shape and the chosen shards: nodes serving shards of one plan show the
  // same digest in gossip.
  std::string digest() const;

  nlohmann::json to_json() const;  // the plan file
  static MoePlan from_json(const nlohmann::json& j);  // validates everything (untrusted file)
  static MoePlan read(const std::string& path);
  void write(const std::string& path) const;
};

// Groups and gates: tries cores from 0 (or opt.core) upward until every shard passes the gate
// on `eval`. A core of every expert (each node holds the whole model) always passes.
// progress(message) reports each grouping tried.
MoePlan plan_experts(const Model& model, ThreadPool& pool, const ExpertProfile& profile, const CalibrationSet& eval,
                     const PlanOptions& opt, const std::function<void(const std::string&)>& progress = {});

}  // namespace llmesh::moe
