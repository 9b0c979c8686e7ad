#include "template/jinja_eval.h"

#include <cmath>
#include <optional>

#include "template/jinja_parser.h"

namespace llmesh::api::jinja {

namespace {

// Total bytes of strings built by one render (output, macro results, concatenations): a
// cap on work, so a loop that keeps doubling a string cannot run for minutes.
constexpr size_t kMaxWorkBytes = size_t(1) << 30;

[[noreturn]] void undefined_error(const Value& v, const std::string& fallback = "value is undefined") {
  const std::string& hint = v.undefined_hint();
  throw JinjaError(hint.empty() ? fallback : hint);
}

// A macro defined with {% macro %}; calling it renders its body.
struct MacroCallable : CallableObj {
  Renderer::MacroDef def;
  Value caller;  // for the `caller` of a call block
  std::string repr() const override { return "<Macro '" + name + "'>"; }
  Value call(Renderer& r, const CallArgs& args) override { return r.call_macro(def, args, caller); }
};

// `loop.cycle(...)` and `loop.changed(...)`.
struct LoopMethod : CallableObj {
  std::shared_ptr<LoopObj> loop;
  Value call(Renderer&, const CallArgs& args) override {
    if (name == "cycle") {
      if (args.positional.empty()) throw JinjaError("no items for cycling given");
      return args.positional[size_t(loop->index0) % args.positional.size()];
    }
    bool changed = !loop->changed_seen || loop->changed_last.size() != args.positional.size();
    if (!changed)
      for (size_t i = 0; i < args.positional.size(); ++i)
        if (!values_equal(args.positional[i], loop->changed_last[i])) changed = true;
    loop->changed_seen = true;
    loop->changed_last = args.positional;
    return Value::boolean(changed);
  }
};

// Python slice semantics on a sequence of `n` elements.
std::vector<int64_t> slice_indices(int64_t n, const Value& start_v, const Value& stop_v, const Value& step_v) {
  auto as_index = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_int() && !v.is_bool())
      throw JinjaError(std::string("slice ") + what + " must be an integer or None, not " + v.type_name());
    return v.as_int();
  };
  int64_t step = as_index(step_v, "step").value_or(1);
  if (step == 0) throw JinjaError("slice step cannot be zero");
  auto start_o = as_index(start_v, "indices");
  auto stop_o = as_index(stop_v, "indices");
  int64_t start, stop;
  auto clamp = [&](int64_t i, int64_t lo, int64_t hi) {
    if (i < 0) i += n;
    return i < lo ? lo : (i > hi ? hi : i);
  };
  if (step > 0) {
    start = start_o ? clamp(*start_o, 0, n) : 0;
    stop = stop_o ? clamp(*stop_o, 0, n) : n;
  } else {
    start = start_o ? clamp(*start_o, -1, n - 1) : n - 1;
    stop = stop_o ? clamp(*stop_o, -1, n - 1) : -1;
  }
  std::vector<int64_t> idx;
  if (step > 0)
    for (int64_t i = start; i < stop; i += step) idx.push_back(i);
  else
    for (int64_t i = start; i > stop; i += step) idx.push_back(i);
  return idx;
}

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

}  // namespace

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: return v.items();
    case Value::Kind::Dict: {
      std::vector<Value> keys;
      keys.reserve(v.dict_obj().entries.size());
      for (auto& e : v.dict_obj().entries) keys.push_back(e.first);
      return keys;
    }
    case Value::Kind::String: {
      std::vector<Value> chars;
      const std::string& s = v.str();
      for (size_t i = 0; i < s.size();) {
        size_t len = 1;
        while (i + len < s.size() && (static_cast<unsigned char>(s[i + len]) & 0xc0) == 0x80) ++len;
        chars.push_back(Value::string(s.substr(i, len)));
        i += len;
      }
      return chars;
    }
    case Value::Kind::Loop: return v.loop_obj().items;
    default: throw JinjaError(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::Undefined: return false;
    case Value::Kind::String:
      if (!item.is_string())
        throw JinjaError(std::string("'in <string>' requires string as left operand, not ") + item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::List:
      for (auto& x : container.items())
        if (values_equal(x, item)) return true;
      return false;
    case Value::Kind::Dict: return container.dict_obj().find(item) != nullptr;
    default: throw JinjaError(std::string("argument of type '") + container.type_name() + "' is not iterable");
  }
}

Value binary_op(Renderer& r, const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  auto type_error = [&]() -> Value {
    throw JinjaError("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
  };
  bool nums = a.is_number() && b.is_number();
  bool floats = nums && (a.is_float() || b.is_float());
  char c = op[0];
  if (op == "+") {
    if (nums) {
      if (floats) return Value::floating(a.as_float() + b.as_float());
      int64_t out;
      if (__builtin_add_overflow(a.as_int(), b.as_int(), &out)) throw JinjaError("integer overflow");
      return Value::integer(out);
    }
    if (a.is_string() && b.is_string()) {
      r.check_size(a.str().size() + b.str().size());
      return Value::string(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      std::vector<Value> items = a.items();
      r.check_size((items.size() + b.items().size()) * sizeof(Value));
      items.insert(items.end(), b.items().begin(), b.items().end());
      return Value::list(std::move(items), a.is_tuple());
    }
    if (a.is_string()) throw JinjaError(std::string("can only concatenate str (not \"") + b.type_name() + "\") to str");
    if (a.is_list() && !a.is_tuple())
      throw JinjaError(std::string("can only concatenate list (not \"") + b.type_name() + "\") to list");
    return type_error();
  }
  if (op == "-") {
    if (!nums) return type_error();
    if (floats) return Value::floating(a.as_float() - b.as_float());
    int64_t out;
    if (__builtin_sub_overflow(a.as_int(), b.as_int(), &out)) throw JinjaError("integer overflow");
    return Value::integer(out);
  }
  if (op == "*") {
    if (nums) {
      if (floats) return Value::floating(a.as_float() * b.as_float());
      int64_t out;
      if (__builtin_mul_overflow(a.as_int(), b.as_int(), &out)) throw JinjaError("integer overflow");
      return Value::integer(out);
    }
    const Value* seq = (a.is_string() || a.is_list()) ? &a : &b;
    const Value* count = seq == &a ? &b : &a;
    if ((seq->is_string() || seq->is_list()) && (count->is_int() || count->is_bool())) {
      int64_t n = std::max<int64_t>(0, count->as_int());
      if (seq->is_string()) {
        r.check_size(seq->str().size() * size_t(n));
        std::string out;
        out.reserve(seq->str().size() * size_t(n));
        for (int64_t i = 0; i < n; ++i) out += seq->str();
        return Value::string(std::move(out));
      }
      r.check_size(seq->items().size() * size_t(n) * sizeof(Value));
      std::vector<Value> out;
      for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq->items().begin(), seq->items().end());
      return Value::list(std::move(out), seq->is_tuple());
    }
    return type_error();
  }
  if (op == "/") {
    if (!nums) return type_error();
    if (b.as_float() == 0) throw JinjaError("division by zero");
    return Value::floating(a.as_float() / b.as_float());
  }
  if (op == "//" || (c == '%' && nums)) {
    if (!nums) return type_error();
    if (b.as_float() == 0) throw JinjaError(op == "//" ? "integer division or modulo by zero" : "modulo by zero");
    if (floats) {
      double x = a.as_float(), y = b.as_float();
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      if (op == "%") return Value::floating(m);
      return Value::floating(std::floor(x / y));
    }
    int64_t x = a.as_int(), y = b.as_int();
    if (x == INT64_MIN && y == -1) throw JinjaError("integer overflow");
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) {
      --q;
      m += y;
    }
    return Value::integer(op == "//" ? q : m);
  }
  if (op == "%") {
    if (a.is_string()) return Value::string(percent_format(r, a.str(), b));
    return type_error();
  }
  if (op == "**") {
    if (!nums) return type_error();
    if (!floats && b.as_int() >= 0) {
      int64_t base = a.as_int(), e = b.as_int(), result = 1;
      while (e > 0) {
        if (e & 1)
          if (__builtin_mul_overflow(result, base, &result)) throw JinjaError("integer overflow");
        e >>= 1;
        if (e > 0 && __builtin_mul_overflow(base, base, &base)) throw JinjaError("integer overflow");
      }
      return Value::integer(result);
    }
    if (a.as_float() == 0 && b.as_float() < 0) throw JinjaError("0.0 cannot be raised to a negative power");
    return Value::floating(std::pow(a.as_float(), b.as_float()));
  }
  return type_error();
}

// ---- Renderer ----

std::string Renderer::render() {
  std::string out;
  out_ = &out;
  scopes_.clear();
  scopes_.emplace_back();
  depth_ = 0;
  iterations_ = 0;
  work_bytes_ = 0;
  auto release = [&] {
    out_ = nullptr;
    scopes_.clear();
    for (auto& ns : namespaces_) ns->entries.clear();
    namespaces_.clear();
  };
  try {
    exec_body(program_.body);
  } catch (...) {
    release();
    throw;
  }
  release();
  return out;
}

void Renderer::check_size(size_t bytes) {
  if (bytes > limits_.max_output_bytes)
    throw JinjaError("template output exceeds " + std::to_string(limits_.max_output_bytes >> 20) + " MiB");
  work_bytes_ += bytes;
  if (work_bytes_ > kMaxWorkBytes) throw JinjaError("template does too much work (string building budget spent)");
}

void Renderer::count_iterations(uint64_t n) {
  iterations_ += n;
  if (iterations_ > limits_.max_loop_iterations)
    throw JinjaError("template exceeds " + std::to_string(limits_.max_loop_iterations) + " loop iterations");
}

void Renderer::write(const std::string& s) {
  if (out_->size() + s.size() > limits_.max_output_bytes)
    throw JinjaError("template output exceeds " + std::to_string(limits_.max_output_bytes >> 20) + " MiB");
  work_bytes_ += s.size();
  if (work_bytes_ > kMaxWorkBytes) throw JinjaError("template does too much work (string building budget spent)");
  out_->append(s);
}

std::string Renderer::render_to_string(const Body& body) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  try {
    exec_body(body);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return buf;
}

Value Renderer::lookup(const std::string& name) const {
  for (size_t i = scopes_.size(); i-- > scope_floor_;)
    for (auto& [k, v] : scopes_[i].vars)
      if (k == name) return v;
  if (scope_floor_ > 0)
    for (auto& [k, v] : scopes_[0].vars)
      if (k == name) return v;
  auto it = globals_.find(name);
  if (it != globals_.end()) return it->second;
  return Value::undefined("'" + name + "' is undefined");
}

void Renderer::assign(const std::string& name, Value v) {
  auto& vars = scopes_.back().vars;
  for (auto& [k, old] : vars)
    if (k == name) {
      old = std::move(v);
      return;
    }
  vars.emplace_back(name, std::move(v));
}

void Renderer::assign_targets(const Node& n, const Value& v) {
  if (!n.tuple_target) {
    assign(n.targets[0], v);
    return;
  }
  std::vector<Value> items = iterate(v);
  if (items.size() < n.targets.size())
    throw JinjaError("not enough values to unpack (expected " + std::to_string(n.targets.size()) + ", got " +
                     std::to_string(items.size()) + ")");
  if (items.size() > n.targets.size())
    throw JinjaError("too many values to unpack (expected " + std::to_string(n.targets.size()) + ")");
  for (size_t i = 0; i < items.size(); ++i) assign(n.targets[i], items[i]);
}

Renderer::Flow Renderer::exec_body(const Body& body) {
  for (auto& n : body) {
    Flow f = exec(*n);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Renderer::Flow Renderer::exec(const Node& n) {
  try {
    switch (n.kind) {
      case Node::Kind::Text: write(n.text); return Flow::Normal;
      case Node::Kind::Output: {
        Value v = eval(*n.expr);
        if (v.is_string()) write(v.str());
        else write(v.to_str());
        return Flow::Normal;
      }
      case Node::Kind::If:
        for (size_t i = 0; i < n.conditions.size(); ++i)
          if (eval(*n.conditions[i]).truthy()) return exec_body(n.bodies[i]);
        return exec_body(n.else_body);
      case Node::Kind::For: return exec_for(n);
      case Node::Kind::Set: exec_set(n); return Flow::Normal;
      case Node::Kind::SetBlock:
      case Node::Kind::FilterBlock: {
        Value body = Value::string(render_to_string(n.body));
        if (n.filter_chain) {
          scopes_.emplace_back();
          assign("__body__", body);
          try {
            body = eval(*n.filter_chain);
          } catch (...) {
            scopes_.pop_back();
            throw;
          }
          scopes_.pop_back();
        }
        if (n.kind == Node::Kind::SetBlock) assign(n.targets[0], body);
        else write(body.to_str());
        return Flow::Normal;
      }
      case Node::Kind::Macro: {
        auto m = std::make_shared<MacroCallable>();
        m->name = n.text;
        m->def.node = &n;
        assign(n.text, Value::callable(m));
        return Flow::Normal;
      }
      case Node::Kind::CallBlock: {
        auto caller = std::make_shared<MacroCallable>();
        caller->name = "caller";
        caller->def.node = &n;
        const Expr& call = *n.expr;
        Value fn = eval(*call.children[0]);
        CallArgs args;
        collect_args(call, 1, args);
        if (fn.is_callable()) {
          // Hand the caller to the macro being called.
          if (auto* m = dynamic_cast<MacroCallable*>(&fn.fn())) {
            auto bound = std::make_shared<MacroCallable>(*m);
            bound->caller = Value::callable(caller);
            fn = Value::callable(bound);
          }
        }
        Value v = call_value(fn, args);
        write(v.to_str());
        return Flow::Normal;
      }
      case Node::Kind::With: {
        std::vector<std::pair<std::string, Value>> values;
        for (auto& [name, e] : n.assigns) values.emplace_back(name, eval(*e));
        scopes_.emplace_back();
        for (auto& [name, v] : values) assign(name, v);
        Flow f;
        try {
          f = exec_body(n.body);
        } catch (...) {
          scopes_.pop_back();
          throw;
        }
        scopes_.pop_back();
        return f;
      }
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
    }
  } catch (JinjaError& e) {
    if (e.line == 0) {
      e.line = n.line;
      e.column = n.column;
    }
    throw;
  }
  return Flow::Normal;
}

Renderer::Flow Renderer::exec_for(const Node& n) {
  Value seq = eval(*n.expr);
  std::vector<Value> items = iterate(seq);
  count_iterations(items.size() / 16);  // materialising is work too
  if (n.cond) {
    std::vector<Value> kept;
    for (auto& item : items) {
      count_iterations(1);
      scopes_.emplace_back();
      assign_targets(n, item);
      bool keep;
      try {
        keep = eval(*n.cond).truthy();
      } catch (...) {
        scopes_.pop_back();
        throw;
      }
      scopes_.pop_back();
      if (keep) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec_body(n.else_body);
  auto loop = std::make_shared<LoopObj>();
  // depth stays 1: it only grows in recursive loops, which are not supported.
  loop->length = int64_t(items.size());
  loop->items = std::move(items);
  Value loop_value = Value::loop(loop);
  for (size_t i = 0; i < loop->items.size(); ++i) {
    count_iterations(1);
    loop->index0 = int64_t(i);
    scopes_.emplace_back();
    Flow f;
    try {
      assign_targets(n, loop->items[i]);
      assign("loop", loop_value);
      f = exec_body(n.body);
    } catch (...) {
      scopes_.pop_back();
      throw;
    }
    scopes_.pop_back();
    if (f == Flow::Break) break;
  }
  return Flow::Normal;
}

void Renderer::exec_set(const Node& n) {
  Value v = eval(*n.expr);
  if (!n.attr.empty()) {
    Value ns = lookup(n.targets[0]);
    if (!ns.is_namespace()) throw JinjaError("cannot assign attribute on non-namespace object");
    ns.mutable_dict().set(Value::string(n.attr), std::move(v));
    return;
  }
  assign_targets(n, v);
}

Value Renderer::call_macro(const MacroDef& m, const CallArgs& args, const Value& caller) {
  if (depth_ + 1 > limits_.max_call_depth) throw JinjaError("maximum macro call depth exceeded");
  const Node& node = *m.node;
  ++depth_;
  size_t saved_floor = scope_floor_;
  size_t saved_size = scopes_.size();
  scope_floor_ = scopes_.size();
  scopes_.emplace_back();
  auto restore = [&] {
    scopes_.resize(saved_size);
    scope_floor_ = saved_floor;
    --depth_;
  };
  try {
    std::vector<Value> varargs;
    for (size_t i = 0; i < args.positional.size(); ++i) {
      if (i < node.params.size()) assign(node.params[i].first, args.positional[i]);
      else varargs.push_back(args.positional[i]);
    }
    auto kwargs = std::make_shared<DictObj>();
    Value caller_value = caller;
    for (auto& [k, v] : args.keyword) {
      bool is_param = false;
      for (auto& p : node.params)
        if (p.first == k) is_param = true;
      if (is_param) assign(k, v);
      else if (k == "caller") caller_value = v;
      else kwargs->entries.emplace_back(Value::string(k), v);
    }
    for (size_t i = args.positional.size(); i < node.params.size(); ++i) {
      auto& [pname, def] = node.params[i];
      if (args.kw(pname)) continue;
      if (def) assign(pname, eval(*def));
      else assign(pname, Value::undefined("parameter '" + pname + "' was not provided"));
    }
    assign("varargs", Value::list(std::move(varargs), true));
    assign("kwargs", Value::dict(kwargs));
    if (!caller_value.is_undefined()) assign("caller", caller_value);
    std::string out = render_to_string(node.body);
    restore();
    return Value::string(std::move(out));
  } catch (...) {
    restore();
    throw;
  }
}

Value Renderer::call_value(const Value& fn, const CallArgs& args) {
  if (fn.is_callable()) return fn.fn().call(*this, args);
  if (fn.is_undefined()) undefined_error(fn, "undefined value is not callable");
  throw JinjaError(std::string("'") + fn.type_name() + "' object is not callable");
}

Value Renderer::apply_filter(const std::string& name, const Value& input, const CallArgs& extra) {
  BuiltinFn f = find_filter(name);
  if (!f) throw JinjaError("no filter named '" + name + "'");
  CallArgs args;
  args.positional.reserve(extra.positional.size() + 1);
  args.positional.push_back(input);
  args.positional.insert(args.positional.end(), extra.positional.begin(), extra.positional.end());
  args.keyword = extra.keyword;
  return f(*this, args);
}

bool Renderer::apply_test(const std::string& name, const Value& input, const CallArgs& extra) {
  BuiltinFn f = find_test(name);
  if (!f) throw JinjaError("no test named '" + name + "'");
  CallArgs args;
  args.positional.push_back(input);
  args.positional.insert(args.positional.end(), extra.positional.begin(), extra.positional.end());
  args.keyword = extra.keyword;
  return f(*this, args).truthy();
}

Value Renderer::get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::Undefined: undefined_error(obj);
    case Value::Kind::Dict: {
      Value m = bound_method(obj, name);
      if (!m.is_undefined() || !m.undefined_hint().empty()) return m;
      if (const Value* v = obj.dict_obj().find(std::string_view(name))) return *v;
      return Value::undefined("'dict object' has no attribute '" + name + "'");
    }
    case Value::Kind::Namespace:
      if (const Value* v = obj.dict_obj().find(std::string_view(name))) return *v;
      return Value::undefined("'Namespace' object has no attribute '" + name + "'");
    case Value::Kind::Loop: {
      auto& l = obj.loop_obj();
      int64_t i = l.index0, n = l.length;
      if (name == "index") return Value::integer(i + 1);
      if (name == "index0") return Value::integer(i);
      if (name == "revindex") return Value::integer(n - i);
      if (name == "revindex0") return Value::integer(n - i - 1);
      if (name == "first") return Value::boolean(i == 0);
      if (name == "last") return Value::boolean(i == n - 1);
      if (name == "length") return Value::integer(n);
      if (name == "depth") return Value::integer(l.depth0 + 1);
      if (name == "depth0") return Value::integer(l.depth0);
      if (name == "previtem")
        return i > 0 ? l.items[size_t(i - 1)] : Value::undefined("there is no previous item");
      if (name == "nextitem")
        return i + 1 < n ? l.items[size_t(i + 1)] : Value::undefined("there is no next item");
      if (name == "cycle" || name == "changed") {
        auto m = std::make_shared<LoopMethod>();
        m->name = name;
        // The loop object is owned by the Value; share it with the method.
        m->loop = obj.loop_ptr();
        return Value::callable(m);
      }
      return Value::undefined("'LoopContext' object has no attribute '" + name + "'");
    }
    default: {
      Value m = bound_method(obj, name);
      if (!m.is_undefined() || !m.undefined_hint().empty()) return m;
      return Value::undefined(std::string("'") + obj.type_name() + " object' has no attribute '" + name + "'");
    }
  }
}

Value Renderer::get_item(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::Undefined: undefined_error(obj);
    case Value::Kind::Dict:
      if (const Value* v = obj.dict_obj().find(key)) return *v;
      break;
    case Value::Kind::List:
      if (key.is_int() || key.is_bool()) {
        int64_t n = int64_t(obj.items().size()), i = key.as_int();
        if (i < 0) i += n;
        if (i >= 0 && i < n) return obj.items()[size_t(i)];
        return Value::undefined(std::string(obj.type_name()) + " index out of range");
      }
      break;
    case Value::Kind::String:
      if (key.is_int() || key.is_bool()) {
        const std::string& s = obj.str();
        int64_t i = key.as_int();
        if (is_ascii(s)) {
          int64_t n = int64_t(s.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return Value::string(std::string(1, s[size_t(i)]));
        } else {
          auto cps = utf8_decode(s);
          int64_t n = int64_t(cps.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) {
            std::string out;
            utf8_append(out, cps[size_t(i)]);
            return Value::string(out);
          }
        }
        return Value::undefined("string index out of range");
      }
      break;
    case Value::Kind::Namespace:
    case Value::Kind::Loop:
      if (key.is_string()) return get_attr(obj, key.str());
      break;
    default: break;
  }
  if (key.is_string() && obj.kind() != Value::Kind::None) {
    Value m = bound_method(obj, key.str());
    if (!m.is_undefined() || !m.undefined_hint().empty()) return m;
  }
  return Value::undefined(std::string("'") + obj.type_name() + " object' has no attribute " + key.repr());
}

void Renderer::collect_args(const Expr& e, size_t first, CallArgs& args) {
  for (size_t i = first; i < e.children.size(); ++i) args.positional.push_back(eval(*e.children[i]));
  if (e.star_args) {
    Value extra = eval(*e.star_args);
    for (auto& v : iterate(extra)) args.positional.push_back(v);
  }
  for (auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v));
  if (e.star_kwargs) {
    Value extra = eval(*e.star_kwargs);
    if (!extra.is_dict()) throw JinjaError("argument after ** must be a mapping");
    for (auto& [k, v] : extra.dict_obj().entries) args.keyword.emplace_back(k.to_str(), v);
  }
}

Value Renderer::eval(const Expr& e) {
  try {
    return eval_inner(e);
  } catch (JinjaError& err) {
    if (err.line == 0) {
      err.line = e.line;
      err.column = e.column;
    }
    throw;
  }
}

Value Renderer::eval_inner(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::Literal: return e.value;
    case Expr::Kind::Name: return lookup(e.name);
    case Expr::Kind::GetAttr: return get_attr(eval(*e.children[0]), e.name);
    case Expr::Kind::GetItem: {
      Value obj = eval(*e.children[0]);
      const Expr& key = *e.children[1];
      if (key.kind != Expr::Kind::Slice) return get_item(obj, eval(key));
      if (obj.is_undefined()) undefined_error(obj);
      Value parts[3];
      for (int i = 0; i < 3; ++i)
        parts[i] = key.children[size_t(i)] ? eval(*key.children[size_t(i)]) : Value::none();
      if (obj.is_list()) {
        auto idx = slice_indices(int64_t(obj.items().size()), parts[0], parts[1], parts[2]);
        std::vector<Value> out;
        out.reserve(idx.size());
        for (int64_t i : idx) out.push_back(obj.items()[size_t(i)]);
        return Value::list(std::move(out), obj.is_tuple());
      }
      if (obj.is_string()) {
        const std::string& s = obj.str();
        if (is_ascii(s)) {
          auto idx = slice_indices(int64_t(s.size()), parts[0], parts[1], parts[2]);
          std::string out;
          out.reserve(idx.size());
          for (int64_t i : idx) out += s[size_t(i)];
          return Value::string(std::move(out));
        }
        auto cps = utf8_decode(s);
        auto idx = slice_indices(int64_t(cps.size()), parts[0], parts[1], parts[2]);
        std::string out;
        for (int64_t i : idx) utf8_append(out, cps[size_t(i)]);
        return Value::string(std::move(out));
      }
      return Value::undefined(std::string("'") + obj.type_name() + "' object is not subscriptable");
    }
    case Expr::Kind::Slice: throw JinjaError("slice outside of a subscript");
    case Expr::Kind::Call: {
      Value fn = eval(*e.children[0]);
      CallArgs args;
      collect_args(e, 1, args);
      if (depth_ + 1 > limits_.max_call_depth * 4) throw JinjaError("maximum call depth exceeded");
      ++depth_;
      try {
        Value v = call_value(fn, args);
        --depth_;
        return v;
      } catch (...) {
        --depth_;
        throw;
      }
    }
    case Expr::Kind::Filter:
    case Expr::Kind::Test: {
      CallArgs args;
      args.positional.push_back(eval(*e.children[0]));
      collect_args(e, 1, args);
      Value v = e.builtin(*this, args);
      if (e.kind == Expr::Kind::Test) return Value::boolean(v.truthy() != e.negated);
      return v;
    }
    case Expr::Kind::Not: return Value::boolean(!eval(*e.children[0]).truthy());
    case Expr::Kind::Neg:
    case Expr::Kind::Pos: {
      Value v = eval(*e.children[0]);
      if (v.is_undefined()) undefined_error(v);
      if (v.is_float()) return Value::floating(e.kind == Expr::Kind::Neg ? -v.as_float() : v.as_float());
      if (v.is_int() || v.is_bool()) {
        if (e.kind == Expr::Kind::Pos) return Value::integer(v.as_int());
        if (v.as_int() == INT64_MIN) throw JinjaError("integer overflow");
        return Value::integer(-v.as_int());
      }
      throw JinjaError(std::string("bad operand type for unary ") + (e.kind == Expr::Kind::Neg ? "-" : "+") + ": '" +
                       v.type_name() + "'");
    }
    case Expr::Kind::Binary: {
      const std::string& op = e.name;
      if (op == "and") {
        Value a = eval(*e.children[0]);
        return a.truthy() ? eval(*e.children[1]) : a;
      }
      if (op == "or") {
        Value a = eval(*e.children[0]);
        return a.truthy() ? a : eval(*e.children[1]);
      }
      Value a = eval(*e.children[0]);
      Value b = eval(*e.children[1]);
      if (op == "~") {
        std::string s = a.to_str();
        std::string t = b.to_str();
        check_size(s.size() + t.size());
        return Value::string(s + t);
      }
      return binary_op(*this, op, a, b);
    }
    case Expr::Kind::Compare: {
      Value left = eval(*e.children[0]);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.children[i + 1]);
        const std::string& op = e.ops[i];
        bool ok;
        if (op == "==") ok = values_equal(left, right);
        else if (op == "!=") ok = !values_equal(left, right);
        else if (op == "in") ok = contains(right, left);
        else if (op == "notin") ok = !contains(right, left);
        else {
          if (left.is_undefined()) undefined_error(left);
          if (right.is_undefined()) undefined_error(right);
          int c = compare_values(left, right);
          ok = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
        }
        if (!ok) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case Expr::Kind::Conditional:
      if (eval(*e.children[1]).truthy()) return eval(*e.children[0]);
      if (e.children[2]) return eval(*e.children[2]);
      return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
    case Expr::Kind::List:
    case Expr::Kind::Tuple: {
      std::vector<Value> items;
      items.reserve(e.children.size());
      for (auto& c : e.children) items.push_back(eval(*c));
      return Value::list(std::move(items), e.kind == Expr::Kind::Tuple);
    }
    case Expr::Kind::Dict: {
      auto d = std::make_shared<DictObj>();
      for (size_t i = 0; i + 1 < e.children.size(); i += 2) d->set(eval(*e.children[i]), eval(*e.children[i + 1]));
      return Value::dict(d);
    }
  }
  return Value();
}

}  // namespace llmesh::api::jinja
