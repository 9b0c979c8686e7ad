#include "server/generation.h"

namespace llmesh::api {

void ResponseChannel::push(ChannelEvent ev) {
  {
    std::lock_guard<std::mutex> l(mu_);
    q_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

std::vector<ChannelEvent> ResponseChannel::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, timeout, [&] { return !q_.empty(); });
  std::vector<ChannelEvent> out(std::make_move_iterator(q_.begin()), std::make_move_iterator(q_.end()));
  q_.clear();
  return out;
}

ChoiceSink::ChoiceSink(const Tokenizer& tok, ChoiceConfig cfg, std::shared_ptr<ResponseChannel> ch,
                       int choice, Metrics* metrics)
    : tok_(tok), cfg_(std::move(cfg)), ch_(std::move(ch)), choice_(choice), metrics_(metrics),
      decoder_(tok, /*special=*/true), stop_(cfg_.stop_strings), parser_(cfg_.parser) {
  // A forced prefix (e.g. "<tool_call>\n{\"name\": \"f\", \"arguments\": ") is part of the
  // answer: the parser sees it first, the client sees what the parser makes of it.
  if (!cfg_.prefill.empty()) {
    raw_ += cfg_.prefill;
    unsent_prefill_ = cfg_.prefill;
    auto ev = parser_.feed(cfg_.prefill);
    if (!ev.empty()) emit(std::move(ev), {});
  }
}

// When the model abandons a forced call, the parser gives the unfinished markup back as text;
// the part of it the server wrote is not the model's answer and is never shown.
void ChoiceSink::strip_prefill(std::vector<OutputEvent>& out) {
  for (auto it = out.begin(); it != out.end() && !unsent_prefill_.empty();) {
    if (it->kind != OutputEvent::Kind::Text) {
      unsent_prefill_.clear();  // the call completed: nothing of the prefix comes back
      break;
    }
    size_t n = 0;
    while (n < it->text.size() && n < unsent_prefill_.size() && it->text[n] == unsent_prefill_[n]) n++;
    if (n == 0) {
      unsent_prefill_.clear();
      break;
    }
    it->text.erase(0, n);
    unsent_prefill_.erase(0, n);
    it = it->text.empty() ? out.erase(it) : it + 1;
  }
}

void ChoiceSink::emit(std::vector<OutputEvent> out, std::vector<TokenInfo> toks, int cached_tokens) {
  strip_prefill(out);
  if (out.empty() && toks.empty() && cached_tokens < 0) return;
  ChannelEvent e;
  e.choice = choice_;
  e.out = std::move(out);
  e.tokens = std::move(toks);
  e.cached_tokens = cached_tokens;
  ch_->push(std::move(e));
}

bool ChoiceSink::on_token(const TokenEvent& ev) {
  auto now = std::chrono::steady_clock::now();
  const bool first = !have_token_;
  if (metrics_ && have_token_)
    metrics_->token_interval(std::chrono::duration<double>(now - last_token_).count());
  last_token_ = now;
  have_token_ = true;

  std::vector<TokenInfo> toks;
  if (cfg_.logprobs) {
    TokenInfo t{ev.token, tok_.token_to_piece(ev.token, true), ev.logprob, {}};
    for (auto& alt : ev.top) t.top.emplace_back(tok_.token_to_piece(alt.id, true), alt.logprob);
    toks.push_back(std::move(t));
  }
  std::string text = decoder_.push(ev.token);
  std::string safe = stop_.feed(text);
  raw_ += safe;
  std::vector<OutputEvent> out = safe.empty() ? std::vector<OutputEvent>{} : parser_.feed(safe);
  emit(std::move(out), std::move(toks), first ? ev.cached_tokens : -1);
  return !stop_.matched();
}

void ChoiceSink::on_done(const GenerationResult& r) {
  std::vector<OutputEvent> out;
  if (!stop_.matched()) {
    std::string tail = stop_.feed(decoder_.flush());
    if (!stop_.matched()) tail += stop_.finish();
    raw_ += tail;
    if (!tail.empty()) out = parser_.feed(tail);
  }
  for (auto& e : parser_.finish()) out.push_back(std::move(e));
  strip_prefill(out);
  ChannelEvent e;
  e.choice = choice_;
  e.out = std::move(out);
  e.done = true;
  e.result = r;
  if (stop_.matched()) e.stop_string = stop_.matched_string();
  e.raw_text = raw_;
  ch_->push(std::move(e));
}

}  // namespace llmesh::api
