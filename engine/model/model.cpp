#include "model/model.h"

#include <algorithm>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>

namespace llmesh {
namespace {

class Loader {
 public:
  // Tensors are looked up in every part; errors name parts[0] (for one file, the model file).
  explicit Loader(const std::vector<std::shared_ptr<const GgufFile>>& parts) : f_(*parts[0]) {
    if (parts.size() < 2) return;
    for (const auto& p : parts)
      for (const GgufTensor& t : p->tensors()) {
        auto [it, fresh] = index_.emplace(t.name, &t);
        if (!fresh)
          throw std::runtime_error(fmt::format("tensor '{}' is in more than one file ({} and {})", t.name,
                                               owner(*it->second, parts), p->path()));
      }
  }

  const GgufTensor* find(const std::string& name) const {
    if (index_.empty()) return f_.find_tensor(name);
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
  }

  // A weight matrix with `cols` elements per row and `rows` rows (times `experts` when > 0).
  kernels::MatView matrix(const std::string& name, int64_t cols, int64_t rows,
                          int64_t experts = 0) const {
    const GgufTensor* t = find(name);
    if (!t) fail(fmt::format("missing tensor '{}'", name));
    return matrix(*t, cols, rows, experts);
  }
  kernels::MatView matrix(const GgufTensor& t, int64_t cols, int64_t rows, int64_t experts = 0) const {
    int64_t want_rows = experts > 0 ? rows * experts : rows;
    int64_t got_rows = t.ne[1] * t.ne[2] * t.ne[3];
    bool shape_ok = t.ne[0] == cols && got_rows == want_rows &&
                    (experts > 0 ? (t.ne[1] == rows && t.ne[2] == experts) : t.ne[2] == 1);
    if (!shape_ok)
      fail(fmt::format("tensor '{}' has shape {}, expected [{}, {}{}]", t.name, t.shape_string(),
                       cols, rows, experts > 0 ? fmt::format(", {}", experts) : ""));
    if (!kernels::is_computable(t.type))
      fail(fmt::format("tensor '{}' has type {}, which llmesh cannot compute with", t.name,
                       dtype_name(t.type)));
    kernels::MatView m;
    m.type = t.type;
    m.cols = cols;
    m.rows = want_rows;
    m.data = t.data;
    m.row_bytes = static_cast<size_t>(t.nbytes / static_cast<uint64_t>(want_rows));
    return m;
  }

  // A 1-D tensor of n elements converted to F32. Empty when optional and missing.
  std::vector<float> vector(const std::string& name, int64_t n, bool optional = false) const {
    const GgufTensor* t = find(name);
    if (!t) {
      if (optional) return {};
      fail(fmt::format("missing tensor '{}'", name));
    }
    if (t->n_elements() != n)
      fail(fmt::format("tensor '{}' has {} elements, expected {}", name, t->n_elements(), n));
    if (!kernels::is_computable(t->type))
      fail(fmt::format("tensor '{}' has unsupported type {}", name, dtype_name(t->type)));
    std::vector<float> v(n);
    kernels::dequantize_row(t->type, t->data, v.data(), n);
    return v;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(f_.path() + ": " + what);
  }

 private:
  static std::string owner(const GgufTensor& t, const std::vector<std::shared_ptr<const GgufFile>>& parts) {
    for (const auto& p : parts)
      if (p->find_tensor(t.name) == &t) return p->path();
    return "?";
  }
  const GgufFile& f_;
  std::unordered_map<std::string_view, const GgufTensor*> index_;  // several parts only
};

// Rows [e*R, (e+1)*R) of a merged expert tensor: expert e, as its own view.
kernels::MatView expert_rows(const kernels::MatView& m, int e, int64_t rows) {
  kernels::MatView s = m;
  s.data = m.data + static_cast<size_t>(e) * static_cast<size_t>(rows) * m.row_bytes;
  s.rows = rows;
  return s;
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, const ModelOptions& opt) {
  std::shared_ptr<const GgufFile> f = GgufFile::open(path);
  return load(std::move(f), opt);
}

std::unique_ptr<Model> Model::load(std::shared_ptr<const GgufFile> file, const ModelOptions& opt) {
  std::vector<std::shared_ptr<const GgufFile>> parts;
  parts.push_back(std::move(file));
  return load(std::move(parts), opt);
}

std::unique_ptr<Model> Model::load(std::vector<std::shared_ptr<const GgufFile>> parts, const ModelOptions& opt) {
  if (parts.empty() || !parts[0]) throw std::invalid_argument("Model::load: no GGUF file");
  for (const auto& p : parts)
    if (!p) throw std::invalid_argument("Model::load: a GGUF part is null");
  std::unique_ptr<Model> m(new Model());
  m->file_ = parts[0];
  m->parts_ = std::move(parts);
  const GgufFile& f = *m->file_;
  m->cfg_ = ModelConfig::from_gguf(f);
  const ModelConfig& c = m->cfg_;
  int first = opt.layers.first, last = opt.layers.last < 0 ? c.n_layer : opt.layers.last;
  // [0, 0) is the embedding table alone: a pipeline entry whose layers all run on stages.
  if (first < 0 || (first >= last && !(first == 0 && last == 0)) || last > c.n_layer)
    throw std::runtime_error(fmt::format("{}: layer range [{}, {}) is invalid for a model with {} layers",
                                         f.path(), first, last, c.n_layer));
  m->first_ = first;
  m->last_ = last;
  if (!opt.experts.empty()) {
    if (!c.is_moe())
      throw std::runtime_error(fmt::format("{}: an expert shard was asked for, but the model has no experts", f.path()));
    if (static_cast<int>(opt.experts.size()) != c.n_layer)
      throw std::runtime_error(fmt::format("{}: an expert shard lists experts for {} layers; the model has {}",
                                           f.path(), opt.experts.size(), c.n_layer));
  }
  Loader L(m->parts_);

  // The embedding table: for token input, or as the head when it is tied (no output.weight).
  if (first == 0 || (last == c.n_layer && !L.find("output.weight"))) {
    m->token_embd_ = L.matrix("token_embd.weight", c.n_embd, c.n_vocab);
  }
  if (last == c.n_layer) {
    m->output_norm_ = L.vector("output_norm.weight", c.n_embd);
    m->output_ = L.find("output.weight") ? L.matrix("output.weight", c.n_embd, c.n_vocab)
                                         : m->token_embd_;  // tied embeddings
  }
  m->rope_freqs_ = L.vector("rope_freqs.weight", c.rope_dims / 2, true);
  for (int il = first; il < last; ++il) {
    const std::string p = fmt::format("blk.{}.", il);
    LayerWeights w;
    w.attn_norm = L.vector(p + "attn_norm.weight", c.n_embd);
    w.wq = L.matrix(p + "attn_q.weight", c.n_embd, c.q_dim());
    w.wk = L.matrix(p + "attn_k.weight", c.n_embd, c.kv_dim());
    w.wv = L.matrix(p + "attn_v.weight", c.n_embd, c.kv_dim());
    w.wo = L.matrix(p + "attn_output.weight", c.q_dim(), c.n_embd);
    w.bq = L.vector(p + "attn_q.bias", c.q_dim(), true);
    w.bk = L.vector(p + "attn_k.bias", c.kv_dim(), true);
    w.bv = L.vector(p + "attn_v.bias", c.kv_dim(), true);
    if (c.arch->qk_norm) {
      w.q_norm = L.vector(p + "attn_q_norm.weight", c.head_dim);
      w.k_norm = L.vector(p + "attn_k_norm.weight", c.head_dim);
    }
    w.ffn_norm = L.vector(p + "ffn_norm.weight", c.n_embd);
    if (c.is_moe()) {
      w.router = L.matrix(p + "ffn_gate_inp.weight", c.n_embd, c.n_expert);
      w.held.assign(c.n_expert, opt.experts.empty() ? 1 : 0);
      if (!opt.experts.empty()) {
        for (int e : opt.experts[il]) {
          if (e < 0 || e >= c.n_expert)
            throw std::runtime_error(fmt::format("{}: expert {} of layer {} does not exist (the model has {} experts)",
                                                 f.path(), e, il, c.n_expert));
          if (w.held[e])
            throw std::runtime_error(fmt::format("{}: expert {} of layer {} is listed twice", f.path(), e, il));
          w.held[e] = 1;
        }
        if (opt.experts[il].empty())
          throw std::runtime_error(fmt::format("{}: a shard must hold at least one expert of layer {}", f.path(), il));
      }
      w.experts.resize(c.n_expert);
      // Merged expert tensors [cols, rows, n_expert] (expert e = rows [e*R, (e+1)*R), contiguous
      // bytes), or one 2-D tensor per expert: blk.N.ffn_gate.E.weight (older Mixtral files, and
      // the expert artifacts of a layer package).
      const bool merged = L.find(p + "ffn_gate_exps.weight") != nullptr;
      kernels::MatView g, u, d;
      if (merged) {
        g = L.matrix(p + "ffn_gate_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert);
        u = L.matrix(p + "ffn_up_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert);
        d = L.matrix(p + "ffn_down_exps.weight", c.n_ff_expert, c.n_embd, c.n_expert);
      }
      for (int e = 0; e < c.n_expert; ++e) {
        if (!w.held[e]) continue;
        ++w.n_held;
        auto& x = w.experts[e];
        if (merged) {
          x.gate = expert_rows(g, e, c.n_ff_expert);
          x.up = expert_rows(u, e, c.n_ff_expert);
          x.down = expert_rows(d, e, c.n_embd);
        } else {
          x.gate = L.matrix(fmt::format("{}ffn_gate.{}.weight", p, e), c.n_embd, c.n_ff_expert);
          x.up = L.matrix(fmt::format("{}ffn_up.{}.weight", p, e), c.n_embd, c.n_ff_expert);
          x.down = L.matrix(fmt::format("{}ffn_down.{}.weight", p, e), c.n_ff_expert, c.n_embd);
        }
      }
      if (L.find(p + "ffn_gate_shexp.weight")) {
        int nsh = c.n_ff_shared > 0 ? c.n_ff_shared
                                    : static_cast<int>(L.find(p + "ffn_gate_shexp.weight")->ne[1]);
        w.gate_shexp = L.matrix(p + "ffn_gate_shexp.weight", c.n_embd, nsh);
        w.up_shexp = L.matrix(p + "ffn_up_shexp.weight", c.n_embd, nsh);
        w.down_shexp = L.matrix(p + "ffn_down_shexp.weight", nsh, c.n_embd);
        if (L.find(p + "ffn_gate_inp_shexp.weight"))
          w.shexp_gate = L.matrix(p + "ffn_gate_inp_shexp.weight", c.n_embd, 1);
      }
    } else {
      w.w_gate = L.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
      w.w_up = L.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
      w.w_down = L.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    }
    m->layers_.push_back(std::move(w));
  }
  return m;
}

double Model::weight_bytes_per_token() const {
  auto bytes = [](const kernels::MatView& v) { return static_cast<double>(v.row_bytes) * v.rows; };
  double total = 0;
  for (const auto& w : layers_) {
    total += bytes(w.wq) + bytes(w.wk) + bytes(w.wv) + bytes(w.wo);
    total += bytes(w.w_gate) + bytes(w.w_up) + bytes(w.w_down) + bytes(w.router);
    // A token runs n_expert_used of the experts held.
    const double used = w.n_held > 0 ? std::min(1.0, static_cast<double>(cfg_.n_expert_used) / w.n_held) : 0;
    for (const auto& x : w.experts)
      if (x.gate.data) total += used * (bytes(x.gate) + bytes(x.up) + bytes(x.down));
    total += bytes(w.gate_shexp) + bytes(w.up_shexp) + bytes(w.down_shexp) + bytes(w.shexp_gate);
  }
  if (has_head()) total += bytes(output_);
  return total;
}

bool Model::holds_all_experts() const {
  for (const auto& w : layers_)
    if (w.n_held != static_cast<int>(w.held.size())) return false;
  return true;
}

}  // namespace llmesh
