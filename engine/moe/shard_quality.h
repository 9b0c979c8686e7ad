// The quality gate of an expert grouping (docs/moe.md, "Quality gate"): each shard, i.e. the
// model with its router restricted to the shard's experts and renormalised, is compared with the
// full model on calibration text by the next-token distributions it predicts.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/thread_pool.h"
#include "model/model.h"
#include "moe/calibration.h"

namespace llmesh::moe {

struct QualityGate {
  double max_kl = 0.05;             // mean KL(full || shard) per token, nats
  double min_top1 = 0.90;           // fraction of positions whose most likely token agrees
  double max_ppl_increase = 0.05;   // shard perplexity / full perplexity - 1
  nlohmann::json to_json() const;
};

struct ShardQuality {
  double kl = 0;          // mean KL(full || shard), nats
  double kl_max = 0;      // the largest at one position
  double top1 = 1;        // top-1 agreement
  double ppl = 0;         // the shard's perplexity on the calibration text
  double ppl_full = 0;    // the full model's
  int64_t positions = 0;
  double ppl_increase() const { return ppl_full > 0 ? ppl / ppl_full - 1 : 0; }
  bool passes(const QualityGate& g) const;
  // "KL 0.012 > 0.010" style reasons it fails (empty when it passes).
  std::string failures(const QualityGate& g) const;
  nlohmann::json to_json(const QualityGate& g) const;
};

// Evaluates each shard (per layer, the experts it holds; empty layers are invalid) against the
// full model on `eval`. `model` must hold every layer and expert.
std::vector<ShardQuality> evaluate_shards(const Model& model, ThreadPool& pool, const CalibrationSet& eval,
                                          const std::vector<std::vector<std::vector<int>>>& shards,
                                          const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace llmesh::moe
