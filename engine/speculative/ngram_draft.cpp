#include "speculative/ngram_draft.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace llmesh {
namespace {

uint64_t hash_tokens(const int32_t* t, int n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(n);
  for (int i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(t[i]) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ull;
  }
  return h ^ (h >> 31);
}

}  // namespace

NgramDraft::NgramDraft(const NgramOptions& opt) : opt_(opt) {
  if (opt_.n_min < 1 || opt_.n_max < opt_.n_min || opt_.n_max > 16)
    throw std::invalid_argument(
        fmt::format("n-gram sizes must satisfy 1 <= n_min <= n_max <= 16, got {}..{}", opt_.n_min, opt_.n_max));
}

void NgramDraft::release(int slot) {
  // The index stays: the next request in this slot usually continues the same conversation.
  (void)slot;
}

void NgramDraft::sync(Index& ix, std::span<const int32_t> context) {
  size_t same = 0;
  const size_t n = std::min(ix.tokens.size(), context.size());
  while (same < n && ix.tokens[same] == context[same]) ++same;
  if (same < ix.tokens.size()) {  // a different sequence (or a rollback): index from scratch
    ix.tokens.clear();
    for (auto& m : ix.last) m.clear();
  }
  ix.last.resize(opt_.n_max);
  const size_t old_len = ix.tokens.size();
  ix.tokens.insert(ix.tokens.end(), context.begin() + old_len, context.end());
  // An n-gram ending at e (exclusive) is indexed once the token at e, its continuation, is
  // known: e <= len - 1. The suffix itself (e == len) is what gets looked up.
  const size_t len = ix.tokens.size();
  const size_t from = old_len == 0 ? 1 : old_len;  // ends old_len - 1 and below are indexed
  for (size_t e = from; e < len; ++e) {
    for (int k = 1; k <= opt_.n_max; ++k) {
      if (static_cast<size_t>(k) > e) break;
      ix.last[k - 1][hash_tokens(ix.tokens.data() + e - k, k)] = static_cast<int32_t>(e);
    }
  }
}

std::vector<int32_t> NgramDraft::lookup(int slot, std::span<const int32_t> context, int max_tokens) {
  if (slot < 0 || slot > 1 << 16) throw std::invalid_argument(fmt::format("bad slot {}", slot));
  if (static_cast<size_t>(slot) >= slots_.size()) slots_.resize(slot + 1);
  Index& ix = slots_[slot];
  sync(ix, context);
  std::vector<int32_t> out;
  const size_t len = context.size();
  if (max_tokens <= 0 || len < 2) return out;
  for (int k = std::min<int>(opt_.n_max, static_cast<int>(len) - 1); k >= opt_.n_min; --k) {
    const int32_t* suffix = context.data() + len - k;
    auto it = ix.last[k - 1].find(hash_tokens(suffix, k));
    if (it == ix.last[k - 1].end()) continue;
    const size_t e = static_cast<size_t>(it->second);
    if (e < static_cast<size_t>(k) || e >= len || !std::equal(suffix, suffix + k, context.data() + e - k))
      continue;  // a hash collision
    // Continue from e; past the present, the repetition repeats with period len - e.
    const size_t period = len - e;
    for (int i = 0; i < max_tokens; ++i) out.push_back(context[e + static_cast<size_t>(i) % period]);
    break;
  }
  return out;
}

void NgramDraft::propose(std::span<DraftTask* const> tasks) {
  for (DraftTask* t : tasks) {
    t->tokens = lookup(t->slot, t->context, t->max_tokens);
    t->q.clear();
  }
}

}  // namespace llmesh
