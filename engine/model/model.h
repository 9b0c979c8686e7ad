// A model opened from GGUF for one contiguous layer range [first, last): the unit a pipeline
// stage runs. Weights stay in the memory-mapped file (never copied); only the small 1-D
// tensors (norms, biases) are converted to F32 at load.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "model/config.h"

namespace llmesh {

struct LayerRange {
  int first = 0;
  int last = -1;  // exclusive; -1: through the last layer
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  std::vector<float> bq, bk, bv;           // optional biases (qwen2)
  std::vector<float> q_norm, k_norm;       // optional per-head norms (qwen3)
  kernels::MatView wq, wk, wv, wo;
  // dense feed-forward
  kernels::MatView w_gate, w_up, w_down;
  // mixture of experts: the router and one feed-forward per expert (docs/moe.md). An expert
  // this node does not hold (a shard) has views with data == nullptr and held[e] == 0.
  kernels::MatView router;
  struct Expert {
    kernels::MatView gate, up, down;
  };
  std::vector<Expert> experts;
  std::vector<uint8_t> held;  // per expert: 1 when its weights are loaded
  int n_held = 0;
  // optional shared expert (qwen2moe)
  kernels::MatView gate_shexp, up_shexp, down_shexp, shexp_gate;
};

struct ModelOptions {
  LayerRange layers;
  // A mixture-of-experts shard (docs/moe.md): per absolute layer, the experts this node holds
  // (any order, no duplicates, at least one per layer). Empty: every expert. The weights of the
  // other experts are never read (nor looked up: a package or a sparse GGUF copy may lack them).
  std::vector<std::vector<int>> experts;
};

class Model {
 public:
  // Opens `path`, validates hyperparameters and every tensor the layer range needs (names,
  // shapes, types). Throws std::runtime_error naming what is wrong.
  static std::unique_ptr<Model> load(const std::string& path, const ModelOptions& opt = {});
  static std::unique_ptr<Model> load(std::shared_ptr<const GgufFile> file, const ModelOptions& opt);
  // The same from several files (a layer package, docs/layer-packages.md): hyperparameters and
  // metadata from parts[0], each tensor from the one part that has it (a tensor in two parts is
  // an error). file() is parts[0].
  static std::unique_ptr<Model> load(std::vector<std::shared_ptr<const GgufFile>> parts,
                                     const ModelOptions& opt);

  const ModelConfig& config() const { return cfg_; }
  const GgufFile& file() const { return *file_; }
  std::shared_ptr<const GgufFile> file_ptr() const { return file_; }
  int first_layer() const { return first_; }
  int last_layer() const { return last_; }
  int n_layers() const { return last_ - first_; }
  bool has_embedding() const { return first_ == 0; }   // input can be token ids
  bool has_head() const { return last_ == cfg_.n_layer; }  // output can be logits
  const LayerWeights& layer(int il) const { return layers_[il - first_]; }  // absolute index
  // True when every expert of every loaded layer is held (always for a dense model).
  bool holds_all_experts() const;

  const kernels::MatView& token_embd() const { return token_embd_; }
  const kernels::MatView& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  // Per-frequency RoPE divisors (`rope_freqs.weight`, Llama 3.1+); empty when absent.
  const std::vector<float>& rope_freq_factors() const { return rope_freqs_; }

  // Bytes of weights one decode step reads (embedding row excluded; for MoE, the used
  // fraction of expert matrices). Used for bandwidth figures.
  double weight_bytes_per_token() const;

 private:
  Model() = default;
  std::shared_ptr<const GgufFile> file_;
  std::vector<std::shared_ptr<const GgufFile>> parts_;  // every mapped file the weights point into
  ModelConfig cfg_;
  int first_ = 0, last_ = 0;
  std::vector<LayerWeights> layers_;
  kernels::MatView token_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<float> rope_freqs_;
};

}  // namespace llmesh
