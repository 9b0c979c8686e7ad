// Methods on str, list and dict values as Python has them (what templates call as
// `message.content.strip()`), the sandbox's refusal of mutating methods, and Python's two
// string formatting mini-languages (`"%s" % x` and `"{}".format(x)`).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "template/jinja_eval.h"
#include "template/jinja_text.h"

namespace llmesh::api::jinja {

namespace {

const Value& arg(const CallArgs& a, size_t i, const char* name) {
  if (i < a.positional.size()) return a.positional[i];
  if (const Value* v = a.kw(name)) return *v;
  static const Value none = Value::none();
  return none;
}

std::string need_str(const Value& v, const char* what) {
  if (!v.is_string())
    throw JinjaError(std::string(what) + " must be str, not " + v.type_name());
  return v.str();
}

Value str_method(Renderer& r, const std::string& s, const std::string& name, const CallArgs& a) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const Value& chars = arg(a, 0, "chars");
    bool left = name != "rstrip", right = name != "lstrip";
    return Value::string(py_strip(s, chars.is_none() ? nullptr : &chars.str(), left, right));
  }
  if (name == "split" || name == "rsplit") {
    const Value& sep = arg(a, 0, "sep");
    const Value& maxsplit = arg(a, 1, "maxsplit");
    int64_t max = maxsplit.is_none() ? -1 : maxsplit.as_int();
    std::vector<std::string> parts = sep.is_none() ? py_split_whitespace(s, max, name == "rsplit")
                                                   : py_split(s, need_str(sep, "sep"), max, name == "rsplit");
    std::vector<Value> out;
    out.reserve(parts.size());
    for (auto& p : parts) out.push_back(Value::string(std::move(p)));
    return Value::list(std::move(out));
  }
  if (name == "splitlines") {
    bool keep = arg(a, 0, "keepends").truthy();
    std::vector<Value> out;
    for (auto& p : py_splitlines(s, keep)) out.push_back(Value::string(std::move(p)));
    return Value::list(std::move(out));
  }
  if (name == "startswith" || name == "endswith") {
    const Value& what = arg(a, 0, "prefix");
    std::vector<Value> options = what.is_list() ? what.items() : std::vector<Value>{what};
    for (auto& o : options) {
      std::string p = need_str(o, name == "startswith" ? "startswith first arg" : "endswith first arg");
      if (name == "startswith" ? s.compare(0, p.size(), p) == 0 && s.size() >= p.size()
                               : s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0)
        return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (name == "upper") return Value::string(py_upper(s));
  if (name == "lower" || name == "casefold") return Value::string(py_lower(s));
  if (name == "title") return Value::string(py_title(s));
  if (name == "capitalize") return Value::string(py_capitalize(s));
  if (name == "swapcase") {
    std::string out = s;
    for (char& c : out)
      if (c >= 'a' && c <= 'z') c = char(c - 32);
      else if (c >= 'A' && c <= 'Z') c = char(c + 32);
    return Value::string(out);
  }
  if (name == "replace") {
    const Value& count = arg(a, 2, "count");
    std::string out = py_replace(s, need_str(arg(a, 0, "old"), "replace() argument 1"),
                                 need_str(arg(a, 1, "new"), "replace() argument 2"),
                                 count.is_none() ? -1 : count.as_int());
    r.check_size(out.size());
    return Value::string(std::move(out));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    std::string sub = need_str(arg(a, 0, "sub"), "must be str");
    size_t pos = (name == "find" || name == "index") ? s.find(sub) : s.rfind(sub);
    if (pos == std::string::npos) {
      if (name == "index" || name == "rindex") throw JinjaError("substring not found");
      return Value::integer(-1);
    }
    return Value::integer(int64_t(utf8_length(std::string_view(s).substr(0, pos))));
  }
  if (name == "count") {
    std::string sub = need_str(arg(a, 0, "sub"), "must be str");
    if (sub.empty()) return Value::integer(int64_t(utf8_length(s)) + 1);
    int64_t n = 0;
    for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
    return Value::integer(n);
  }
  if (name == "format") return Value::string(brace_format(r, s, a));
  if (name == "join") {
    std::string out;
    bool first = true;
    for (auto& v : iterate(arg(a, 0, "iterable"))) {
      if (!first) out += s;
      first = false;
      out += need_str(v, "sequence item");
      r.check_size(out.size());
    }
    return Value::string(std::move(out));
  }
  if (name == "zfill" || name == "center" || name == "ljust" || name == "rjust") {
    int64_t width = arg(a, 0, "width").as_int();
    r.check_size(size_t(std::max<int64_t>(width, 0)));
    std::string fill = a.positional.size() > 1 ? a.positional[1].str() : " ";
    int64_t len = int64_t(utf8_length(s));
    if (width <= len) return Value::string(s);
    int64_t pad = width - len;
    auto rep = [&](int64_t n) {
      std::string o;
      for (int64_t i = 0; i < n; ++i) o += fill;
      return o;
    };
    if (name == "ljust") return Value::string(s + rep(pad));
    if (name == "rjust") return Value::string(rep(pad) + s);
    if (name == "zfill") {
      if (!s.empty() && (s[0] == '-' || s[0] == '+')) return Value::string(s.substr(0, 1) + std::string(size_t(pad), '0') + s.substr(1));
      return Value::string(std::string(size_t(pad), '0') + s);
    }
    int64_t left = pad / 2 + (pad & width & 1);
    return Value::string(rep(left) + s + rep(pad - left));
  }
  if (name == "partition" || name == "rpartition") {
    std::string sep = need_str(arg(a, 0, "sep"), "sep");
    size_t p = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (p == std::string::npos) {
      if (name == "partition") return Value::list({Value::string(s), Value::string(""), Value::string("")}, true);
      return Value::list({Value::string(""), Value::string(""), Value::string(s)}, true);
    }
    return Value::list({Value::string(s.substr(0, p)), Value::string(sep), Value::string(s.substr(p + sep.size()))}, true);
  }
  if (name == "isdigit" || name == "isnumeric" || name == "isdecimal" || name == "isalpha" || name == "isalnum" ||
      name == "isspace" || name == "isupper" || name == "islower") {
    auto cps = utf8_decode(s);
    if (cps.empty()) return Value::boolean(false);
    bool any_cased = false;
    for (uint32_t c : cps) {
      bool digit = c >= '0' && c <= '9';
      bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
      if (name == "isdigit" || name == "isnumeric" || name == "isdecimal") {
        if (!digit) return Value::boolean(false);
      } else if (name == "isalpha") {
        if (!alpha || is_py_space(c)) return Value::boolean(false);
      } else if (name == "isalnum") {
        if ((!alpha && !digit) || is_py_space(c)) return Value::boolean(false);
      } else if (name == "isspace") {
        if (!is_py_space(c)) return Value::boolean(false);
      } else if (name == "isupper") {
        if (c >= 'a' && c <= 'z') return Value::boolean(false);
        if (c >= 'A' && c <= 'Z') any_cased = true;
      } else if (name == "islower") {
        if (c >= 'A' && c <= 'Z') return Value::boolean(false);
        if (c >= 'a' && c <= 'z') any_cased = true;
      }
    }
    if (name == "isupper" || name == "islower") return Value::boolean(any_cased);
    return Value::boolean(true);
  }
  if (name == "encode") throw JinjaError("str.encode is not supported");
  throw JinjaError("'str' object has no attribute '" + name + "'");
}

struct MethodCallable : CallableObj {
  Value self;
  std::string repr() const override {
    return std::string("<built-in method ") + name + " of " + self.type_name() + " object>";
  }
  Value call(Renderer& r, const CallArgs& a) override {
    if (self.is_string()) return str_method(r, self.str(), name, a);
    if (self.is_dict()) {
      auto& entries = self.dict_obj().entries;
      if (name == "items") {
        std::vector<Value> out;
        out.reserve(entries.size());
        for (auto& [k, v] : entries) out.push_back(Value::list({k, v}, true));
        return Value::list(std::move(out));
      }
      if (name == "keys" || name == "values") {
        std::vector<Value> out;
        out.reserve(entries.size());
        for (auto& [k, v] : entries) out.push_back(name == "keys" ? k : v);
        return Value::list(std::move(out));
      }
      if (name == "get") {
        if (a.positional.empty()) throw JinjaError("get expected at least 1 argument, got 0");
        if (const Value* v = self.dict_obj().find(a.positional[0])) return *v;
        return a.positional.size() > 1 ? a.positional[1] : Value::none();
      }
      if (name == "copy") return Value::dict(std::make_shared<DictObj>(self.dict_obj()));
    }
    if (self.is_list()) {
      auto& items = self.items();
      if (name == "index") {
        for (size_t i = 0; i < items.size(); ++i)
          if (values_equal(items[i], arg(a, 0, "value"))) return Value::integer(int64_t(i));
        throw JinjaError(arg(a, 0, "value").repr() + " is not in list");
      }
      if (name == "count") {
        int64_t n = 0;
        for (auto& v : items) n += values_equal(v, arg(a, 0, "value"));
        return Value::integer(n);
      }
      if (name == "copy") return Value::list(items, self.is_tuple());
    }
    throw JinjaError(std::string("'") + self.type_name() + "' object has no attribute '" + name + "'");
  }
};

bool in_list(const std::string& name, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

}  // namespace

Value bound_method(const Value& obj, const std::string& name) {
  bool known = false, unsafe = false;
  if (obj.is_string()) {
    known = in_list(name, {"strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith",
                           "upper", "lower", "casefold", "title", "capitalize", "swapcase", "replace", "find", "rfind",
                           "index", "rindex", "count", "format", "join", "zfill", "center", "ljust", "rjust",
                           "partition", "rpartition", "isdigit", "isnumeric", "isdecimal", "isalpha", "isalnum",
                           "isspace", "isupper", "islower", "encode"});
  } else if (obj.is_dict()) {
    known = in_list(name, {"items", "keys", "values", "get", "copy"});
    unsafe = in_list(name, {"pop", "popitem", "setdefault", "update", "clear"});
  } else if (obj.is_list()) {
    known = in_list(name, {"index", "count", "copy"});
    unsafe = !obj.is_tuple() && in_list(name, {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"});
  }
  if (unsafe)
    return Value::undefined("access to attribute '" + name + "' of '" + obj.type_name() + "' object is unsafe.");
  if (!known) return Value();
  auto m = std::make_shared<MethodCallable>();
  m->name = name;
  m->self = obj;
  return Value::callable(m);
}

// ---- "%" formatting ----

namespace {

struct Spec {
  bool left = false, plus = false, space = false, zero = false, alt = false;
  int width = -1, precision = -1;
  char type = 's';
};

std::string pad(std::string body, const Spec& sp, bool numeric) {
  int len = int(utf8_length(body));
  if (sp.width <= len) return body;
  size_t n = size_t(sp.width - len);
  if (sp.left) return body + std::string(n, ' ');
  if (sp.zero && numeric) {
    size_t sign = (!body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' ')) ? 1 : 0;
    return body.substr(0, sign) + std::string(n, '0') + body.substr(sign);
  }
  return std::string(n, ' ') + body;
}

std::string format_number(const Value& v, char type, int precision, bool plus, bool space, bool alt) {
  if (!v.is_number()) throw JinjaError(std::string("%") + type + " format: a real number is required, not " + v.type_name());
  std::string body;
  char buf[512];
  switch (type) {
    case 'd':
    case 'i':
    case 'u': {
      double f = v.as_float();
      body = v.is_float() ? std::to_string(int64_t(std::trunc(f))) : std::to_string(v.as_int());
      break;
    }
    case 'x':
    case 'X':
    case 'o': {
      if (v.is_float()) throw JinjaError(std::string("%") + type + " format: an integer is required, not float");
      int64_t i = v.as_int();
      uint64_t mag = i < 0 ? uint64_t(-(i + 1)) + 1 : uint64_t(i);
      std::snprintf(buf, sizeof buf, type == 'o' ? "%llo" : type == 'x' ? "%llx" : "%llX", (unsigned long long)mag);
      body = std::string(i < 0 ? "-" : "") + (alt ? (type == 'o' ? "0o" : type == 'x' ? "0x" : "0X") : "") + buf;
      break;
    }
    default: {
      int p = precision < 0 ? 6 : std::min(precision, 300);
      std::string f = std::string("%.") + std::to_string(p) + type;
      std::snprintf(buf, sizeof buf, f.c_str(), v.as_float());
      body = buf;
      if (body == "inf" || body == "-inf" || body == "nan" || body == "-nan") body = python_float_repr(v.as_float());
    }
  }
  if (body[0] != '-') {
    if (plus) body = "+" + body;
    else if (space) body = " " + body;
  }
  return body;
}

}  // namespace

std::string percent_format(Renderer& r, const std::string& fmt, const Value& args) {
  std::vector<Value> positional;
  const Value* mapping = nullptr;
  if (args.is_tuple()) positional = args.items();
  else if (args.is_dict()) mapping = &args;
  else positional.push_back(args);
  size_t next = 0;
  std::string out;
  auto take = [&]() -> const Value& {
    if (next >= positional.size()) throw JinjaError("not enough arguments for format string");
    return positional[next++];
  };
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) throw JinjaError("incomplete format");
    const Value* keyed = nullptr;
    if (fmt[i] == '(') {
      size_t close = fmt.find(')', i);
      if (close == std::string::npos || !mapping) throw JinjaError("format requires a mapping");
      keyed = mapping->dict_obj().find(std::string_view(fmt).substr(i + 1, close - i - 1));
      if (!keyed) throw JinjaError("KeyError: " + fmt.substr(i + 1, close - i - 1));
      i = close + 1;
    }
    Spec sp;
    for (; i < fmt.size(); ++i) {
      char c = fmt[i];
      if (c == '-') sp.left = true;
      else if (c == '+') sp.plus = true;
      else if (c == ' ') sp.space = true;
      else if (c == '0') sp.zero = true;
      else if (c == '#') sp.alt = true;
      else break;
    }
    auto number = [&]() {
      if (i < fmt.size() && fmt[i] == '*') {
        ++i;
        return int(take().as_int());
      }
      int n = -1;
      while (i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i]))) n = std::max(n, 0) * 10 + (fmt[i++] - '0');
      return std::min(n, 100000);
    };
    sp.width = number();
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      sp.precision = std::max(number(), 0);
    }
    while (i < fmt.size() && (fmt[i] == 'l' || fmt[i] == 'h' || fmt[i] == 'L')) ++i;
    if (i >= fmt.size()) throw JinjaError("incomplete format");
    sp.type = fmt[i];
    if (sp.type == '%') {
      out += '%';
      continue;
    }
    const Value& v = keyed ? *keyed : take();
    std::string body;
    switch (sp.type) {
      case 's':
      case 'r':
      case 'a':
        body = sp.type == 's' ? v.to_str() : v.repr();
        if (sp.precision >= 0) {
          auto cps = utf8_decode(body);
          if (cps.size() > size_t(sp.precision)) cps.resize(size_t(sp.precision));
          body = utf8_encode(cps);
        }
        out += pad(body, sp, false);
        break;
      case 'c':
        if (v.is_string()) body = v.str();
        else utf8_append(body, uint32_t(v.as_int()));
        out += pad(body, sp, false);
        break;
      case 'd': case 'i': case 'u': case 'x': case 'X': case 'o':
      case 'f': case 'F': case 'e': case 'E': case 'g': case 'G':
        out += pad(format_number(v, sp.type, sp.precision, sp.plus, sp.space, sp.alt), sp, true);
        break;
      default: throw JinjaError(std::string("unsupported format character '") + sp.type + "'");
    }
    r.check_size(out.size());
  }
  if (!mapping && next < positional.size())
    throw JinjaError("not all arguments converted during string formatting");
  return out;
}

// ---- str.format ----

std::string brace_format(Renderer& r, const std::string& fmt, const CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') ++i;
      else throw JinjaError("Single '}' encountered in format string");
      out += '}';
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = fmt.find('}', i);
    if (close == std::string::npos) throw JinjaError("expected '}' before end of string");
    std::string field = fmt.substr(i + 1, close - i - 1);
    i = close;
    std::string spec, conv;
    if (size_t colon = field.find(':'); colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    if (size_t bang = field.find('!'); bang != std::string::npos) {
      conv = field.substr(bang + 1);
      field = field.substr(0, bang);
    }
    Value v;
    if (field.empty()) {
      if (auto_index >= a.positional.size()) throw JinjaError("Replacement index " + std::to_string(auto_index) + " out of range");
      v = a.positional[auto_index++];
    } else if (std::isdigit(static_cast<unsigned char>(field[0]))) {
      size_t idx = size_t(std::stoul(field));
      if (idx >= a.positional.size()) throw JinjaError("Replacement index " + field + " out of range");
      v = a.positional[idx];
    } else {
      const Value* kv = a.kw(field);
      if (!kv) throw JinjaError("KeyError: '" + field + "'");
      v = *kv;
    }
    std::string body = conv == "r" ? v.repr() : v.to_str();
    if (!spec.empty()) {
      // [[fill]align][sign][0][width][.precision][type]
      size_t p = 0;
      char fill = ' ', align = 0;
      if (spec.size() >= 2 && (spec[1] == '<' || spec[1] == '>' || spec[1] == '^')) {
        fill = spec[0];
        align = spec[1];
        p = 2;
      } else if (!spec.empty() && (spec[0] == '<' || spec[0] == '>' || spec[0] == '^')) {
        align = spec[0];
        p = 1;
      }
      bool plus = false;
      if (p < spec.size() && (spec[p] == '+' || spec[p] == '-')) plus = spec[p++] == '+';
      if (p < spec.size() && spec[p] == '0') {
        fill = '0';
        if (!align) align = '=';
        ++p;
      }
      int width = 0, precision = -1;
      while (p < spec.size() && std::isdigit(static_cast<unsigned char>(spec[p]))) width = std::min(width * 10 + (spec[p++] - '0'), 100000);
      if (p < spec.size() && spec[p] == '.') {
        ++p;
        precision = 0;
        while (p < spec.size() && std::isdigit(static_cast<unsigned char>(spec[p]))) precision = std::min(precision * 10 + (spec[p++] - '0'), 300);
      }
      char type = p < spec.size() ? spec[p] : 0;
      if (type && std::string("dfFeEgGxXo%").find(type) != std::string::npos) {
        if (type == '%') {
          body = format_number(Value::floating(v.as_float() * 100), 'f', precision, plus, false, false) + "%";
        } else {
          body = format_number(v, type, precision, plus, false, false);
        }
      } else if (precision >= 0 && v.is_float()) {
        body = format_number(v, 'f', precision, plus, false, false);
      } else if (precision >= 0 && v.is_string()) {
        auto cps = utf8_decode(body);
        if (cps.size() > size_t(precision)) cps.resize(size_t(precision));
        body = utf8_encode(cps);
      }
      if (!align) align = (v.is_number() && !v.is_bool()) ? '>' : '<';
      int len = int(utf8_length(body));
      if (width > len) {
        size_t n = size_t(width - len);
        if (align == '<') body += std::string(n, fill);
        else if (align == '>') body = std::string(n, fill) + body;
        else if (align == '^') body = std::string(n / 2, fill) + body + std::string(n - n / 2, fill);
        else {
          size_t sign = (!body.empty() && (body[0] == '-' || body[0] == '+')) ? 1 : 0;
          body = body.substr(0, sign) + std::string(n, fill) + body.substr(sign);
        }
      }
    }
    out += body;
    r.check_size(out.size());
  }
  return out;
}

}  // namespace llmesh::api::jinja
