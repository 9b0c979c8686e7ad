// Values of llmesh's Jinja interpreter, modelled on the Python objects jinja2 works with:
// Undefined, None, bool, int, float, str, list/tuple, dict, callables (macros, builtins,
// bound methods), namespace() objects and the `loop` variable. Printing, truthiness,
// equality and ordering follow Python so that renderings match jinja2 byte for byte.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmesh::api::jinja {

// A failure while parsing or rendering; line/column 0 means "not known yet" (the evaluator
// fills in the position of the expression or statement being run).
struct JinjaError : std::runtime_error {
  int line = 0, column = 0;
  explicit JinjaError(const std::string& msg, int l = 0, int c = 0)
      : std::runtime_error(msg), line(l), column(c) {}
};

struct Object;
struct StringObj;
struct ListObj;
struct DictObj;
struct CallableObj;
struct LoopObj;
struct UndefinedObj;
class Renderer;

class Value {
 public:
  enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Callable, Namespace, Loop };

  Value() = default;  // Undefined
  static Value undefined(std::string hint = {});
  static Value none() { Value v; v.kind_ = Kind::None; return v; }
  static Value boolean(bool b) { Value v; v.kind_ = Kind::Bool; v.i_ = b; return v; }
  static Value integer(int64_t i) { Value v; v.kind_ = Kind::Int; v.i_ = i; return v; }
  static Value floating(double f) { Value v; v.kind_ = Kind::Float; v.f_ = f; return v; }
  static Value string(std::string s);
  static Value list(std::vector<Value> items, bool tuple = false);
  static Value dict(std::shared_ptr<DictObj> d);
  static Value dict();
  static Value namespace_object(std::shared_ptr<DictObj> d);
  static Value callable(std::shared_ptr<CallableObj> c);
  static Value loop(std::shared_ptr<LoopObj> l);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int; }
  bool is_float() const { return kind_ == Kind::Float; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_list() const { return kind_ == Kind::List; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_callable() const { return kind_ == Kind::Callable; }
  bool is_namespace() const { return kind_ == Kind::Namespace; }
  bool is_loop() const { return kind_ == Kind::Loop; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return i_; }  // Int or Bool
  double as_float() const { return kind_ == Kind::Float ? f_ : double(i_); }
  const std::string& str() const;
  const std::vector<Value>& items() const;
  bool is_tuple() const;
  const DictObj& dict_obj() const;
  DictObj& mutable_dict() const;  // namespace attributes
  CallableObj& fn() const;
  LoopObj& loop_obj() const;
  std::shared_ptr<LoopObj> loop_ptr() const;
  const std::string& undefined_hint() const;
  int nesting() const;  // 0 for scalars

  bool truthy() const;
  // Python str(): what `{{ x }}` prints. Undefined prints as "".
  std::string to_str() const;
  // Python repr(), used inside containers.
  std::string repr() const;
  // Python type name for error messages ("str", "int", "dict", ...).
  const char* type_name() const;

  // The jinja2 `length` of a value (code points for strings); throws when it has none.
  int64_t length() const;

 private:
  Kind kind_ = Kind::Undefined;
  union {
    int64_t i_ = 0;
    double f_;
  };
  std::shared_ptr<Object> obj_;
};

struct Object {
  virtual ~Object() = default;
};

struct StringObj : Object {
  std::string s;
  explicit StringObj(std::string v) : s(std::move(v)) {}
};

struct UndefinedObj : Object {
  std::string hint;  // why it is undefined: "'x' is undefined", "unsafe attribute ..."
  explicit UndefinedObj(std::string h) : hint(std::move(h)) {}
};

// Containers record how deeply they nest, so a template cannot build a structure whose
// printing or destruction would overflow the stack.
constexpr int kMaxValueNesting = 500;

struct ListObj : Object {
  std::vector<Value> items;
  bool tuple = false;
  int nesting = 1;
};

// Insertion-ordered mapping, as Python dicts are. Chat inputs are small, so a linear scan
// beats hashing here.
struct DictObj : Object {
  std::vector<std::pair<Value, Value>> entries;
  int nesting = 1;
  const Value* find(std::string_view key) const;
  const Value* find(const Value& key) const;
  void set(const Value& key, Value v);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  const Value* kw(std::string_view name) const {
    for (auto& [k, v] : keyword)
      if (k == name) return &v;
    return nullptr;
  }
};

struct CallableObj : Object {
  std::string name;
  virtual Value call(Renderer& r, const CallArgs& args) = 0;
  virtual std::string repr() const { return "<function " + name + ">"; }
};

// Python semantics helpers shared by the evaluator and the builtins.
bool values_equal(const Value& a, const Value& b);
// Python `<`; throws JinjaError for unorderable types.
int compare_values(const Value& a, const Value& b);
std::string python_float_repr(double d);
std::string python_string_repr(std::string_view s);
// json.dumps(v, ensure_ascii=False, indent, separators, sort_keys).
struct JsonStyle {
  bool pretty = false;         // indent given
  std::string indent_unit;     // what one level of indentation is
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonStyle& style);

// UTF-8 code point helpers (strings are UTF-8 byte strings; length and slicing count code points).
std::vector<uint32_t> utf8_decode(std::string_view s);
void utf8_append(std::string& out, uint32_t cp);
std::string utf8_encode(const std::vector<uint32_t>& cps);
size_t utf8_length(std::string_view s);
bool is_py_space(uint32_t cp);

}  // namespace llmesh::api::jinja
