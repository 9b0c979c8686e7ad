#include "speculative/acceptance.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace llmesh {
namespace {

double prob_of(std::span<const TokenProb> d, int32_t id) {
  for (const auto& t : d)
    if (t.id == id) return t.p;
  return 0;
}

}  // namespace

Verdict speculative_accept(std::span<const TokenProb> p, int32_t drafted, std::span<const TokenProb> q,
                           std::mt19937_64& rng) {
  Verdict v;
  if (p.empty()) return v;  // nothing to sample from: the caller's bug; token stays -1
  const double pd = prob_of(p, drafted);
  const double qd = q.empty() ? 1.0 : prob_of(q, drafted);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (pd > 0) {
    // qd == 0 cannot happen for a token drawn from q; treat it as certain acceptance.
    if (qd <= 0 || pd >= qd || u(rng) < pd / qd) {
      v.accepted = true;
      v.token = drafted;
      return v;
    }
  }
  // Rejected: draw from max(0, p - q), renormalised. Only ids in p's support can have mass.
  std::vector<double> r(p.size());
  double total = 0;
  if (q.empty()) {
    for (size_t i = 0; i < p.size(); ++i) {
      r[i] = p[i].id == drafted ? 0.0 : p[i].p;
      total += r[i];
    }
  } else {
    std::unordered_map<int32_t, double> qmap;
    qmap.reserve(q.size() * 2);
    for (const auto& t : q) qmap[t.id] += t.p;
    for (size_t i = 0; i < p.size(); ++i) {
      auto it = qmap.find(p[i].id);
      r[i] = std::max(0.0, p[i].p - (it == qmap.end() ? 0.0 : it->second));
      total += r[i];
    }
  }
  if (!(total > 0)) {
    // p <= q everywhere yet the draft was rejected: only rounding gets here. Fall back to p.
    for (size_t i = 0; i < p.size(); ++i) r[i] = p[i].p;
    total = 0;
    for (double x : r) total += x;
  }
  size_t nonzero = 0, last = 0;
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i] > 0) ++nonzero, last = i;
  if (nonzero == 1) {
    v.token = p[last].id;
    return v;
  }
  const double x = u(rng) * total;
  double acc = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    acc += r[i];
    if (x < acc) {
      v.token = p[i].id;
      return v;
    }
  }
  v.token = p[last].id;
  return v;
}

}  // namespace llmesh
