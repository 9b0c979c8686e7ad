// A BatchModel for API tests that says what a script tells it to, through the real scheduler,
// tokenizer, chat template, output parser and HTTP server. Each rule maps text found in the
// last turn before the assistant's (a user message or tool results) to an answer; the model
// then produces that answer token by token (continuing correctly after any prefix the server
// put in its mouth, such as a forced tool call), and ends it with the end-of-turn token.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scheduler/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::test {

struct ScriptRule {
  std::string when;  // substring of the last turn ("" matches anything)
  std::string say;   // the answer, in the model's own format (<think>, <tool_call> ...)
};

class ScriptedBatchModel : public BatchModel {
 public:
  // turn_marker: text that opens a turn ("<|im_start|>"); assistant_marker: the generation
  // prompt ("<|im_start|>assistant\n"); end_token: the token that ends an answer.
  ScriptedBatchModel(const Tokenizer& tok, std::vector<ScriptRule> rules, int n_ctx, int n_slots,
                     std::string turn_marker = "<|im_start|>",
                     std::string assistant_marker = "<|im_start|>assistant\n",
                     std::string end_text = "<|im_end|>");
  static std::vector<ScriptRule> rules_from_json(const nlohmann::json& j);

  int n_vocab() const override { return tok_.n_vocab(); }
  int n_ctx() const override { return n_ctx_; }
  int n_slots() const override { return n_slots_; }
  std::span<const float> run(const Batch& batch) override;
  void truncate(int slot, int n) override;

  // The token the script wants after the slot's first n tokens.
  int32_t next_token(int slot, int n) const;

 private:
  const Tokenizer& tok_;
  std::vector<ScriptRule> rules_;
  int n_ctx_, n_slots_;
  std::string turn_marker_, assistant_marker_, end_text_;
  int32_t end_token_ = -1;
  std::vector<std::vector<int32_t>> slots_;  // tokens each slot holds, by position
  std::vector<float> logits_;
};

}  // namespace llmesh::test
