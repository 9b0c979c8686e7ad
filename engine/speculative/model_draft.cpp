#include "speculative/model_draft.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>

namespace llmesh {

void check_same_vocabulary(const GgufFile& target, int target_n_vocab, const GgufFile& draft, int draft_n_vocab,
                           const std::string& draft_label) {
  auto fail = [&](const std::string& why) {
    throw std::invalid_argument(fmt::format(
        "draft model {} cannot draft for this model: {} (a draft must share the target's vocabulary)", draft_label,
        why));
  };
  if (draft_n_vocab != target_n_vocab)
    fail(fmt::format("it has {} tokens, the target {}", draft_n_vocab, target_n_vocab));
  auto model_of = [](const GgufFile& f) { return f.opt_string("tokenizer.ggml.model").value_or(""); };
  if (model_of(draft) != model_of(target))
    fail(fmt::format("its tokenizer is '{}', the target's '{}'", model_of(draft), model_of(target)));
  const GgufValue* dt = draft.find("tokenizer.ggml.tokens");
  const GgufValue* tt = target.find("tokenizer.ggml.tokens");
  if (!dt || !tt) fail(fmt::format("{} no tokenizer.ggml.tokens to compare", !dt ? "it has" : "the target has"));
  if (dt->strings.size() != tt->strings.size())
    fail(fmt::format("its tokenizer lists {} tokens, the target's {}", dt->strings.size(), tt->strings.size()));
  for (size_t i = 0; i < dt->strings.size(); ++i)
    if (dt->strings[i] != tt->strings[i])
      fail(fmt::format("token {} is '{}' there and '{}' in the target", i, std::string(dt->strings[i]).substr(0, 40),
                       std::string(tt->strings[i]).substr(0, 40)));
}

namespace {
KvCacheOptions kv_options(const ModelDraftOptions& o) {
  KvCacheOptions kv;
  kv.n_ctx = o.n_ctx;
  kv.n_seq = o.n_slots;
  kv.type = o.kv_type;
  return kv;
}
}  // namespace

ModelDraft::ModelDraft(std::shared_ptr<const Model> model, std::string label, ThreadPool& pool,
                       const ModelDraftOptions& opt)
    : model_(std::move(model)),
      label_(std::move(label)),
      opt_(opt),
      cache_(model_->config(), 0, model_->config().n_layer, kv_options(opt)),
      fwd_(*model_, cache_, pool),
      n_vocab_(model_->config().n_vocab),
      held_(opt.n_slots),
      rng_(0x5EED5EEDull) {
  if (model_->first_layer() != 0 || model_->last_layer() != model_->config().n_layer || !model_->has_head())
    throw std::invalid_argument(fmt::format("draft model {} must be whole (all layers and the output head)", label_));
  if (opt_.batch < 1) throw std::invalid_argument("draft batch must be >= 1");
  if (!(opt_.p_min >= 0 && opt_.p_min < 1)) throw std::invalid_argument("draft p_min must be in [0, 1)");
}

void ModelDraft::release(int slot) { (void)slot; }  // the KV stays: the next request may share its prefix

struct ModelDraft::Work {
  DraftTask* task = nullptr;
  std::vector<int32_t>* held = nullptr;
  size_t fed = 0;          // context tokens in the draft's KV
  bool drafting = false;   // the context is in; drafted tokens are being fed one by one
  bool done = false;
  std::optional<Sampler> sampler;  // sampled requests: the draft's q
};

void ModelDraft::decide(Work& w, const float* row) {
  DraftTask& t = *w.task;
  int32_t tok;
  if (w.sampler) {
    std::vector<TokenProb> q = w.sampler->distribution(row);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    double x = u(rng_), acc = 0;
    tok = q.back().id;
    for (const auto& c : q) {
      acc += c.p;
      if (x < acc) {
        tok = c.id;
        break;
      }
    }
    w.sampler->accept(tok);
    t.q.push_back(std::move(q));
  } else {
    tok = argmax(row, n_vocab_);
    if (opt_.p_min > 0) {
      double sum = 0;
      for (int i = 0; i < n_vocab_; ++i) sum += std::exp(static_cast<double>(row[i] - row[tok]));
      if (1.0 / sum < opt_.p_min) {
        w.done = true;
        return;
      }
    }
  }
  t.tokens.push_back(tok);
  if (static_cast<int>(t.tokens.size()) >= t.max_tokens) w.done = true;
}

void ModelDraft::propose(std::span<DraftTask* const> tasks) {
  std::vector<Work> work;
  work.reserve(tasks.size());
  for (DraftTask* t : tasks) {
    t->tokens.clear();
    t->q.clear();
    const size_t len = t->context.size();
    if (t->max_tokens <= 0 || len == 0 || t->slot < 0 || t->slot >= opt_.n_slots) continue;
    // Drafted tokens but the last are fed: positions up to len + max_tokens - 2.
    const int room = opt_.n_ctx - static_cast<int>(len) + 1;
    if (room <= 0) continue;
    t->max_tokens = std::min(t->max_tokens, room);
    std::vector<int32_t>& held = held_[t->slot];
    size_t same = 0;
    const size_t n = std::min(held.size(), len);
    while (same < n && held[same] == t->context[same]) ++same;
    same = std::min(same, len - 1);  // the last context token is always fed: its logits start the draft
    cache_.truncate(t->slot, static_cast<int>(same));
    held.resize(same);
    Work w;
    w.task = t;
    w.held = &held;
    w.fed = same;
    if (t->sampling && t->sampling->temperature > 0) {
      SamplingParams sp = *t->sampling;
      sp.seed = rng_();
      w.sampler.emplace(sp, n_vocab_);
      const size_t look = sp.repeat_last_n < 0 ? len : std::min<size_t>(len, sp.repeat_last_n);
      for (size_t i = len - look; i < len; ++i) w.sampler->accept(t->context[i]);
    }
    work.push_back(std::move(w));
  }
  if (work.empty()) return;

  std::vector<Work*> rows;
  try {
    // Catch up: the tokens each slot's draft KV lacks, one forward pass of at most opt_.batch
    // tokens per call, shortest first. A long new prompt thus takes a few steps to catch up
    // (its request decodes without drafts meanwhile) instead of stalling every stream at once.
    std::vector<Work*> order;
    for (Work& w : work) order.push_back(&w);
    std::stable_sort(order.begin(), order.end(), [](const Work* a, const Work* b) {
      return a->task->context.size() - a->fed < b->task->context.size() - b->fed;
    });
    batch_.clear();
    rows.clear();
    int budget = opt_.batch;
    for (Work* w : order) {
      if (budget == 0) break;
      const size_t len = w->task->context.size();
      const size_t take = std::min<size_t>(len - w->fed, budget);
      for (size_t i = 0; i < take; ++i) {
        const size_t pos = w->fed + i;
        const bool last = pos + 1 == len;
        batch_.add(w->task->context[pos], static_cast<int32_t>(pos), w->task->slot, last);
        if (last) rows.push_back(w);
      }
      budget -= static_cast<int>(take);
      w->fed += take;
      w->held->insert(w->held->end(), w->task->context.begin() + (w->fed - take), w->task->context.begin() + w->fed);
    }
    if (batch_.n_tokens() > 0) {
      std::span<const float> logits = fwd_.run(batch_);
      for (size_t r = 0; r < rows.size(); ++r) {
        rows[r]->drafting = true;
        decide(*rows[r], logits.data() + r * n_vocab_);
      }
    }
    // Draft: one token per step for every request still drafting.
    for (;;) {
      batch_.clear();
      rows.clear();
      for (Work& w : work) {
        if (w.done || !w.drafting) continue;
        const int32_t tok = w.task->tokens.back();
        batch_.add(tok, static_cast<int32_t>(w.held->size()), w.task->slot, true);
        w.held->push_back(tok);
        rows.push_back(&w);
      }
      if (rows.empty()) break;
      std::span<const float> logits = fwd_.run(batch_);
      for (size_t r = 0; r < rows.size(); ++r) decide(*rows[r], logits.data() + r * n_vocab_);
    }
  } catch (...) {
    // The draft's KV may be half written: forget what these slots hold.
    for (Work& w : work) {
      cache_.truncate(w.task->slot, 0);
      w.held->clear();
      w.task->tokens.clear();
      w.task->q.clear();
    }
    throw;
  }
}

}  // namespace llmesh
