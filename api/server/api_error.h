// Errors the API answers with: an HTTP status plus the fields both error shapes need.
// OpenAI: {"error": {"message", "type", "param", "code"}}.
// Anthropic: {"type": "error", "error": {"type", "message"}}.
#pragma once
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace llmesh::api {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = "",
           std::string code = "")
      : std::runtime_error(message), status(status), type(std::move(type)),
        param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string type;   // OpenAI type, e.g. "invalid_request_error"
  std::string param;  // offending field, e.g. "messages[2].content"
  std::string code;   // e.g. "context_length_exceeded", "model_not_found"
};

// Shorthands for the usual cases.
ApiError bad_request(const std::string& message, const std::string& param = "",
                     const std::string& code = "");

enum class ApiFlavor { OpenAI, Anthropic };

// The body for an error in the given API's shape.
nlohmann::json error_body(const ApiError& e, ApiFlavor flavor);
// Anthropic's error type for a status ("invalid_request_error", "authentication_error",
// "not_found_error", "rate_limit_error", "api_error", "overloaded_error", "request_too_large").
std::string anthropic_error_type(int status);

// Serialises JSON for the wire: invalid UTF-8 from a model is replaced, never thrown on.
std::string dump_json(const nlohmann::json& j);
std::string dump_json(const nlohmann::ordered_json& j);

}  // namespace llmesh::api
