#include "moe/shard_quality.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "model/forward.h"
#include "model/kv_cache.h"

namespace llmesh::moe {

nlohmann::json QualityGate::to_json() const {
  return {{"max_kl", max_kl}, {"min_top1", min_top1}, {"max_ppl_increase", max_ppl_increase}};
}

bool ShardQuality::passes(const QualityGate& g) const { return failures(g).empty(); }

std::string ShardQuality::failures(const QualityGate& g) const {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  if (kl > g.max_kl) add(fmt::format("KL {:.4f} > {:.4f}", kl, g.max_kl));
  if (top1 < g.min_top1) add(fmt::format("top-1 {:.3f} < {:.3f}", top1, g.min_top1));
  if (ppl_increase() > g.max_ppl_increase)
    add(fmt::format("perplexity +{:.1f}% > +{:.1f}%", 100 * ppl_increase(), 100 * g.max_ppl_increase));
  return out;
}

nlohmann::json ShardQuality::to_json(const QualityGate& g) const {
  // Full precision: a plan file read back must reach the same verdict (MoePlan::from_json).
  return {{"kl", kl},
          {"kl_max", kl_max},
          {"top1", top1},
          {"perplexity", ppl},
          {"perplexity_full", ppl_full},
          {"perplexity_increase", ppl_increase()},
          {"positions", positions},
          {"passes", passes(g)},
          {"failures", failures(g)}};
}

namespace {
// log-softmax of a row, in double.
void log_softmax(const float* x, int n, std::vector<double>& out) {
  out.resize(n);
  double mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max<double>(mx, x[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int i = 0; i < n; ++i) out[i] = static_cast<double>(x[i]) - lse;
}

int argmax(const std::vector<double>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}
}  // namespace

std::vector<ShardQuality> evaluate_shards(const Model& model, ThreadPool& pool, const CalibrationSet& eval,
                                          const std::vector<std::vector<std::vector<int>>>& shards,
                                          const std::function<void(int64_t, int64_t)>& progress) {
  const ModelConfig& c = model.config();
  if (!c.is_moe()) throw std::runtime_error("the quality gate needs a mixture-of-experts model");
  if (!model.has_embedding() || !model.has_head() || !model.holds_all_experts())
    throw std::runtime_error("the quality gate needs the whole model (every layer and expert)");
  if (eval.sequences.empty()) throw std::runtime_error("no calibration text to evaluate on");
  std::vector<std::vector<std::vector<uint8_t>>> masks;
  for (const auto& s : shards) {
    if (static_cast<int>(s.size()) != c.n_layer)
      throw std::invalid_argument(fmt::format("a shard lists {} layers; the model has {}", s.size(), c.n_layer));
    std::vector<std::vector<uint8_t>> m(c.n_layer, std::vector<uint8_t>(c.n_expert, 0));
    for (int l = 0; l < c.n_layer; ++l)
      for (int e : s[l]) {
        if (e < 0 || e >= c.n_expert) throw std::invalid_argument(fmt::format("expert {} does not exist", e));
        m[l][e] = 1;
      }
    masks.push_back(std::move(m));
  }
  size_t longest = 0;
  int64_t total = 0;
  for (const auto& s : eval.sequences) {
    longest = std::max(longest, s.size());
    total += static_cast<int64_t>(s.size()) * static_cast<int64_t>(1 + shards.size());
  }
  KvCacheOptions kv;
  kv.n_ctx = static_cast<int>(longest);
  kv.n_seq = 1;
  KvCache cache(c, 0, c.n_layer, kv);
  Forward fwd(model, cache, pool);
  const int V = c.n_vocab;
  constexpr size_t kChunk = 256;

  // Logits at every position but the last (each predicts the next token), chunk by chunk.
  auto run = [&](const std::vector<int32_t>& seq, std::vector<float>& logits) {
    cache.clear(0);
    logits.clear();
    Batch b;
    const size_t n_out = seq.size() - 1;
    for (size_t at = 0; at < n_out; at += kChunk) {
      b.clear();
      const size_t n = std::min(kChunk, n_out - at);
      for (size_t i = 0; i < n; ++i) b.add(seq[at + i], static_cast<int32_t>(at + i), 0, true);
      auto out = fwd.run(b);
      logits.insert(logits.end(), out.begin(), out.end());
    }
  };

  struct Acc {
    double kl = 0, kl_max = 0, nll = 0, nll_full = 0;
    int64_t agree = 0, n = 0;
  };
  std::vector<Acc> acc(shards.size());
  std::vector<float> ref_logits, logits;
  std::vector<double> ref_lp, lp;
  std::vector<std::vector<double>> ref_rows;
  int64_t done = 0;
  for (const auto& seq : eval.sequences) {
    if (seq.size() < 2) continue;
    fwd.restrict_experts({});
    run(seq, ref_logits);
    done += static_cast<int64_t>(seq.size());
    if (progress) progress(done, total);
    const size_t n_pos = seq.size() - 1;
    ref_rows.resize(n_pos);
    for (size_t t = 0; t < n_pos; ++t) log_softmax(&ref_logits[t * V], V, ref_rows[t]);
    for (size_t si = 0; si < shards.size(); ++si) {
      fwd.restrict_experts(masks[si]);
      run(seq, logits);
      done += static_cast<int64_t>(seq.size());
      if (progress) progress(done, total);
      Acc& a = acc[si];
      for (size_t t = 0; t < n_pos; ++t) {
        log_softmax(&logits[t * V], V, lp);
        const auto& ref = ref_rows[t];
        double kl = 0;
        for (int i = 0; i < V; ++i) {
          const double p = std::exp(ref[i]);
          if (p > 0) kl += p * (ref[i] - lp[i]);
        }
        kl = std::max(0.0, kl);
        a.kl += kl;
        a.kl_max = std::max(a.kl_max, kl);
        a.agree += argmax(ref) == argmax(lp) ? 1 : 0;
        a.nll -= lp[seq[t + 1]];
        a.nll_full -= ref[seq[t + 1]];
        ++a.n;
      }
    }
  }
  fwd.restrict_experts({});
  std::vector<ShardQuality> out;
  for (const Acc& a : acc) {
    ShardQuality q;
    q.positions = a.n;
    if (a.n > 0) {
      q.kl = a.kl / a.n;
      q.kl_max = a.kl_max;
      q.top1 = static_cast<double>(a.agree) / a.n;
      q.ppl = std::exp(a.nll / a.n);
      q.ppl_full = std::exp(a.nll_full / a.n);
    }
    out.push_back(q);
  }
  return out;
}

}  // namespace llmesh::moe
