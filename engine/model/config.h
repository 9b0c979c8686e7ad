// Model hyperparameters read once from GGUF metadata and validated; the hot path trusts them.
// An architecture is a small description of how it differs from llama (ArchSpec), not a copy
// of the forward pass.
#pragma once
#include <cstdint>
#include <string>

#include "gguf/gguf.h"

namespace llmesh {

enum class RopeStyle {
  Normal,  // rotate adjacent pairs (x[2i], x[2i+1]): llama
  NeoX,    // rotate halves (x[i], x[i + d/2]): qwen2, qwen3
};

struct ArchSpec {
  const char* name;
  RopeStyle rope;
  bool qk_norm;             // per-head RMSNorm of q and k before RoPE (qwen3)
  bool moe_norm_topk;       // renormalise the top-k router weights by default
  bool moe_softmax_topk;    // softmax over the selected logits only (same result as renorm)
};
// nullptr when the architecture is not supported.
const ArchSpec* find_arch(const std::string& name);
std::string supported_archs();  // "llama, qwen2, qwen3, qwen3moe, ..."

struct ModelConfig {
  const ArchSpec* arch = nullptr;
  std::string arch_name;
  std::string name;  // general.name
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // key/value head size
  int n_ff = 0;
  int n_vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  // RoPE
  int rope_dims = 0;           // rotated dimensions of each head (<= head_dim)
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear scaling: position * scale
  RopeStyle rope_style = RopeStyle::Normal;
  // Mixture of experts (n_expert == 0: dense)
  int n_expert = 0;
  int n_expert_used = 0;
  int n_ff_expert = 0;       // per-expert feed-forward length
  int n_ff_shared = 0;       // shared-expert feed-forward length (0: none)
  bool expert_weights_norm = true;

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
  bool is_moe() const { return n_expert > 0; }

  // Throws std::runtime_error naming the missing or inconsistent key.
  static ModelConfig from_gguf(const GgufFile& f);
};

}  // namespace llmesh
