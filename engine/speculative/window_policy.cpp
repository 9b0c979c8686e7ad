#include "speculative/window_policy.h"

#include <algorithm>
#include <cmath>

namespace llmesh {

AcceptanceEstimate::AcceptanceEstimate(double prior, double prior_weight)
    : kept_(prior * prior_weight), judged_(prior_weight) {}

void AcceptanceEstimate::update(int drafted, int accepted) {
  if (drafted <= 0) return;
  accepted = std::clamp(accepted, 0, drafted);
  // Decay per window: the text a request writes changes (code, then prose), and so does how
  // predictable it is.
  constexpr double kDecay = 0.9;
  kept_ = kept_ * kDecay + accepted;
  judged_ = judged_ * kDecay + accepted + (accepted < drafted ? 1 : 0);
}

double AcceptanceEstimate::rate() const { return judged_ > 0 ? std::clamp(kept_ / judged_, 0.0, 1.0) : 0.5; }

WindowPolicy::WindowPolicy(const WindowOptions& opt) : opt_(opt) { opt_.draft_max = std::max(1, opt_.draft_max); }

void WindowPolicy::observe_step(int n_tokens, double seconds) {
  // Long prefill chunks run compute-bound, unlike the short steps speculation makes; they
  // would teach the fit the wrong slope.
  if (n_tokens <= 0 || n_tokens > 128 || !(seconds >= 0) || !std::isfinite(seconds)) return;
  constexpr double kDecay = 0.97;
  std::lock_guard lk(mu_);
  const double n = n_tokens;
  w_ = w_ * kDecay + 1;
  wn_ = wn_ * kDecay + n;
  wt_ = wt_ * kDecay + seconds;
  wnn_ = wnn_ * kDecay + n * n;
  wnt_ = wnt_ * kDecay + n * seconds;
}

void WindowPolicy::observe_draft(int steps, double seconds) {
  if (steps <= 0 || !(seconds >= 0) || !std::isfinite(seconds)) return;
  std::lock_guard lk(mu_);
  constexpr size_t kKeep = 7;
  const double per = seconds / steps;
  if (draft_times_.size() < kKeep) {
    draft_times_.push_back(per);
  } else {
    draft_times_[draft_next_] = per;
    draft_next_ = (draft_next_ + 1) % kKeep;
  }
}

void WindowPolicy::fit(double& alpha, double& beta) const {
  if (w_ <= 0) {
    alpha = 1;
    beta = 0.05;
    return;
  }
  const double mn = wn_ / w_, mt = wt_ / w_;
  const double var = std::max(0.0, wnn_ / w_ - mn * mn), cov = wnt_ / w_ - mn * mt;
  // Ridge towards a prior slope of 5% of a step per extra token: when every recent step had
  // the same size there is no slope to see.
  const double beta0 = 0.05 * mt / std::max(1.0, mn);
  constexpr double kRidge = 0.05;
  beta = std::max(0.0, (cov + kRidge * beta0) / (var + kRidge));
  alpha = std::max(mt - beta * mn, 0.05 * mt);
}

double WindowPolicy::step_base() const {
  std::lock_guard lk(mu_);
  double a, b;
  fit(a, b);
  return a;
}
double WindowPolicy::step_per_token() const {
  std::lock_guard lk(mu_);
  double a, b;
  fit(a, b);
  return b;
}
void WindowPolicy::observe_outcome(bool drafted, int tokens_out, double seconds) {
  if (tokens_out <= 0 || !(seconds >= 0) || !std::isfinite(seconds)) return;
  std::lock_guard lk(mu_);
  const double per = seconds / tokens_out;
  double& ema = drafted ? spec_cost_ : plain_cost_;
  int& seen = drafted ? spec_seen_ : plain_seen_;
  // The first few observations average evenly, then a decayed mean.
  const double w = std::max(0.1, 1.0 / (seen + 1));
  ema = seen == 0 ? per : (1 - w) * ema + w * per;
  ++seen;
}

bool WindowPolicy::speculation_pays() const {
  std::lock_guard lk(mu_);
  if (!opt_.adaptive || spec_seen_ < 4 || plain_seen_ < 4) return true;
  return spec_cost_ <= plain_cost_;
}

double WindowPolicy::realised_spec_cost() const {
  std::lock_guard lk(mu_);
  return spec_seen_ ? spec_cost_ : 0;
}

double WindowPolicy::realised_plain_cost() const {
  std::lock_guard lk(mu_);
  return plain_seen_ ? plain_cost_ : 0;
}

double WindowPolicy::draft_median() const {
  if (draft_times_.empty()) return 0;
  std::vector<double> v = draft_times_;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

double WindowPolicy::draft_step() const {
  std::lock_guard lk(mu_);
  return draft_median();
}

int WindowPolicy::choose(double acceptance, int room) const {
  const int cap = std::min(opt_.draft_max, room);
  if (cap <= 0) return 0;
  if (!opt_.adaptive) return cap;
  double alpha, beta, delta;
  {
    std::lock_guard lk(mu_);
    fit(alpha, beta);
    delta = draft_median();
  }
  const double a = std::clamp(acceptance, 0.0, 1.0);
  // k = 0 is plain decoding: one token per step of one token.
  int best = 0;
  double best_score = 1.0 / (alpha + beta), expected = 1, ak = 1;
  for (int k = 1; k <= cap; ++k) {
    ak *= a;
    expected += ak;
    const double score = expected / (alpha + beta * (k + 1) + delta * k);
    if (score > best_score) {
      best = k;
      best_score = score;
    }
  }
  return best;
}

}  // namespace llmesh
