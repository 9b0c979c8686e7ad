// How many tokens to draft: the window that maximises expected tokens per second.
//
// With per-token acceptance rate a, a window of k drafts yields 1 + a + ... + a^k tokens per
// verification (the accepted prefix plus the target's own next token). It costs one target
// step over k + 1 more tokens plus k draft steps. The policy measures both as the server runs:
// a target step of n tokens takes alpha + beta * n seconds (a decayed least-squares fit over
// recent steps, so a pipeline's round trip shows up as a large alpha and buys long windows),
// and a draft step takes delta seconds. It then picks k in [0, draft_max] maximising
// tokens / seconds; 0 means speculation does not pay right now (a draft as slow as the target,
// drafts mostly rejected), and the scheduler then only probes now and then to keep measuring.
// Without adaptation the window is always draft_max.
#pragma once
#include <mutex>
#include <vector>

namespace llmesh {

struct WindowOptions {
  int draft_max = 8;     // longest window
  bool adaptive = true;  // false: always draft_max
};

// Per-token acceptance, as a decayed ratio of drafted tokens kept. A window of k drafts with j
// kept says j successes and, when j < k, one failure (the tokens after a rejection were never
// judged). Starts from a prior so one unlucky window does not shut speculation off.
class AcceptanceEstimate {
 public:
  explicit AcceptanceEstimate(double prior = 0.5, double prior_weight = 2.0);
  void update(int drafted, int accepted);
  double rate() const;

 private:
  double kept_, judged_;
};

class WindowPolicy {
 public:
  explicit WindowPolicy(const WindowOptions& opt);

  const WindowOptions& options() const { return opt_; }
  // The window for a request whose drafts are accepted at `acceptance` per token; also capped
  // by `room` (tokens the request may still generate, positions left). 0: do not draft (room
  // <= 0, or plain decoding is expected to be faster).
  int choose(double acceptance, int room) const;
  // A target forward pass over n tokens took `seconds`.
  void observe_step(int n_tokens, double seconds);
  // A propose() call ran `steps` sequential draft steps in `seconds`.
  void observe_draft(int steps, double seconds);

  // What a decode step (no prompt tokens in it) really cost per token it produced, drafting
  // included: `drafted` says whether any request drafted in it. The model above can be wrong
  // (a tiny model whose cost is all overhead, a thread pool waking up after the draft); these
  // realised costs are the check on it.
  void observe_outcome(bool drafted, int tokens_out, double seconds);
  // False when steps that drafted have recently cost more per token than steps that did not:
  // the scheduler then decodes plainly, drafting only in an occasional probe step. True while
  // either side is unmeasured.
  bool speculation_pays() const;
  double realised_spec_cost() const;   // seconds per token, 0 when unmeasured
  double realised_plain_cost() const;  // seconds per token, 0 when unmeasured

  // The fitted costs, in seconds (for status and tests).
  double step_base() const;       // alpha
  double step_per_token() const;  // beta
  double draft_step() const;      // delta

 private:
  void fit(double& alpha, double& beta) const;  // mu_ held
  double draft_median() const;                   // mu_ held

  WindowOptions opt_;
  mutable std::mutex mu_;
  double w_ = 0, wn_ = 0, wt_ = 0, wnn_ = 0, wnt_ = 0;  // decayed sums over target steps
  // The last draft step times; delta is their median (one slow call, a prompt catch-up or a
  // descheduled thread, must not shut speculation off).
  std::vector<double> draft_times_;
  size_t draft_next_ = 0;
  double spec_cost_ = 0, plain_cost_ = 0;  // EMAs of seconds per token produced
  int spec_seen_ = 0, plain_seen_ = 0;
};

}  // namespace llmesh
