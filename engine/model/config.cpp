#include "model/config.h"

#include <stdexcept>

#include <fmt/format.h>

namespace llmesh {
namespace {

constexpr ArchSpec kArchs[] = {
    {"llama", RopeStyle::Normal, false, true, false},
    {"mistral", RopeStyle::Normal, false, true, false},
    {"qwen2", RopeStyle::NeoX, false, true, false},
    {"qwen3", RopeStyle::NeoX, true, true, false},
    {"qwen2moe", RopeStyle::NeoX, false, false, false},
    {"qwen3moe", RopeStyle::NeoX, true, true, false},
};

}  // namespace

const ArchSpec* find_arch(const std::string& name) {
  for (const auto& a : kArchs)
    if (name == a.name) return &a;
  return nullptr;
}

std::string supported_archs() {
  std::string s;
  for (const auto& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
  ModelConfig c;
  c.arch_name = f.get_string("general.architecture");
  c.arch = find_arch(c.arch_name);
  if (!c.arch)
    throw std::runtime_error(fmt::format("{}: architecture '{}' is not supported (supported: {})",
                                         f.path(), c.arch_name, supported_archs()));
  c.name = f.opt_string("general.name").value_or("");
  const std::string p = c.arch_name + ".";
  auto need = [&](const char* k) -> int {
    uint64_t v = f.get_uint(p + k);
    if (v == 0 || v > (1u << 24))
      throw std::runtime_error(fmt::format("{}: {}{} = {} is out of range", f.path(), p, k, v));
    return static_cast<int>(v);
  };
  auto opt = [&](const char* k, int def) -> int {
    auto v = f.opt_uint(p + k);
    if (!v) return def;
    if (*v > (1u << 24))
      throw std::runtime_error(fmt::format("{}: {}{} = {} is out of range", f.path(), p, k, *v));
    return static_cast<int>(*v);
  };
  c.n_layer = need("block_count");
  c.n_embd = need("embedding_length");
  c.n_head = need("attention.head_count");
  c.n_head_kv = opt("attention.head_count_kv", c.n_head);
  c.head_dim = opt("attention.key_length", c.n_embd / c.n_head);
  int vdim = opt("attention.value_length", c.head_dim);
  if (vdim != c.head_dim)
    throw std::runtime_error(fmt::format("{}: key_length {} != value_length {} is not supported",
                                         f.path(), c.head_dim, vdim));
  c.n_ff = opt("feed_forward_length", 0);
  c.n_ctx_train = opt("context_length", 2048);
  c.rms_eps = static_cast<float>(f.opt_float(p + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_dims = opt("rope.dimension_count", c.head_dim);
  c.rope_base = static_cast<float>(f.opt_float(p + "rope.freq_base").value_or(10000.0));
  c.rope_style = c.arch->rope;
  if (auto type = f.opt_string(p + "rope.scaling.type"); type && *type != "none") {
    if (*type != "linear")
      throw std::runtime_error(fmt::format("{}: rope scaling '{}' is not supported (linear only)",
                                           f.path(), *type));
    double factor = f.opt_float(p + "rope.scaling.factor").value_or(1.0);
    if (factor > 0) c.rope_freq_scale = static_cast<float>(1.0 / factor);
  }
  if (auto s = f.opt_float(p + "rope.scale_linear"); s && *s > 0)
    c.rope_freq_scale = static_cast<float>(1.0 / *s);
  c.n_expert = opt("expert_count", 0);
  c.n_expert_used = opt("expert_used_count", 0);
  c.n_ff_expert = opt("expert_feed_forward_length", c.n_ff);
  c.n_ff_shared = opt("expert_shared_feed_forward_length", 0);
  c.expert_weights_norm = f.opt_bool(p + "expert_weights_norm").value_or(c.arch->moe_norm_topk);

  // The vocabulary size comes from the embedding table (metadata may omit it).
  // Without the table (the metadata file of a layer package, docs/layer-packages.md) it comes
  // from <arch>.vocab_size, which the package writer always sets.
  const GgufTensor* emb = f.find_tensor("token_embd.weight");
  if (emb) c.n_vocab = static_cast<int>(emb->ne[1]);
  else if (f.has(p + "vocab_size")) c.n_vocab = need("vocab_size");
  else throw std::runtime_error(f.path() + ": missing tensor 'token_embd.weight'");

  auto check = [&](bool ok, const std::string& what) {
    if (!ok) throw std::runtime_error(fmt::format("{}: inconsistent hyperparameters: {}", f.path(), what));
  };
  check(c.n_head % c.n_head_kv == 0,
        fmt::format("head_count {} is not a multiple of head_count_kv {}", c.n_head, c.n_head_kv));
  check(c.rope_dims > 0 && c.rope_dims <= c.head_dim && c.rope_dims % 2 == 0,
        fmt::format("rope.dimension_count {} with head size {}", c.rope_dims, c.head_dim));
  if (emb)
    check(emb->ne[0] == c.n_embd, fmt::format("token_embd.weight rows have {} elements, embedding_length is {}",
                                              emb->ne[0], c.n_embd));
  if (c.n_expert > 0) {
    check(c.n_expert_used > 0 && c.n_expert_used <= c.n_expert,
          fmt::format("expert_used_count {} with expert_count {}", c.n_expert_used, c.n_expert));
    check(c.n_ff_expert > 0, "expert feed-forward length is 0");
  } else {
    check(c.n_ff > 0, "feed_forward_length is missing or 0");
  }
  return c;
}

}  // namespace llmesh
