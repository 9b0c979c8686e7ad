#include "scripted_model.h"

#include <stdexcept>

namespace llmesh::test {

ScriptedBatchModel::ScriptedBatchModel(const Tokenizer& tok, std::vector<ScriptRule> rules, int n_ctx,
                                       int n_slots, std::string turn_marker, std::string assistant_marker,
                                       std::string end_text)
    : tok_(tok), rules_(std::move(rules)), n_ctx_(n_ctx), n_slots_(n_slots), turn_marker_(std::move(turn_marker)),
      assistant_marker_(std::move(assistant_marker)), end_text_(std::move(end_text)), slots_(n_slots) {
  auto ids = tok_.encode(end_text_, false, true);
  end_token_ = ids.size() == 1 ? ids[0] : tok_.eos();
}

std::vector<ScriptRule> ScriptedBatchModel::rules_from_json(const nlohmann::json& j) {
  std::vector<ScriptRule> out;
  for (const auto& r : j) out.push_back({r.value("when", ""), r.at("say").get<std::string>()});
  return out;
}

int32_t ScriptedBatchModel::next_token(int slot, int n) const {
  std::vector<int32_t> ids(slots_[slot].begin(), slots_[slot].begin() + n);
  std::string text = tok_.decode(ids, /*special=*/true);
  size_t a = text.rfind(assistant_marker_);
  if (a == std::string::npos) return end_token_;
  std::string before = text.substr(0, a);
  std::string generated = text.substr(a + assistant_marker_.size());
  // The last turn before the answer: what the rules look at.
  size_t t = before.rfind(turn_marker_);
  std::string last_turn = t == std::string::npos ? before : before.substr(t);
  const ScriptRule* rule = nullptr;
  for (const auto& r : rules_)
    if (last_turn.find(r.when) != std::string::npos) {
      rule = &r;
      break;
    }
  if (!rule) return end_token_;
  // A template that switched thinking off wrote an empty think block for the model.
  const std::string empty_think = "<think>\n\n</think>\n\n";
  std::string answer = rule->say;
  if (generated.rfind(empty_think, 0) == 0 && answer.rfind(empty_think, 0) != 0) answer = empty_think + answer;
  if (answer.compare(0, generated.size(), generated) != 0 || generated.size() >= answer.size()) return end_token_;
  auto rest = tok_.encode(answer.substr(generated.size()), false, true);
  return rest.empty() ? end_token_ : rest[0];
}

std::span<const float> ScriptedBatchModel::run(const Batch& b) {
  int n_out = 0;
  for (int i = 0; i < b.n_tokens(); i++) {
    int s = b.seq[i], p = b.pos[i];
    if (s < 0 || s >= n_slots_ || p < 0 || p >= n_ctx_) throw std::invalid_argument("scripted model: bad batch");
    auto& v = slots_[s];
    if (p > static_cast<int>(v.size())) throw std::invalid_argument("scripted model: position gap");
    v.resize(p);
    v.push_back(b.tokens[i]);
    n_out += b.output[i];
  }
  const int V = n_vocab();
  logits_.assign(static_cast<size_t>(n_out) * V, 0.0f);
  int o = 0;
  for (int i = 0; i < b.n_tokens(); i++) {
    if (!b.output[i]) continue;
    int32_t next = next_token(b.seq[i], b.pos[i] + 1);
    if (next >= 0) logits_[static_cast<size_t>(o) * V + next] = 40.0f;
    o++;
  }
  return logits_;
}

void ScriptedBatchModel::truncate(int slot, int n) {
  if (slot < 0 || slot >= n_slots_) throw std::out_of_range("scripted model: bad slot");
  if (n < static_cast<int>(slots_[slot].size())) slots_[slot].resize(n);
}

}  // namespace llmesh::test
