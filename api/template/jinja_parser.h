// Recursive-descent parser for the Jinja subset chat templates use, following jinja2's
// grammar and operator precedence. Filters and tests are resolved here, so an unknown one
// is a parse error (as in jinja2, which checks them at compile time).
#pragma once
#include <memory>
#include <string>

#include "template/jinja_ast.h"

namespace llmesh::api::jinja {

// Throws JinjaError with line and column.
std::unique_ptr<Program> parse_template(const std::string& source);

// Looked up by the parser; defined with the builtins.
BuiltinFn find_filter(const std::string& name);
BuiltinFn find_test(const std::string& name);

}  // namespace llmesh::api::jinja
