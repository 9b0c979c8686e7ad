// The HTTP endpoints. Each handler validates the whole request before anything is queued and
// throws ApiError for a bad one; the server turns that into the API's error shape.
#pragma once
#include <httplib.h>

#include "server/request_flow.h"

namespace llmesh::api {

// OpenAI
void handle_models(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res);
void handle_model(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res);
void handle_chat_completions(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res);
void handle_completions(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res);
// Anthropic
void handle_messages(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res);
void handle_count_tokens(const ApiContext& ctx, const httplib::Request& req, httplib::Response& res);

// Shared by the streaming handlers: runs `body` as the response's chunked content, with
// writes that report whether the client is still there; cancels generation if it is not.
using StreamBody = std::function<void(const std::function<bool(const std::string&)>& write)>;
void stream_response(httplib::Response& res, const char* content_type, StreamBody body);

// Sampling fields both APIs share (temperature, top_p, top_k, seed, penalties, logit_bias).
SamplingParams sampling_from(const json& body, int n_vocab, std::vector<std::pair<int32_t, float>>* bias);

}  // namespace llmesh::api
