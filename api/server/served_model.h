// The model a node serves, as the API sees it: its name(s), tokenizer, chat template, the
// tool-call and thinking formats its template implies, and the scheduler that runs it.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "output/output_parser.h"
#include "scheduler/scheduler.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::api {

struct ServedModel {
  std::string id;                    // the name clients use ("model": ...)
  std::vector<std::string> aliases;  // more accepted names
  int64_t created = 0;               // unix seconds (model file time)
  const Tokenizer* tokenizer = nullptr;
  Scheduler* scheduler = nullptr;
  ChatTemplate chat_template = ChatTemplate::chatml();
  bool template_has_tools = false;   // the template renders `tools` itself
  ToolFormat tool_format = ToolFormat::Hermes;  // how the model writes tool calls
  bool thinking = false;             // the model thinks in <think>...</think>
  std::vector<int32_t> stop_tokens;  // end-of-generation tokens
  nlohmann::json info;               // extra facts for /v1/models (architecture, quantization...)
  // Non-empty: why the model cannot run a request right now (a split model with no route over
  // all its layers); requests get 503 with that reason and Retry-After. Null: always available.
  std::function<std::string()> unavailable;
  // More Prometheus text appended to /metrics (a split model's pipeline and stage counters).
  std::function<std::string()> extra_metrics;
  // Speculative decoding's proposer, as `serve` describes it ("draft x.gguf (window up to 8,
  // adaptive)"); empty when off. /metrics then has llmesh_spec_* and /health "speculative".
  std::string speculative;
  // A mixture-of-experts shard (serve --moe-plan): requests go to the session's home shard first
  // (ModelRouter::shard_candidates). `expert_shard_status` describes it for /health.
  bool expert_shard = false;
  std::function<nlohmann::json()> expert_shard_status;

  bool answers_to(const std::string& name) const;
  int n_ctx() const { return scheduler->n_ctx(); }

  // Derives template_has_tools, tool_format, thinking and stop_tokens from the template and
  // tokenizer.
  void describe_from_template();

  // Prompt tokens for a rendered chat: specials parsed, BOS added when the tokenizer wants one
  // and the template did not write it.
  std::vector<int32_t> tokenize_prompt(const std::string& text) const;
};

}  // namespace llmesh::api
