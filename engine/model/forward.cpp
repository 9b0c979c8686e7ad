#include "model/forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include <fmt/format.h>

#include "kernels/kernels.h"
#include "kernels/ops.h"

namespace llmesh {
namespace {

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

void add_bias(float* y, const std::vector<float>& b, int T, int n) {
  if (b.empty()) return;
  for (int t = 0; t < T; ++t) ops::axpy_f32(y + static_cast<size_t>(t) * n, 1.0f, b.data(), n);
}

}  // namespace

void ExpertStats::reset(int layers, int experts) {
  n_layer = layers;
  n_expert = experts;
  gate_mass.assign(static_cast<size_t>(layers) * experts, 0.0);
  selected.assign(static_cast<size_t>(layers) * experts, 0);
  tokens.assign(layers, 0);
}

Forward::Forward(const Model& model, KvCache& cache, ThreadPool& pool)
    : model_(model), cfg_(model.config()), cache_(cache), pool_(pool), ffn_(std::make_unique<ExpertFfn>(pool)) {
  restrict_experts({});
}

void Forward::collect_expert_stats(ExpertStats* stats) {
  if (stats && (stats->n_layer != cfg_.n_layer || stats->n_expert != cfg_.n_expert ||
                stats->gate_mass.size() != static_cast<size_t>(cfg_.n_layer) * cfg_.n_expert))
    throw std::invalid_argument(fmt::format("collect_expert_stats: statistics sized for {} layers x {} experts, the "
                                            "model has {} x {}", stats->n_layer, stats->n_expert, cfg_.n_layer,
                                            cfg_.n_expert));
  stats_ = stats;
}

void Forward::restrict_experts(std::vector<std::vector<uint8_t>> allowed) {
  if (!cfg_.is_moe()) {
    if (!allowed.empty()) throw std::invalid_argument("restrict_experts: the model has no experts");
    return;
  }
  if (!allowed.empty() && static_cast<int>(allowed.size()) != cfg_.n_layer)
    throw std::invalid_argument(fmt::format("restrict_experts: {} layers given, the model has {}", allowed.size(),
                                            cfg_.n_layer));
  std::vector<std::vector<int>> lists;
  for (int il = model_.first_layer(); il < model_.last_layer(); ++il) {
    const LayerWeights& w = model_.layer(il);
    std::vector<int> list;
    for (int e = 0; e < cfg_.n_expert; ++e) {
      bool ok = w.held[e] != 0;
      if (!allowed.empty()) {
        if (static_cast<int>(allowed[il].size()) != cfg_.n_expert)
          throw std::invalid_argument(fmt::format("restrict_experts: layer {} lists {} experts, the model has {}", il,
                                                  allowed[il].size(), cfg_.n_expert));
        ok = ok && allowed[il][e] != 0;
      }
      if (ok) list.push_back(e);
    }
    if (list.empty())
      throw std::invalid_argument(fmt::format("restrict_experts: no expert of layer {} may be routed to", il));
    lists.push_back(std::move(list));
  }
  allowed_ = std::move(lists);
  masked_ = false;
  for (int il = model_.first_layer(); il < model_.last_layer(); ++il)
    if (static_cast<int>(allowed_[il - model_.first_layer()].size()) != model_.layer(il).n_held) masked_ = true;
}

void Forward::validate(const Batch& b) const {
  const int T = b.n_tokens();
  if (T == 0) throw std::invalid_argument("empty batch");
  if (b.seq.size() != static_cast<size_t>(T) || b.output.size() != static_cast<size_t>(T))
    throw std::invalid_argument("batch arrays have different lengths");
  if (model_.has_embedding() && b.hidden.empty()) {
    if (b.tokens.size() != static_cast<size_t>(T)) throw std::invalid_argument("batch needs one token per position");
    for (int32_t id : b.tokens)
      if (id < 0 || id >= cfg_.n_vocab)
        throw std::invalid_argument(fmt::format("token id {} is outside the vocabulary (0..{})", id, cfg_.n_vocab - 1));
  } else if (b.hidden.size() != static_cast<size_t>(T) * cfg_.n_embd) {
    throw std::invalid_argument(fmt::format("hidden-state input has {} values, expected {} tokens x {}",
                                            b.hidden.size(), T, cfg_.n_embd));
  }
  // Per sequence: positions consecutive, starting at or before the cached length.
  std::vector<int> next(cache_.n_seq(), -1);
  for (int t = 0; t < T; ++t) {
    int s = b.seq[t], p = b.pos[t];
    if (s < 0 || s >= cache_.n_seq())
      throw std::invalid_argument(fmt::format("sequence {} out of range (cache has {})", s, cache_.n_seq()));
    cache_.check_room(s, p);
    if (next[s] < 0) {
      if (p > cache_.length(s))
        throw std::invalid_argument(fmt::format("sequence {}: position {} leaves a gap after {} cached positions",
                                                s, p, cache_.length(s)));
    } else if (p != next[s]) {
      throw std::invalid_argument(fmt::format("sequence {}: positions must be consecutive ({} after {})",
                                              s, p, next[s] - 1));
    }
    next[s] = p + 1;
  }
}

std::span<const float> Forward::run(const Batch& b) {
  validate(b);
  const int T = b.n_tokens();
  const int E = cfg_.n_embd;
  grow(x_, static_cast<size_t>(T) * E);
  grow(xb_, static_cast<size_t>(T) * E);
  grow(q_, static_cast<size_t>(T) * cfg_.q_dim());
  grow(k_, static_cast<size_t>(T) * cfg_.kv_dim());
  grow(v_, static_cast<size_t>(T) * cfg_.kv_dim());
  grow(att_, static_cast<size_t>(T) * cfg_.q_dim());
  grow(scores_, static_cast<size_t>(pool_.size()) * cache_.n_ctx());
  const int half = cfg_.rope_dims / 2;
  grow(rope_cos_, static_cast<size_t>(T) * half);
  grow(rope_sin_, static_cast<size_t>(T) * half);
  for (int t = 0; t < T; ++t)
    ops::rope_angles(&rope_cos_[static_cast<size_t>(t) * half], &rope_sin_[static_cast<size_t>(t) * half],
                     cfg_.rope_dims, b.pos[t], cfg_.rope_base, cfg_.rope_freq_scale,
                     model_.rope_freq_factors().empty() ? nullptr : model_.rope_freq_factors().data());

  embed(b, T);
  for (int il = model_.first_layer(); il < model_.last_layer(); ++il) {
    attention(il, b, T);
    feed_forward(il, T);
  }
  // The batch's positions are now in the cache.
  // Each sequence now ends at its last position in the batch (later entries were stale).
  for (int t = 0; t < T; ++t) cache_.set_length(b.seq[t], b.pos[t] + 1);

  if (!model_.has_head()) return {x_.data(), static_cast<size_t>(T) * E};
  head(b, T);
  int n_out = static_cast<int>(std::count(b.output.begin(), b.output.end(), 1));
  return {logits_.data(), static_cast<size_t>(n_out) * cfg_.n_vocab};
}

// x = embedding rows of the tokens, or the previous stage's hidden states.
void Forward::embed(const Batch& b, int T) {
  const int E = cfg_.n_embd;
  if (!b.hidden.empty()) {
    std::copy(b.hidden.begin(), b.hidden.end(), x_.begin());
    return;
  }
  const auto& emb = model_.token_embd();
  for (int t = 0; t < T; ++t)
    kernels::dequantize_row(emb.type, emb.data + static_cast<size_t>(b.tokens[t]) * emb.row_bytes,
                            &x_[static_cast<size_t>(t) * E], E);
}

// x += Wo . attention(rope(Wq xb), rope(Wk xb), Wv xb), with xb = rmsnorm(x).
void Forward::attention(int il, const Batch& b, int T) {
  const LayerWeights& w = model_.layer(il);
  const int E = cfg_.n_embd, hd = cfg_.head_dim, H = cfg_.n_head, KVH = cfg_.n_head_kv;
  const int qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), half = cfg_.rope_dims / 2;
  const bool neox = cfg_.rope_style == RopeStyle::NeoX;

  for (int t = 0; t < T; ++t)
    ops::rmsnorm(&xb_[static_cast<size_t>(t) * E], &x_[static_cast<size_t>(t) * E], w.attn_norm.data(), E,
                 cfg_.rms_eps);
  kernels::matmul(w.wq, xb_.data(), E, T, q_.data(), qd, pool_);
  kernels::matmul(w.wk, xb_.data(), E, T, k_.data(), kvd, pool_);
  kernels::matmul(w.wv, xb_.data(), E, T, v_.data(), kvd, pool_);
  add_bias(q_.data(), w.bq, T, qd);
  add_bias(k_.data(), w.bk, T, kvd);
  add_bias(v_.data(), w.bv, T, kvd);

  for (int t = 0; t < T; ++t) {
    float* q = &q_[static_cast<size_t>(t) * qd];
    float* k = &k_[static_cast<size_t>(t) * kvd];
    if (!w.q_norm.empty()) {  // per-head RMSNorm (qwen3)
      for (int h = 0; h < H; ++h) ops::rmsnorm(q + h * hd, q + h * hd, w.q_norm.data(), hd, cfg_.rms_eps);
      for (int h = 0; h < KVH; ++h) ops::rmsnorm(k + h * hd, k + h * hd, w.k_norm.data(), hd, cfg_.rms_eps);
    }
    const float* c = &rope_cos_[static_cast<size_t>(t) * half];
    const float* s = &rope_sin_[static_cast<size_t>(t) * half];
    ops::rope(q, H, hd, cfg_.rope_dims, c, s, neox);
    ops::rope(k, KVH, hd, cfg_.rope_dims, c, s, neox);
    // Append k and v to the cache.
    void* kc = cache_.key(il, b.seq[t], b.pos[t]);
    void* vc = cache_.value(il, b.seq[t], b.pos[t]);
    const float* v = &v_[static_cast<size_t>(t) * kvd];
    if (cache_.type() == DType::F16) {
      kernels::fp32_to_fp16_row(k, static_cast<uint16_t*>(kc), kvd);
      kernels::fp32_to_fp16_row(v, static_cast<uint16_t*>(vc), kvd);
    } else {
      std::copy(k, k + kvd, static_cast<float*>(kc));
      std::copy(v, v + kvd, static_cast<float*>(vc));
    }
  }

  // softmax(q . K^T / sqrt(hd)) . V for every (token, head), causal within each sequence.
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int group = H / KVH;
  const bool f16 = cache_.type() == DType::F16;
  const int n_ctx = cache_.n_ctx();
  pool_.parallel_for(static_cast<int64_t>(T) * H, 1, [&](int64_t begin, int64_t end, int ith) {
    float* sc = &scores_[static_cast<size_t>(ith) * n_ctx];
    for (int64_t job = begin; job < end; ++job) {
      const int t = static_cast<int>(job / H), h = static_cast<int>(job % H);
      const int kvh = h / group, seq = b.seq[t], n = b.pos[t] + 1;
      const float* q = &q_[static_cast<size_t>(t) * qd + h * hd];
      float* out = &att_[static_cast<size_t>(t) * qd + h * hd];
      const uint8_t* k0 = static_cast<const uint8_t*>(cache_.key(il, seq, 0));
      const uint8_t* v0 = static_cast<const uint8_t*>(cache_.value(il, seq, 0));
      const size_t rb = cache_.row_bytes();
      for (int p = 0; p < n; ++p) {
        const uint8_t* kr = k0 + p * rb;
        sc[p] = scale * (f16 ? ops::dot_f16(q, reinterpret_cast<const uint16_t*>(kr) + kvh * hd, hd)
                             : ops::dot_f32(q, reinterpret_cast<const float*>(kr) + kvh * hd, hd));
      }
      ops::softmax(sc, n);
      std::fill(out, out + hd, 0.0f);
      for (int p = 0; p < n; ++p) {
        const uint8_t* vr = v0 + p * rb;
        if (f16) ops::axpy_f16(out, sc[p], reinterpret_cast<const uint16_t*>(vr) + kvh * hd, hd);
        else ops::axpy_f32(out, sc[p], reinterpret_cast<const float*>(vr) + kvh * hd, hd);
      }
    }
  });

  // x += Wo . att
  kernels::matmul(w.wo, att_.data(), qd, T, xb_.data(), E, pool_);
  for (size_t i = 0; i < static_cast<size_t>(T) * E; ++i) x_[i] += xb_[i];
}

// x += FFN(rmsnorm(x)): SwiGLU  W_down . (silu(W_gate xb) * W_up xb), or the MoE mixture.
void Forward::feed_forward(int il, int T) {
  const LayerWeights& w = model_.layer(il);
  const int E = cfg_.n_embd;
  for (int t = 0; t < T; ++t)
    ops::rmsnorm(&xb_[static_cast<size_t>(t) * E], &x_[static_cast<size_t>(t) * E], w.ffn_norm.data(), E,
                 cfg_.rms_eps);
  if (cfg_.is_moe()) {
    moe(il, w, T);
    return;
  }
  const int F = cfg_.n_ff;
  grow(gate_, static_cast<size_t>(T) * F);
  grow(up_, static_cast<size_t>(T) * F);
  kernels::matmul(w.w_gate, xb_.data(), E, T, gate_.data(), F, pool_);
  kernels::matmul(w.w_up, xb_.data(), E, T, up_.data(), F, pool_);
  ops::swiglu(gate_.data(), gate_.data(), up_.data(), T * F);
  kernels::matmul(w.w_down, gate_.data(), F, T, xb_.data(), E, pool_);
  for (size_t i = 0; i < static_cast<size_t>(T) * E; ++i) x_[i] += xb_[i];
}

// Mixture of experts: the router picks n_expert_used experts per token (softmax, top-k,
// optionally renormalised); each expert runs on the tokens routed to it. On a shard (or under
// restrict_experts) the softmax and the top k range over the allowed experts only, so the
// weights renormalise over what the node holds. In exact mode (set_remote_experts) they range
// over the held experts plus those a peer can compute, which is every expert when the mesh holds
// them all: the full model's routing, with the absent experts' rows computed remotely.
void Forward::route(const std::vector<int>& allowed, int T) {
  const int NE = cfg_.n_expert;
  const int NA = static_cast<int>(allowed.size());
  const int K = std::min(cfg_.n_expert_used, NA);
  std::copy_n(router_logits_.begin(), static_cast<size_t>(T) * NE, router_.begin());
  auto& routed = routed_;
  routed.resize(NE);
  for (auto& r : routed) r.clear();
  auto& order = expert_order_;
  for (int t = 0; t < T; ++t) {
    float* p = &router_[static_cast<size_t>(t) * NE];
    if (NA < NE) {  // experts outside the allowed set get no probability
      int j = 0;
      for (int e = 0; e < NE; ++e) {
        if (j < NA && allowed[j] == e) {
          ++j;
          continue;
        }
        p[e] = -INFINITY;
      }
    }
    ops::softmax(p, NE);
    order.assign(allowed.begin(), allowed.end());
    std::partial_sort(order.begin(), order.begin() + K, order.end(),
                      [&](int a, int b2) { return p[a] > p[b2] || (p[a] == p[b2] && a < b2); });
    float total = 0;
    for (int j = 0; j < K; ++j) total += p[order[j]];
    for (int j = 0; j < K; ++j) {
      float wgt = cfg_.expert_weights_norm ? p[order[j]] / total : p[order[j]];
      routed[order[j]].push_back({t, wgt});
    }
  }
}

void Forward::moe(int il, const LayerWeights& w, int T) {
  const int E = cfg_.n_embd, NE = cfg_.n_expert, F = cfg_.n_ff_expert;
  const std::vector<int>& held = allowed_[il - model_.first_layer()];
  grow(router_logits_, static_cast<size_t>(T) * NE);
  grow(router_, static_cast<size_t>(T) * NE);
  kernels::matmul(w.router, xb_.data(), E, T, router_logits_.data(), NE, pool_);

  // Exact mode: the experts peers can compute join the routing.
  const std::vector<int>* allowed = &held;
  bool remote = false;
  if (remote_ && !masked_ && w.n_held < NE) {
    remote_flags_.assign(NE, 0);
    remote_->available(il, remote_flags_);
    routable_.clear();
    for (int e = 0; e < NE; ++e)
      if (w.held[e] || remote_flags_[e]) routable_.push_back(e);
    if (routable_.size() > held.size()) {
      allowed = &routable_;
      remote = true;
    }
  }
  route(*allowed, T);
  if (remote) {
    // Gather each absent expert's rows, compute them all at once elsewhere.
    std::vector<RemoteExperts::Call> calls;
    remote_offset_.assign(NE, 0);
    size_t rows = 0;
    for (int e = 0; e < NE; ++e)
      if (!w.held[e] && !routed_[e].empty()) {
        remote_offset_[e] = rows;
        rows += routed_[e].size();
      }
    if (rows == 0) {
      remote = false;
    } else {
      grow(remote_in_, rows * E);
      grow(remote_out_, rows * E);
      for (int e = 0; e < NE; ++e) {
        if (w.held[e] || routed_[e].empty()) continue;
        const size_t off = remote_offset_[e];
        const auto& toks = routed_[e];
        for (size_t j = 0; j < toks.size(); ++j)
          std::copy_n(&xb_[static_cast<size_t>(toks[j].first) * E], E, &remote_in_[(off + j) * E]);
        calls.push_back({e, static_cast<int>(toks.size()), &remote_in_[off * E], &remote_out_[off * E]});
      }
      const auto t0 = std::chrono::steady_clock::now();
      try {
        remote_->compute(il, calls);
        ++remote_stats_.layers;
        remote_stats_.rows += rows;
      } catch (const std::exception&) {
        ++remote_stats_.failures;
        remote = false;
        route(held, T);  // as a shard without exact mode
      }
      remote_stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  if (stats_) {
    const size_t base = static_cast<size_t>(il) * NE;
    for (int t = 0; t < T; ++t)
      for (int e = 0; e < NE; ++e) stats_->gate_mass[base + e] += router_[static_cast<size_t>(t) * NE + e];
    for (int e = 0; e < NE; ++e) stats_->selected[base + e] += routed_[e].size();
    stats_->tokens[il] += static_cast<uint64_t>(T);
  }

  grow(moe_out_, static_cast<size_t>(T) * E);
  std::fill(moe_out_.begin(), moe_out_.begin() + static_cast<size_t>(T) * E, 0.0f);
  for (int e = 0; e < NE; ++e) {
    const auto& toks = routed_[e];
    if (toks.empty()) continue;
    const int n = static_cast<int>(toks.size());
    const float* out;
    if (w.held[e]) {
      grow(moe_in_, static_cast<size_t>(n) * E);
      grow(moe_down_, static_cast<size_t>(n) * E);
      for (int j = 0; j < n; ++j)
        std::copy_n(&xb_[static_cast<size_t>(toks[j].first) * E], E, &moe_in_[static_cast<size_t>(j) * E]);
      const auto& x = w.experts[e];
      ffn_->run(x.gate, x.up, x.down, E, F, moe_in_.data(), n, moe_down_.data());
      out = moe_down_.data();
    } else {
      out = &remote_out_[remote_offset_[e] * E];  // computed by a peer (exact mode)
    }
    for (int j = 0; j < n; ++j)
      ops::axpy_f32(&moe_out_[static_cast<size_t>(toks[j].first) * E], toks[j].second, out + static_cast<size_t>(j) * E,
                    E);
  }
  if (w.gate_shexp.data) {  // shared expert, gated by sigmoid(xb . w_gate_inp_shexp)
    const int FS = static_cast<int>(w.gate_shexp.rows);
    grow(moe_down_, static_cast<size_t>(T) * E);
    ffn_->run(w.gate_shexp, w.up_shexp, w.down_shexp, E, FS, xb_.data(), T, moe_down_.data());
    std::vector<float>& gate = shexp_gate_;
    gate.assign(T, 1.0f);
    if (w.shexp_gate.data) {
      kernels::matmul(w.shexp_gate, xb_.data(), E, T, gate.data(), 1, pool_);
      for (float& g : gate) g = 1.0f / (1.0f + std::exp(-g));
    }
    for (int t = 0; t < T; ++t)
      ops::axpy_f32(&moe_out_[static_cast<size_t>(t) * E], gate[t], &moe_down_[static_cast<size_t>(t) * E], E);
  }
  for (size_t i = 0; i < static_cast<size_t>(T) * E; ++i) x_[i] += moe_out_[i];
}

// logits = W_out . rmsnorm(x) for the tokens that asked for them.
void Forward::head(const Batch& b, int T) {
  const int E = cfg_.n_embd, V = cfg_.n_vocab;
  int n_out = 0;
  for (int t = 0; t < T; ++t) {
    if (!b.output[t]) continue;
    ops::rmsnorm(&xb_[static_cast<size_t>(n_out) * E], &x_[static_cast<size_t>(t) * E],
                 model_.output_norm().data(), E, cfg_.rms_eps);
    ++n_out;
  }
  grow(logits_, static_cast<size_t>(n_out) * V);
  if (n_out > 0) kernels::matmul(model_.output(), xb_.data(), E, n_out, logits_.data(), V, pool_);
}

}  // namespace llmesh
