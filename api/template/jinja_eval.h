// Renders a parsed template: walks the statement tree, evaluates expressions with Python's
// semantics and jinja2's scoping (a for-loop body or macro gets its own scope; `set` inside
// `if` does not), and enforces the limits that keep a hostile template from a model file
// from exhausting the server.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "template/jinja_ast.h"
#include "template/jinja_value.h"

namespace llmesh::api::jinja {

struct RenderLimits {
  size_t max_output_bytes = 64u << 20;
  int max_call_depth = 64;             // nested macro calls / evaluation recursion
  uint64_t max_loop_iterations = 5'000'000;  // all loops of one render together
};

// The `loop` variable of a for loop.
struct LoopObj : Object {
  std::vector<Value> items;
  int64_t index0 = 0, length = 0;
  int depth0 = 0;
  std::vector<Value> changed_last;  // loop.changed(...) state
  bool changed_seen = false;
};

class Renderer {
 public:
  Renderer(const Program& program, const RenderLimits& limits) : program_(program), limits_(limits) {}

  // Variables visible to the template (messages, tools, ...) and global functions.
  void set_global(const std::string& name, Value v) { globals_[name] = std::move(v); }
  std::string render();

  // For builtins: call a callable value, apply a filter or test by name at run time
  // (map('upper'), select('odd')), and check the output-size budget of built strings.
  Value call_value(const Value& fn, const CallArgs& args);
  Value apply_filter(const std::string& name, const Value& input, const CallArgs& extra);
  bool apply_test(const std::string& name, const Value& input, const CallArgs& extra);
  void check_size(size_t bytes);
  void count_iterations(uint64_t n);
  // Attribute lookup as jinja2's sandboxed getattr: methods first, then dict items.
  Value get_attr(const Value& obj, const std::string& name);
  Value get_item(const Value& obj, const Value& key);
  const RenderLimits& limits() const { return limits_; }
  // namespace() objects can be made to contain themselves; they are emptied after the
  // render so such cycles do not leak.
  void adopt_namespace(std::shared_ptr<DictObj> ns) { namespaces_.push_back(std::move(ns)); }

  // Renders a macro body with its own scope (used by the macro callable).
  struct MacroDef;
  Value call_macro(const MacroDef& m, const CallArgs& args, const Value& caller);

  struct MacroDef {
    const Node* node;
  };

 private:
  // Few variables per scope: a flat list beats hashing.
  struct Scope {
    std::vector<std::pair<std::string, Value>> vars;
  };
  enum class Flow { Normal, Break, Continue };

  const Program& program_;
  RenderLimits limits_;
  std::unordered_map<std::string, Value> globals_;
  std::vector<Scope> scopes_;  // innermost last; scopes_[0] is the template's top level
  size_t scope_floor_ = 0;     // inside a macro: scopes below this (but 0) are not visible
  size_t work_bytes_ = 0;
  std::vector<std::shared_ptr<DictObj>> namespaces_;
  std::string* out_ = nullptr;
  int depth_ = 0;
  uint64_t iterations_ = 0;

  Flow exec_body(const Body& body);
  Flow exec(const Node& n);
  Flow exec_for(const Node& n);
  void exec_set(const Node& n);
  Value eval(const Expr& e);
  Value eval_inner(const Expr& e);
  Value eval_binary(const Expr& e);
  Value eval_compare(const Expr& e);
  Value eval_call(const Expr& e);
  Value eval_builtin(const Expr& e);
  void collect_args(const Expr& e, size_t first, CallArgs& args);
  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v);
  void assign_targets(const Node& n, const Value& v);
  std::string render_to_string(const Body& body);
  void write(const std::string& s);
};

// Binary arithmetic with Python semantics ("+", "-", "*", "/", "//", "%", "**").
Value binary_op(Renderer& r, const std::string& op, const Value& a, const Value& b);
// Python's `x in container`.
bool contains(const Value& container, const Value& item);
// Python str % args.
std::string percent_format(Renderer& r, const std::string& fmt, const Value& args);
// A method of a str, list or dict value (`s.strip`, `d.items`); Undefined when there is none.
Value bound_method(const Value& obj, const std::string& name);
// Iterating a value as Python does (dict -> keys, str -> characters).
std::vector<Value> iterate(const Value& v);

}  // namespace llmesh::api::jinja
