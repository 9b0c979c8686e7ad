#include "template/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "template/jinja_eval.h"

namespace llmesh::api::jinja {

namespace {
const std::string kEmpty;
const std::vector<Value> kNoItems;
}  // namespace

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.obj_ = std::make_shared<UndefinedObj>(std::move(hint));
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::String;
  v.obj_ = std::make_shared<StringObj>(std::move(s));
  return v;
}

Value Value::list(std::vector<Value> items, bool tuple) {
  Value v;
  v.kind_ = Kind::List;
  auto l = std::make_shared<ListObj>();
  l->items = std::move(items);
  l->tuple = tuple;
  for (auto& it : l->items) l->nesting = std::max(l->nesting, it.nesting() + 1);
  if (l->nesting > kMaxValueNesting) throw JinjaError("value nesting too deep");
  v.obj_ = std::move(l);
  return v;
}

Value Value::dict(std::shared_ptr<DictObj> d) {
  for (auto& [k, val] : d->entries) d->nesting = std::max(d->nesting, val.nesting() + 1);
  if (d->nesting > kMaxValueNesting) throw JinjaError("value nesting too deep");
  Value v;
  v.kind_ = Kind::Dict;
  v.obj_ = std::move(d);
  return v;
}

Value Value::dict() { return dict(std::make_shared<DictObj>()); }

Value Value::namespace_object(std::shared_ptr<DictObj> d) {
  Value v;
  v.kind_ = Kind::Namespace;
  v.obj_ = std::move(d);
  return v;
}

Value Value::callable(std::shared_ptr<CallableObj> c) {
  Value v;
  v.kind_ = Kind::Callable;
  v.obj_ = std::move(c);
  return v;
}

Value Value::loop(std::shared_ptr<LoopObj> l) {
  Value v;
  v.kind_ = Kind::Loop;
  v.obj_ = std::move(l);
  return v;
}

namespace {
Value from_json_at(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxValueNesting) throw JinjaError("input nesting too deep");
  using T = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case T::null: return Value::none();
    case T::boolean: return Value::boolean(j.get<bool>());
    case T::number_integer: return Value::integer(j.get<int64_t>());
    case T::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return Value::floating(double(u));
      return Value::integer(int64_t(u));
    }
    case T::number_float: return Value::floating(j.get<double>());
    case T::string: return Value::string(j.get<std::string>());
    case T::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (auto& e : j) items.push_back(from_json_at(e, depth + 1));
      return Value::list(std::move(items));
    }
    case T::object: {
      auto d = std::make_shared<DictObj>();
      d->entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it)
        d->entries.emplace_back(Value::string(it.key()), from_json_at(it.value(), depth + 1));
      return Value::dict(std::move(d));
    }
    default: return Value::none();
  }
}
}  // namespace

Value Value::from_json(const nlohmann::ordered_json& j) { return from_json_at(j, 1); }

const std::string& Value::str() const {
  return kind_ == Kind::String ? static_cast<const StringObj*>(obj_.get())->s : kEmpty;
}
const std::vector<Value>& Value::items() const {
  return kind_ == Kind::List ? static_cast<const ListObj*>(obj_.get())->items : kNoItems;
}
bool Value::is_tuple() const { return kind_ == Kind::List && static_cast<const ListObj*>(obj_.get())->tuple; }
const DictObj& Value::dict_obj() const { return *static_cast<const DictObj*>(obj_.get()); }
DictObj& Value::mutable_dict() const { return *static_cast<DictObj*>(obj_.get()); }
CallableObj& Value::fn() const { return *static_cast<CallableObj*>(obj_.get()); }
LoopObj& Value::loop_obj() const { return *static_cast<LoopObj*>(obj_.get()); }
std::shared_ptr<LoopObj> Value::loop_ptr() const { return std::static_pointer_cast<LoopObj>(obj_); }
int Value::nesting() const {
  if (kind_ == Kind::List) return static_cast<const ListObj*>(obj_.get())->nesting;
  if (kind_ == Kind::Dict || kind_ == Kind::Namespace) return static_cast<const DictObj*>(obj_.get())->nesting;
  return 0;
}

const std::string& Value::undefined_hint() const {
  return obj_ ? static_cast<const UndefinedObj*>(obj_.get())->hint : kEmpty;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool:
    case Kind::Int: return i_ != 0;
    case Kind::Float: return f_ != 0.0;
    case Kind::String: return !str().empty();
    case Kind::List: return !items().empty();
    case Kind::Dict: return !dict_obj().entries.empty();
    default: return true;
  }
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return is_tuple() ? "tuple" : "list";
    case Kind::Dict: return "dict";
    case Kind::Callable: return "function";
    case Kind::Namespace: return "Namespace";
    case Kind::Loop: return "LoopContext";
  }
  return "object";
}

int64_t Value::length() const {
  switch (kind_) {
    case Kind::Undefined: return 0;
    case Kind::String: return int64_t(utf8_length(str()));
    case Kind::List: return int64_t(items().size());
    case Kind::Dict: return int64_t(dict_obj().entries.size());
    case Kind::Loop: return loop_obj().length;
    default: throw JinjaError(std::string("object of type '") + type_name() + "' has no len()");
  }
}

std::string Value::to_str() const {
  switch (kind_) {
    case Kind::Undefined: return "";
    case Kind::String: return str();
    default: return repr();
  }
}

std::string Value::repr() const {
  // Namespaces can contain themselves; bound the recursion instead of overflowing.
  static thread_local int depth = 0;
  if (depth > kMaxValueNesting + 2) throw JinjaError("value nesting too deep to print");
  ++depth;
  struct Leave {
    ~Leave() { --depth; }
  } leave;
  switch (kind_) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return i_ ? "True" : "False";
    case Kind::Int: return std::to_string(i_);
    case Kind::Float: return python_float_repr(f_);
    case Kind::String: return python_string_repr(str());
    case Kind::List: {
      bool tuple = is_tuple();
      std::string out = tuple ? "(" : "[";
      const auto& it = items();
      for (size_t i = 0; i < it.size(); ++i) {
        if (i) out += ", ";
        out += it[i].repr();
      }
      if (tuple && it.size() == 1) out += ",";
      out += tuple ? ")" : "]";
      return out;
    }
    case Kind::Dict:
    case Kind::Namespace: {
      std::string out = kind_ == Kind::Namespace ? "<Namespace {" : "{";
      bool first = true;
      for (auto& [k, v] : dict_obj().entries) {
        if (!first) out += ", ";
        first = false;
        out += k.repr() + ": " + v.repr();
      }
      out += kind_ == Kind::Namespace ? "}>" : "}";
      return out;
    }
    case Kind::Callable: return fn().repr();
    case Kind::Loop: return "<LoopContext " + std::to_string(loop_obj().index0 + 1) + "/" + std::to_string(loop_obj().length) + ">";
  }
  return "";
}

const Value* DictObj::find(std::string_view key) const {
  for (auto& e : entries)
    if (e.first.is_string() && e.first.str() == key) return &e.second;
  return nullptr;
}

const Value* DictObj::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.str()));
  for (auto& e : entries)
    if (values_equal(e.first, key)) return &e.second;
  return nullptr;
}

void DictObj::set(const Value& key, Value v) {
  nesting = std::max(nesting, v.nesting() + 1);
  if (nesting > kMaxValueNesting) throw JinjaError("value nesting too deep");
  for (auto& e : entries)
    if (values_equal(e.first, key)) {
      e.second = std::move(v);
      return;
    }
  entries.emplace_back(key, std::move(v));
}

bool values_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::String: return a.str() == b.str();
    case Value::Kind::List: {
      if (a.is_tuple() != b.is_tuple()) return false;
      auto& x = a.items();
      auto& y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!values_equal(x[i], y[i])) return false;
      return true;
    }
    case Value::Kind::Dict:
    case Value::Kind::Namespace: {
      auto& x = a.dict_obj().entries;
      auto& y = b.dict_obj();
      if (a.kind() == Value::Kind::Namespace) return &a.dict_obj() == &y;
      if (x.size() != y.entries.size()) return false;
      for (auto& [k, v] : x) {
        const Value* o = y.find(k);
        if (!o || !values_equal(v, *o)) return false;
      }
      return true;
    }
    case Value::Kind::Callable: return &a.fn() == &b.fn();
    case Value::Kind::Loop: return &a.loop_obj() == &b.loop_obj();
    default: return false;
  }
}

int compare_values(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    return a.as_int() < b.as_int() ? -1 : (a.as_int() > b.as_int() ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.str().compare(b.str());  // UTF-8 byte order == code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    auto& x = a.items();
    auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (values_equal(x[i], y[i])) continue;
      return compare_values(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  throw JinjaError(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" +
                   b.type_name() + "'");
}

// Python's repr(float): shortest round-trip digits, fixed notation for exponents in
// [-4, 16), scientific otherwise, and always a '.0' or exponent so it reads as a float.
std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string out;
  size_t pos = 0;
  if (sci[0] == '-') {
    out = "-";
    pos = 1;
  }
  size_t e = sci.find('e');
  std::string digits;
  for (size_t i = pos; i < e; ++i)
    if (sci[i] != '.') digits += sci[i];
  int exp10 = std::atoi(sci.c_str() + e + 1);
  int decpt = exp10 + 1;  // digits are 0.d1d2... * 10^decpt
  if (digits == "0") decpt = 1;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(size_t(-decpt), '0') + digits;
    } else if (size_t(decpt) >= digits.size()) {
      out += digits + std::string(size_t(decpt) - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    int x = decpt - 1;
    out += x < 0 ? "e-" : "e+";
    int ax = std::abs(x);
    if (ax < 10) out += "0";
    out += std::to_string(ax);
  }
  return out;
}

namespace {

// Code points Python's str.isprintable() rejects that we can recognise without the full
// Unicode tables: controls, the Latin-1 block's non-printables, separators and format chars.
bool python_nonprintable(uint32_t cp) {
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) return true;
  if (cp == 0x1680 || cp == 0x180e || (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
      (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 || cp == 0xfeff)
    return true;
  if ((cp >= 0xe000 && cp <= 0xf8ff) || (cp >= 0xfff9 && cp <= 0xfffb)) return true;
  if (cp >= 0xf0000) return true;  // private use planes
  return false;
}

void append_hex(std::string& out, uint32_t v, int digits) {
  static const char* hex = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out += hex[(v >> (4 * i)) & 0xf];
}

}  // namespace

std::string python_string_repr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (uint32_t cp : utf8_decode(s)) {
    if (cp == uint32_t(q) || cp == '\\') {
      out += '\\';
      out += char(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (python_nonprintable(cp)) {
      if (cp <= 0xff) {
        out += "\\x";
        append_hex(out, cp, 2);
      } else if (cp <= 0xffff) {
        out += "\\u";
        append_hex(out, cp, 4);
      } else {
        out += "\\U";
        append_hex(out, cp, 8);
      }
    } else {
      utf8_append(out, cp);
    }
  }
  out += q;
  return out;
}

namespace {

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          append_hex(out, c, 2);
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

void json_value(std::string& out, const Value& v, const JsonStyle& st, int depth) {
  if (depth > 500) throw JinjaError("tojson: nesting too deep");
  auto newline = [&](int d) {
    out += '\n';
    for (int i = 0; i < d; ++i) out += st.indent_unit;
  };
  switch (v.kind()) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.as_int()); return;
    case Value::Kind::Float: {
      double d = v.as_float();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d < 0 ? "-Infinity" : "Infinity";
      else out += python_float_repr(d);
      return;
    }
    case Value::Kind::String: json_string(out, v.str()); return;
    case Value::Kind::List: {
      auto& items = v.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_sep;
        if (st.pretty) newline(depth + 1);
        json_value(out, items[i], st, depth + 1);
      }
      if (st.pretty) newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::Dict: {
      std::vector<const std::pair<Value, Value>*> entries;
      for (auto& e : v.dict_obj().entries) entries.push_back(&e);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (st.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* a, auto* b) { return compare_values(a->first, b->first) < 0; });
      out += '{';
      bool first = true;
      for (auto* e : entries) {
        if (!first) out += st.item_sep;
        first = false;
        if (st.pretty) newline(depth + 1);
        const Value& k = e->first;
        if (k.is_string()) json_string(out, k.str());
        else if (k.is_bool()) json_string(out, k.as_bool() ? "true" : "false");
        else if (k.is_none()) json_string(out, "null");
        else if (k.is_int() || k.is_float()) json_string(out, k.repr());
        else throw JinjaError(std::string("keys must be str, int, float, bool or None, not ") + k.type_name());
        out += st.key_sep;
        json_value(out, e->second, st, depth + 1);
      }
      if (st.pretty) newline(depth);
      out += '}';
      return;
    }
    default:
      throw JinjaError(std::string("Object of type ") + v.type_name() + " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  json_value(out, v, style, 0);
  return out;
}

std::vector<uint32_t> utf8_decode(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    uint32_t cp;
    int extra;
    if (c < 0x80) {
      cp = c;
      extra = 0;
    } else if ((c >> 5) == 6) {
      cp = c & 0x1f;
      extra = 1;
    } else if ((c >> 4) == 14) {
      cp = c & 0x0f;
      extra = 2;
    } else if ((c >> 3) == 30) {
      cp = c & 0x07;
      extra = 3;
    } else {
      out.push_back(0xfffd);  // invalid lead byte
      ++i;
      continue;
    }
    bool ok = true;
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) >> 6) != 2) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    }
    if (!ok) {
      out.push_back(0xfffd);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += size_t(extra) + 1;
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  }
}

std::string utf8_encode(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) utf8_append(out, cp);
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xc0) != 0x80) ++n;
  return n;
}

bool is_py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
         cp == 0x3000;
}

}  // namespace llmesh::api::jinja
