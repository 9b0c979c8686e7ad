#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

namespace llmesh {

std::string SamplingParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0) return "temperature must be >= 0";
  if (!(top_p > 0 && top_p <= 1.0f)) return "top_p must be in (0, 1]";
  if (!(min_p >= 0 && min_p <= 1.0f)) return "min_p must be in [0, 1]";
  if (!(repeat_penalty > 0) || !std::isfinite(repeat_penalty)) return "repeat_penalty must be > 0";
  if (!std::isfinite(frequency_penalty) || std::fabs(frequency_penalty) > 2.0f)
    return "frequency_penalty must be in [-2, 2]";
  if (!std::isfinite(presence_penalty) || std::fabs(presence_penalty) > 2.0f)
    return "presence_penalty must be in [-2, 2]";
  if (repeat_last_n < -1) return "repeat_last_n must be >= -1";
  return "";
}

int32_t argmax(const float* logits, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplingParams& params, int n_vocab)
    : p_(params), n_vocab_(n_vocab), rng_(params.seed) {}

void Sampler::reset() {
  history_.clear();
  rng_.seed(p_.seed);
}

void Sampler::accept(int32_t token) { history_.push_back(token); }

void Sampler::apply_penalties(std::vector<float>& logits) const {
  bool any = p_.repeat_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f;
  if (!any || history_.empty()) return;
  size_t n = p_.repeat_last_n < 0 ? history_.size()
                                  : std::min(history_.size(), static_cast<size_t>(p_.repeat_last_n));
  std::unordered_map<int32_t, int> count;
  for (size_t i = history_.size() - n; i < history_.size(); ++i) ++count[history_[i]];
  for (auto [id, c] : count) {
    if (id < 0 || id >= n_vocab_) continue;
    float& l = logits[id];
    if (p_.repeat_penalty != 1.0f) l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    l -= c * p_.frequency_penalty + (c > 0 ? p_.presence_penalty : 0.0f);
  }
}

std::vector<TokenProb> Sampler::distribution(const float* logits) {
  work_.assign(logits, logits + n_vocab_);
  apply_penalties(work_);
  if (p_.temperature <= 0) return {{argmax(work_.data(), n_vocab_), 1.0f}};

  // Candidates sorted by logit; top-k cut first (cheap partial sort).
  std::vector<int32_t> idx(n_vocab_);
  std::iota(idx.begin(), idx.end(), 0);
  size_t k = p_.top_k > 0 ? std::min<size_t>(p_.top_k, n_vocab_) : n_vocab_;
  auto by_logit = [&](int32_t a, int32_t b) { return work_[a] > work_[b] || (work_[a] == work_[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  idx.resize(k);

  // Softmax with temperature.
  std::vector<TokenProb> c(k);
  const float mx = work_[idx[0]];
  double sum = 0;
  for (size_t i = 0; i < k; ++i) {
    double e = std::exp((work_[idx[i]] - mx) / p_.temperature);
    c[i] = {idx[i], static_cast<float>(e)};
    sum += e;
  }
  for (auto& t : c) t.p = static_cast<float>(t.p / sum);
  // min-p: drop tokens below min_p * p(top).
  if (p_.min_p > 0) {
    float cut = p_.min_p * c[0].p;
    size_t keep = 1;
    while (keep < c.size() && c[keep].p >= cut) ++keep;
    c.resize(keep);
  }
  // top-p: the smallest prefix whose mass reaches top_p.
  if (p_.top_p < 1.0f) {
    double mass = 0;
    size_t keep = 0;
    while (keep < c.size()) {
      mass += c[keep].p;
      ++keep;
      if (mass >= p_.top_p) break;
    }
    c.resize(keep);
  }
  double total = 0;
  for (auto& t : c) total += t.p;
  for (auto& t : c) t.p = static_cast<float>(t.p / total);
  return c;
}

int32_t Sampler::sample(const float* logits) {
  auto d = distribution(logits);
  if (d.size() == 1) return d[0].id;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double r = u(rng_), acc = 0;
  for (const auto& t : d) {
    acc += t.p;
    if (r < acc) return t.id;
  }
  return d.back().id;
}

}  // namespace llmesh
