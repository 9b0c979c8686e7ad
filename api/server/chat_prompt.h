// From a chat request (messages already in OpenAI's shape, whichever API they came in by) to
// prompt tokens: the model's chat template renders them; tools the template cannot show are
// described in the system prompt; a forced tool call (tool_choice) is started in the model's
// own format so the model can only complete it.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "output/output_parser.h"
#include "server/request_flow.h"
#include "server/served_model.h"

namespace llmesh::api {

enum class ToolChoice { Auto, None, Required, Named };

struct ChatRequest {
  ojson messages = ojson::array();  // [{role, content (string), tool_calls, tool_call_id, name, reasoning_content}]
  ojson tools;                      // null or OpenAI tools array
  ToolChoice tool_choice = ToolChoice::Auto;
  std::string forced_tool;          // for Named
  std::optional<bool> enable_thinking;
  ojson template_kwargs = ojson::object();  // extra template variables from the client
};

struct ChatPrompt {
  std::string text;             // rendered prompt, prefill included
  std::vector<int32_t> tokens;
  std::string prefill;          // the part of the answer the prompt already holds
  OutputParserOptions parser;
};

// Throws ApiError (400) for a conversation the template refuses, naming the template's reason.
ChatPrompt build_chat_prompt(const ServedModel& model, const ChatRequest& req);

// Both chat APIs: renders the conversation into `gr` (prompt, token budget, stop tokens) and
// `cfg` (parser, prefill), then submits the one choice.
Submission submit_chat(const ApiContext& ctx, const ChatRequest& cr, GenerationRequest gr, ChoiceConfig cfg,
                       std::optional<int64_t> max_tokens, bool clamp_max_tokens = false);

}  // namespace llmesh::api
