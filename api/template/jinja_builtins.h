// jinja2's builtin filters and tests, the global functions templates call (range,
// namespace, dict, joiner) and Hugging Face's additions (raise_exception, strftime_now).
#pragma once
#include "template/jinja_eval.h"

namespace llmesh::api::jinja {

// Thrown by raise_exception(msg): the template refuses the conversation.
struct TemplateRaised : JinjaError {
  using JinjaError::JinjaError;
};

void install_globals(Renderer& r);

}  // namespace llmesh::api::jinja
