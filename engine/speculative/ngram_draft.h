// Prompt lookup: a model-free proposer. When the last n tokens of a sequence occurred earlier
// in it, the tokens that followed then are proposed again (agents resend and edit code, quote
// files, repeat tool output). The longest matching n (n_max down to n_min) and its most recent
// occurrence win; a match that runs into the present continues the repetition it found.
//
// Each slot keeps an index from n-gram to its last position, extended as the sequence grows
// and rebuilt when the slot starts a different sequence, so a lookup costs O(n_max).
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "speculative/draft_source.h"

namespace llmesh {

struct NgramOptions {
  int n_max = 4;  // longest n-gram looked up
  int n_min = 2;  // shortest; 1 proposes after any repeated token, which guesses more often wrong
};

class NgramDraft : public DraftSource {
 public:
  explicit NgramDraft(const NgramOptions& opt = {});
  std::string name() const override { return "ngram"; }
  void propose(std::span<DraftTask* const> tasks) override;
  void release(int slot) override;

  // One sequence's lookup, for tests: proposes at most max_tokens after `context`.
  std::vector<int32_t> lookup(int slot, std::span<const int32_t> context, int max_tokens);

 private:
  struct Index {
    std::vector<int32_t> tokens;  // what is indexed: a prefix of the slot's sequence
    std::vector<std::unordered_map<uint64_t, int32_t>> last;  // [n - 1]: hash -> end of its last occurrence
  };
  void sync(Index& ix, std::span<const int32_t> context);

  NgramOptions opt_;
  std::vector<Index> slots_;
};

}  // namespace llmesh
