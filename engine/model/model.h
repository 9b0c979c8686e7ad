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
  // mixture of experts: the router and per-expert matrices (expert e = rows [e*R, (e+1)*R))
  kernels::MatView router;
  kernels::MatView gate_exps, up_exps, down_exps;
  // optional shared expert (qwen2moe)
  kernels::MatView gate_shexp, up_shexp, down_shexp, shexp_gate;
};

struct ModelOptions {
  LayerRange layers;
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
