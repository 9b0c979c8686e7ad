#include "speculative/forced_draft.h"

#include <stdexcept>

#include <fmt/format.h>

namespace llmesh {

ForcedAcceptanceDraft::ForcedAcceptanceDraft(DraftSource& inner, std::vector<int32_t> reference, int prompt_len,
                                             double rate, int n_vocab, uint64_t seed)
    : inner_(inner),
      reference_(std::move(reference)),
      prompt_len_(prompt_len),
      rate_(rate),
      n_vocab_(n_vocab),
      rng_(seed) {
  if (!(rate >= 0.0 && rate <= 1.0)) throw std::invalid_argument(fmt::format("forced acceptance {} is not in [0, 1]", rate));
  if (n_vocab < 2) throw std::invalid_argument("forced acceptance needs a vocabulary of at least 2 tokens");
  if (prompt_len < 1) throw std::invalid_argument("forced acceptance needs the prompt length");
}

std::string ForcedAcceptanceDraft::name() const {
  return fmt::format("forced {:g} over {}", rate_, inner_.name());
}

void ForcedAcceptanceDraft::propose(std::span<DraftTask* const> tasks) {
  inner_.propose(tasks);  // the real cost, and the inner proposer's state follows the sequence
  std::bernoulli_distribution keep(rate_);
  for (DraftTask* t : tasks) {
    t->q.clear();  // point masses from here on
    // context = prompt + generated + the token about to be fed, which is reference[pos - 1];
    // the first drafted token stands for reference[pos].
    const long pos = static_cast<long>(t->context.size()) - prompt_len_;
    if (pos < 0 || pos >= static_cast<long>(reference_.size())) {
      t->tokens.clear();
      continue;
    }
    const size_t n = std::min(t->tokens.size(), reference_.size() - static_cast<size_t>(pos));
    t->tokens.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const int32_t ref = reference_[pos + i];
      if (keep(rng_)) {
        t->tokens[i] = ref;
        ++right_;
      } else {
        // The inner proposer's own token when it is wrong anyway, else the next id.
        int32_t other = t->tokens[i];
        if (other == ref || other < 0 || other >= n_vocab_) other = (ref + 1) % n_vocab_;
        t->tokens[i] = other;
        ++wrong_;
      }
    }
  }
}

}  // namespace llmesh
