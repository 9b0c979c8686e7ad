// The parsed form of a template: expression and statement trees. Built once by the parser,
// then walked by the Renderer for every render.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "template/jinja_value.h"

namespace llmesh::api::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// A filter or test implementation; `args` holds the input first.
using BuiltinFn = Value (*)(Renderer& r, const CallArgs& args);

struct Expr {
  enum class Kind {
    Literal,    // value
    Name,       // name
    GetAttr,    // children[0].name
    GetItem,    // children[0][children[1]]
    Slice,      // children: start, stop, step (null = omitted); only inside GetItem
    Call,       // children[0](args...)
    Filter,     // children[0] | name(args...)
    Test,       // children[0] is [not] name(args...)
    Not,
    Neg,
    Pos,
    Binary,     // op: + - * / // % ** ~ and or
    Compare,    // children[0] (ops[i] children[i+1])...
    Conditional,  // children: then, cond, else (else may be null)
    List,
    Tuple,
    Dict,       // children: k0, v0, k1, v1...
  };
  Kind kind;
  int line = 0, column = 0;
  int depth = 1;                  // height of this subtree (bounded by the parser)
  Value value;                    // Literal
  std::string name;               // Name, GetAttr, Filter, Test; Binary operator
  std::vector<std::string> ops;   // Compare operators
  std::vector<ExprPtr> children;  // operands; for Call/Filter/Test: callee/input then positional args
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr star_args, star_kwargs;  // f(*a, **k)
  BuiltinFn builtin = nullptr;      // Filter and Test: resolved at parse time
  bool negated = false;             // Test: `is not`
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    Text,        // text
    Output,      // {{ expr }}
    If,          // conditions[i] -> bodies[i]; else_body
    For,         // targets in expr [if cond]: body / else_body
    Set,         // targets (or namespace attr) = expr
    SetBlock,    // {% set name %}body{% endset %}, optional filter chain in expr
    Macro,       // {% macro name(params) %}
    CallBlock,   // {% call(params) expr %}body{% endcall %}
    FilterBlock, // {% filter f %}body{% endfilter %}
    With,        // {% with a = 1 %}body{% endwith %}
    Break,
    Continue,
  };
  Kind kind;
  int line = 0, column = 0;
  std::string text;
  ExprPtr expr, cond;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Body body, else_body;
  std::vector<std::string> targets;  // For/Set names; Set with attr: targets = {ns}, attr
  std::string attr;                  // Set ns.attr
  bool tuple_target = false;
  // Macro / CallBlock parameters and defaults (default may be null).
  std::vector<std::pair<std::string, ExprPtr>> params;
  // With: assignments
  std::vector<std::pair<std::string, ExprPtr>> assigns;
  // SetBlock / FilterBlock: filters applied to the body, as Filter exprs whose input is a
  // placeholder Name "__body__".
  ExprPtr filter_chain;
};

struct Program {
  Body body;
};

}  // namespace llmesh::api::jinja
