#include "template/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string_view>
#include <unordered_map>

#include "template/jinja_parser.h"
#include "template/jinja_text.h"

namespace llmesh::api::jinja {

namespace {

// Argument `i` of a filter (after the input, which is positional[0]) by position or name.
const Value* opt(const CallArgs& a, size_t i, const char* name) {
  if (i < a.positional.size()) return &a.positional[i];
  return a.kw(name);
}
Value get(const CallArgs& a, size_t i, const char* name, Value fallback) {
  const Value* v = opt(a, i, name);
  return v ? *v : fallback;
}
const Value& input(const CallArgs& a) { return a.positional[0]; }

// Attribute paths as jinja2's make_attrgetter: "a.b", integer parts index lists.
Value attr_path(Renderer& r, const Value& item, const Value& attribute) {
  if (attribute.is_int()) return r.get_item(item, attribute);
  Value cur = item;
  std::string path = attribute.to_str();
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = numeric ? r.get_item(cur, Value::integer(std::stoll(part))) : r.get_item(cur, Value::string(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// ---- string filters ----

Value f_trim(Renderer&, const CallArgs& a) {
  const Value* chars = opt(a, 1, "chars");
  std::string c = chars && !chars->is_none() ? chars->to_str() : "";
  return Value::string(py_strip(input(a).to_str(), chars && !chars->is_none() ? &c : nullptr, true, true));
}
Value f_upper(Renderer&, const CallArgs& a) { return Value::string(py_upper(input(a).to_str())); }
Value f_lower(Renderer&, const CallArgs& a) { return Value::string(py_lower(input(a).to_str())); }
Value f_capitalize(Renderer&, const CallArgs& a) { return Value::string(py_capitalize(input(a).to_str())); }
// jinja2's title: words start after whitespace, '-', '(', '{', '[' or '<'.
Value f_title(Renderer&, const CallArgs& a) {
  std::string out;
  bool start = true;
  for (uint32_t c : utf8_decode(input(a).to_str())) {
    bool sep = is_py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    utf8_append(out, sep ? c : start ? to_upper_cp(c) : to_lower_cp(c));
    start = sep;
  }
  return Value::string(out);
}
Value f_replace(Renderer& r, const CallArgs& a) {
  Value count = get(a, 3, "count", Value::none());
  std::string out = py_replace(input(a).to_str(), get(a, 1, "old", Value::string("")).to_str(),
                               get(a, 2, "new", Value::string("")).to_str(), count.is_none() ? -1 : count.as_int());
  r.check_size(out.size());
  return Value::string(std::move(out));
}
Value f_string(Renderer&, const CallArgs& a) { return Value::string(input(a).to_str()); }
Value f_safe(Renderer&, const CallArgs& a) { return input(a); }
Value f_escape(Renderer&, const CallArgs& a) {
  std::string out;
  for (char c : input(a).to_str()) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return Value::string(out);
}
// jinja2 3.1 indent: the input gets a trailing newline before splitting, lines after the
// first are indented (blank ones only with blank=True), `first` indents the first line.
Value f_indent(Renderer& r, const CallArgs& a) {
  Value width = get(a, 1, "width", Value::integer(4));
  bool first = get(a, 2, "first", Value::boolean(false)).truthy();
  bool blank = get(a, 3, "blank", Value::boolean(false)).truthy();
  std::string ind = width.is_string() ? width.str() : std::string(size_t(std::clamp<int64_t>(width.as_int(), 0, 10000)), ' ');
  std::string s = input(a).to_str() + "\n";
  auto lines = py_splitlines(s, false);
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) rv += "\n" + ind;
      rv += lines[i];
    }
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].empty()) rv += ind;
      rv += lines[i];
    }
  }
  if (first) rv = ind + rv;
  r.check_size(rv.size());
  return Value::string(rv);
}
Value f_center(Renderer& r, const CallArgs& a) {
  int64_t width = get(a, 1, "width", Value::integer(80)).as_int();
  std::string s = input(a).to_str();
  int64_t len = int64_t(utf8_length(s));
  if (width <= len) return Value::string(s);
  r.check_size(size_t(width));
  int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
  return Value::string(std::string(size_t(left), ' ') + s + std::string(size_t(pad - left), ' '));
}
Value f_wordcount(Renderer&, const CallArgs& a) {
  int64_t n = 0;
  bool in_word = false;
  for (uint32_t c : utf8_decode(input(a).to_str())) {
    bool w = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
             (c >= 0x80 && !is_py_space(c));
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}
Value f_striptags(Renderer&, const CallArgs& a) {
  std::string s = input(a).to_str(), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') {
      size_t close = s.find('>', i);
      if (close != std::string::npos) {
        i = close;
        continue;
      }
    }
    out += s[i];
  }
  std::string joined;
  for (auto& w : py_split_whitespace(out, -1, false)) joined += (joined.empty() ? "" : " ") + w;
  return Value::string(joined);
}
Value f_format(Renderer& r, const CallArgs& a) {
  std::vector<Value> rest(a.positional.begin() + 1, a.positional.end());
  if (!a.keyword.empty()) {
    auto d = std::make_shared<DictObj>();
    for (auto& [k, v] : a.keyword) d->entries.emplace_back(Value::string(k), v);
    return Value::string(percent_format(r, input(a).to_str(), Value::dict(d)));
  }
  return Value::string(percent_format(r, input(a).to_str(), Value::list(std::move(rest), true)));
}

// ---- sequence filters ----

Value f_length(Renderer&, const CallArgs& a) { return Value::integer(input(a).length()); }
Value f_list(Renderer&, const CallArgs& a) { return Value::list(iterate(input(a))); }
Value f_first(Renderer&, const CallArgs& a) {
  auto items = iterate(input(a));
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}
Value f_last(Renderer&, const CallArgs& a) {
  auto items = iterate(input(a));
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}
Value f_reverse(Renderer&, const CallArgs& a) {
  const Value& v = input(a);
  if (v.is_string()) {
    auto cps = utf8_decode(v.str());
    std::reverse(cps.begin(), cps.end());
    return Value::string(utf8_encode(cps));
  }
  auto items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}
Value f_join(Renderer& r, const CallArgs& a) {
  std::string sep = get(a, 1, "d", Value::string("")).to_str();
  const Value* attribute = opt(a, 2, "attribute");
  std::string out;
  bool first = true;
  for (auto& item : iterate(input(a))) {
    if (!first) out += sep;
    first = false;
    out += (attribute && !attribute->is_none() ? attr_path(r, item, *attribute) : item).to_str();
    r.check_size(out.size());
  }
  return Value::string(std::move(out));
}
Value f_default(Renderer&, const CallArgs& a) {
  Value fallback = get(a, 1, "default_value", Value::string(""));
  bool boolean = get(a, 2, "boolean", Value::boolean(false)).truthy();
  const Value& v = input(a);
  if (v.is_undefined() || (boolean && !v.truthy())) return fallback;
  return v;
}
Value f_items(Renderer&, const CallArgs& a) {
  const Value& v = input(a);
  if (v.is_undefined()) return Value::list({});
  if (!v.is_dict()) throw JinjaError("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (auto& [k, val] : v.dict_obj().entries) out.push_back(Value::list({k, val}, true));
  return Value::list(std::move(out));
}
Value f_tojson(Renderer& r, const CallArgs& a) {
  JsonStyle st;
  Value indent = get(a, 1, "indent", Value::none());
  if (!indent.is_none()) {
    st.pretty = true;
    st.indent_unit = indent.is_string() ? indent.str() : std::string(size_t(std::clamp<int64_t>(indent.as_int(), 0, 1000)), ' ');
    st.item_sep = ",";
  }
  if (const Value* sep = a.kw("separators"); sep && !sep->is_none()) {
    auto parts = iterate(*sep);
    if (parts.size() != 2) throw JinjaError("separators must be a pair");
    st.item_sep = parts[0].to_str();
    st.key_sep = parts[1].to_str();
  }
  if (const Value* sk = a.kw("sort_keys")) st.sort_keys = sk->truthy();
  if (const Value* ea = a.kw("ensure_ascii"); ea && ea->truthy())
    throw JinjaError("tojson(ensure_ascii=True) is not supported");
  std::string out = to_json(input(a), st);
  r.check_size(out.size());
  return Value::string(std::move(out));
}

// Python int()/float() of a string, as jinja2's int and float filters try them.
bool parse_python_int(std::string s, int base, int64_t& out) {
  s = py_strip(s, nullptr, true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, base);
  if (errno || *end) return false;
  out = v;
  return true;
}
bool parse_python_float(std::string s, double& out) {
  s = py_strip(s, nullptr, true, true);
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return *end == 0;
}

Value f_int(Renderer&, const CallArgs& a) {
  Value fallback = get(a, 1, "default", Value::integer(0));
  int base = int(get(a, 2, "base", Value::integer(10)).as_int());
  const Value& v = input(a);
  if (v.is_int() || v.is_bool()) return Value::integer(v.as_int());
  if (v.is_float()) {
    if (!std::isfinite(v.as_float())) return fallback;
    return Value::integer(int64_t(std::trunc(v.as_float())));
  }
  if (v.is_string()) {
    int64_t i;
    if (parse_python_int(v.str(), base, i)) return Value::integer(i);
    double d;
    if (parse_python_float(v.str(), d) && std::isfinite(d)) return Value::integer(int64_t(std::trunc(d)));
  }
  return fallback;
}
Value f_float(Renderer&, const CallArgs& a) {
  Value fallback = get(a, 1, "default", Value::floating(0.0));
  const Value& v = input(a);
  if (v.is_number()) return Value::floating(v.as_float());
  double d;
  if (v.is_string() && parse_python_float(v.str(), d)) return Value::floating(d);
  return fallback;
}
Value f_abs(Renderer&, const CallArgs& a) {
  const Value& v = input(a);
  if (v.is_float()) return Value::floating(std::fabs(v.as_float()));
  if (v.is_int() || v.is_bool()) return Value::integer(v.as_int() < 0 ? -v.as_int() : v.as_int());
  throw JinjaError(std::string("bad operand type for abs(): '") + v.type_name() + "'");
}
Value f_round(Renderer&, const CallArgs& a) {
  int64_t precision = get(a, 1, "precision", Value::integer(0)).as_int();
  std::string method = get(a, 2, "method", Value::string("common")).to_str();
  const Value& v = input(a);
  if (!v.is_number()) throw JinjaError(std::string("type ") + v.type_name() + " doesn't define __round__ method");
  if (method == "common") {
    if (!v.is_float()) return Value::integer(v.as_int());
    // printf rounds the exact binary value half-to-even, as Python's round() does.
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", int(std::clamp<int64_t>(precision, 0, 300)), v.as_float());
    return Value::floating(std::strtod(buf, nullptr));
  }
  double scale = std::pow(10.0, double(precision));
  double x = v.as_float() * scale;
  if (method == "ceil") x = std::ceil(x);
  else if (method == "floor") x = std::floor(x);
  else throw JinjaError("method must be 'common', 'ceil' or 'floor'");
  return Value::floating(x / scale);
}

std::vector<Value> select_items(Renderer& r, const CallArgs& a, bool by_attr, bool keep_if) {
  size_t next = 1;
  Value attribute;
  if (by_attr) {
    if (a.positional.size() < 2) throw JinjaError("missing attribute for selectattr/rejectattr");
    attribute = a.positional[next++];
  }
  std::string test;
  CallArgs extra;
  if (next < a.positional.size()) {
    test = a.positional[next++].to_str();
    extra.positional.assign(a.positional.begin() + long(next), a.positional.end());
    extra.keyword = a.keyword;
  }
  std::vector<Value> out;
  for (auto& item : iterate(input(a))) {
    Value subject = by_attr ? attr_path(r, item, attribute) : item;
    bool ok = test.empty() ? subject.truthy() : r.apply_test(test, subject, extra);
    if (ok == keep_if) out.push_back(item);
  }
  return out;
}
Value f_select(Renderer& r, const CallArgs& a) { return Value::list(select_items(r, a, false, true)); }
Value f_reject(Renderer& r, const CallArgs& a) { return Value::list(select_items(r, a, false, false)); }
Value f_selectattr(Renderer& r, const CallArgs& a) { return Value::list(select_items(r, a, true, true)); }
Value f_rejectattr(Renderer& r, const CallArgs& a) { return Value::list(select_items(r, a, true, false)); }

Value f_map(Renderer& r, const CallArgs& a) {
  std::vector<Value> out;
  if (const Value* attribute = a.kw("attribute")) {
    const Value* def = a.kw("default");
    for (auto& item : iterate(input(a))) {
      Value v = attr_path(r, item, *attribute);
      out.push_back(v.is_undefined() && def ? *def : v);
    }
    return Value::list(std::move(out));
  }
  if (a.positional.size() < 2) throw JinjaError("map requires a filter argument");
  std::string name = a.positional[1].to_str();
  CallArgs extra;
  extra.positional.assign(a.positional.begin() + 2, a.positional.end());
  extra.keyword = a.keyword;
  for (auto& item : iterate(input(a))) out.push_back(r.apply_filter(name, item, extra));
  return Value::list(std::move(out));
}

// Sort key as jinja2's ignore_case: strings compare lowercased unless case_sensitive.
Value sort_key(const Value& v, bool case_sensitive) {
  return (!case_sensitive && v.is_string()) ? Value::string(py_lower(v.str())) : v;
}

Value f_sort(Renderer& r, const CallArgs& a) {
  bool reverse = get(a, 1, "reverse", Value::boolean(false)).truthy();
  bool cs = get(a, 2, "case_sensitive", Value::boolean(false)).truthy();
  Value attribute = get(a, 3, "attribute", Value::none());
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& item : iterate(input(a)))
    keyed.emplace_back(sort_key(attribute.is_none() ? item : attr_path(r, item, attribute), cs), item);
  std::stable_sort(keyed.begin(), keyed.end(), [&](auto& x, auto& y) {
    return reverse ? compare_values(y.first, x.first) < 0 : compare_values(x.first, y.first) < 0;
  });
  std::vector<Value> out;
  for (auto& k : keyed) out.push_back(k.second);
  return Value::list(std::move(out));
}
Value f_dictsort(Renderer&, const CallArgs& a) {
  const Value& v = input(a);
  if (!v.is_dict()) throw JinjaError("dictsort requires a mapping");
  bool cs = get(a, 1, "case_sensitive", Value::boolean(false)).truthy();
  std::string by = get(a, 2, "by", Value::string("key")).to_str();
  bool reverse = get(a, 3, "reverse", Value::boolean(false)).truthy();
  size_t pos = by == "value" ? 1 : 0;
  std::vector<Value> pairs;
  for (auto& [k, val] : v.dict_obj().entries) pairs.push_back(Value::list({k, val}, true));
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
    Value kx = sort_key(x.items()[pos], cs), ky = sort_key(y.items()[pos], cs);
    return reverse ? compare_values(ky, kx) < 0 : compare_values(kx, ky) < 0;
  });
  return Value::list(std::move(pairs));
}
Value f_unique(Renderer& r, const CallArgs& a) {
  bool cs = get(a, 1, "case_sensitive", Value::boolean(false)).truthy();
  Value attribute = get(a, 2, "attribute", Value::none());
  std::vector<Value> seen, out;
  for (auto& item : iterate(input(a))) {
    Value key = sort_key(attribute.is_none() ? item : attr_path(r, item, attribute), cs);
    bool dup = false;
    for (auto& s : seen)
      if (values_equal(s, key)) dup = true;
    if (!dup) {
      seen.push_back(key);
      out.push_back(item);
    }
  }
  return Value::list(std::move(out));
}
Value min_max(Renderer& r, const CallArgs& a, bool want_max) {
  bool cs = get(a, 1, "case_sensitive", Value::boolean(false)).truthy();
  Value attribute = get(a, 2, "attribute", Value::none());
  auto items = iterate(input(a));
  if (items.empty()) return Value::undefined(want_max ? "No aggregated item, sequence was empty." : "No aggregated item, sequence was empty.");
  size_t best = 0;
  auto key = [&](size_t i) { return sort_key(attribute.is_none() ? items[i] : attr_path(r, items[i], attribute), cs); };
  for (size_t i = 1; i < items.size(); ++i) {
    int c = compare_values(key(i), key(best));
    if (want_max ? c > 0 : c < 0) best = i;
  }
  return items[best];
}
Value f_min(Renderer& r, const CallArgs& a) { return min_max(r, a, false); }
Value f_max(Renderer& r, const CallArgs& a) { return min_max(r, a, true); }
Value f_sum(Renderer& r, const CallArgs& a) {
  Value attribute = get(a, 1, "attribute", Value::none());
  Value total = get(a, 2, "start", Value::integer(0));
  for (auto& item : iterate(input(a))) total = binary_op(r, "+", total, attribute.is_none() ? item : attr_path(r, item, attribute));
  return total;
}
Value f_batch(Renderer&, const CallArgs& a) {
  int64_t n = get(a, 1, "linecount", Value::integer(1)).as_int();
  if (n <= 0) throw JinjaError("batch size must be positive");
  const Value* fill = opt(a, 2, "fill_with");
  std::vector<Value> out, cur;
  for (auto& item : iterate(input(a))) {
    cur.push_back(item);
    if (int64_t(cur.size()) == n) {
      out.push_back(Value::list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (fill && !fill->is_none())
      while (int64_t(cur.size()) < n) cur.push_back(*fill);
    out.push_back(Value::list(std::move(cur)));
  }
  return Value::list(std::move(out));
}
Value f_slice(Renderer&, const CallArgs& a) {
  int64_t slices = get(a, 1, "slices", Value::integer(1)).as_int();
  if (slices <= 0) throw JinjaError("slice count must be positive");
  const Value* fill = opt(a, 2, "fill_with");
  auto seq = iterate(input(a));
  int64_t length = int64_t(seq.size()), per = length / slices, extra = length % slices, offset = 0;
  std::vector<Value> out;
  for (int64_t i = 0; i < slices; ++i) {
    int64_t start = offset + i * per;
    if (i < extra) ++offset;
    int64_t end = offset + (i + 1) * per;
    std::vector<Value> part(seq.begin() + start, seq.begin() + end);
    if (fill && !fill->is_none() && i >= extra) part.push_back(*fill);
    out.push_back(Value::list(std::move(part)));
  }
  return Value::list(std::move(out));
}
// jinja2's attr filter only looks up attributes, never items.
Value f_attr(Renderer& r, const CallArgs& a) {
  const Value& obj = input(a);
  std::string name = get(a, 1, "name", Value::string("")).to_str();
  if (obj.is_namespace() || obj.is_loop()) return r.get_attr(obj, name);
  if (obj.is_undefined()) return r.get_attr(obj, name);
  return bound_method(obj, name);
}
Value f_pprint(Renderer&, const CallArgs& a) { return Value::string(input(a).repr()); }

// ---- tests ----

Value t_defined(Renderer&, const CallArgs& a) { return Value::boolean(!input(a).is_undefined()); }
Value t_undefined(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_undefined()); }
Value t_none(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_none()); }
Value t_string(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_string()); }
Value t_number(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_number()); }
Value t_integer(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_int()); }
Value t_float(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_float()); }
Value t_boolean(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_bool()); }
Value t_true(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_bool() && input(a).as_bool()); }
Value t_false(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_bool() && !input(a).as_bool()); }
Value t_mapping(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_dict()); }
Value t_iterable(Renderer&, const CallArgs& a) {
  auto k = input(a).kind();
  return Value::boolean(k == Value::Kind::Undefined || k == Value::Kind::String || k == Value::Kind::List ||
                        k == Value::Kind::Dict || k == Value::Kind::Loop);
}
Value t_sequence(Renderer&, const CallArgs& a) {
  auto k = input(a).kind();
  return Value::boolean(k == Value::Kind::String || k == Value::Kind::List || k == Value::Kind::Dict);
}
Value t_callable(Renderer&, const CallArgs& a) { return Value::boolean(input(a).is_callable()); }
int64_t need_int(const Value& v) {
  if (!v.is_number()) throw JinjaError(std::string("unsupported operand type for %: '") + v.type_name() + "'");
  return v.is_float() ? int64_t(v.as_float()) : v.as_int();
}
Value t_odd(Renderer&, const CallArgs& a) { return Value::boolean((need_int(input(a)) % 2 + 2) % 2 == 1); }
Value t_even(Renderer&, const CallArgs& a) { return Value::boolean(need_int(input(a)) % 2 == 0); }
Value t_divisibleby(Renderer&, const CallArgs& a) {
  int64_t d = need_int(get(a, 1, "num", Value::integer(1)));
  if (d == 0) throw JinjaError("integer division or modulo by zero");
  return Value::boolean(need_int(input(a)) % d == 0);
}
Value t_eq(Renderer&, const CallArgs& a) { return Value::boolean(values_equal(input(a), get(a, 1, "other", Value()))); }
Value t_ne(Renderer&, const CallArgs& a) { return Value::boolean(!values_equal(input(a), get(a, 1, "other", Value()))); }
Value t_lt(Renderer&, const CallArgs& a) { return Value::boolean(compare_values(input(a), get(a, 1, "other", Value())) < 0); }
Value t_le(Renderer&, const CallArgs& a) { return Value::boolean(compare_values(input(a), get(a, 1, "other", Value())) <= 0); }
Value t_gt(Renderer&, const CallArgs& a) { return Value::boolean(compare_values(input(a), get(a, 1, "other", Value())) > 0); }
Value t_ge(Renderer&, const CallArgs& a) { return Value::boolean(compare_values(input(a), get(a, 1, "other", Value())) >= 0); }
Value t_in(Renderer&, const CallArgs& a) { return Value::boolean(contains(get(a, 1, "seq", Value()), input(a))); }
Value t_lower(Renderer&, const CallArgs& a) {
  std::string s = input(a).to_str();
  return Value::boolean(s == py_lower(s));
}
Value t_upper(Renderer&, const CallArgs& a) {
  std::string s = input(a).to_str();
  return Value::boolean(s == py_upper(s));
}
Value t_sameas(Renderer&, const CallArgs& a) {
  const Value& x = input(a);
  Value y = get(a, 1, "other", Value());
  if (x.kind() != y.kind()) return Value::boolean(false);
  if (x.is_none() || x.is_bool() || x.is_undefined()) return Value::boolean(values_equal(x, y));
  return Value::boolean(false);
}
Value t_escaped(Renderer&, const CallArgs&) { return Value::boolean(false); }
Value t_filter(Renderer&, const CallArgs& a) { return Value::boolean(find_filter(input(a).to_str()) != nullptr); }
Value t_test(Renderer&, const CallArgs& a) { return Value::boolean(find_test(input(a).to_str()) != nullptr); }

const std::unordered_map<std::string_view, BuiltinFn>& filters() {
  static const std::unordered_map<std::string_view, BuiltinFn> table = {
      {"trim", f_trim},       {"upper", f_upper},         {"lower", f_lower},         {"capitalize", f_capitalize},
      {"title", f_title},     {"replace", f_replace},     {"string", f_string},       {"safe", f_safe},
      {"escape", f_escape},   {"e", f_escape},            {"forceescape", f_escape},  {"indent", f_indent},
      {"center", f_center},   {"wordcount", f_wordcount}, {"striptags", f_striptags}, {"format", f_format},
      {"length", f_length},   {"count", f_length},        {"list", f_list},           {"first", f_first},
      {"last", f_last},       {"reverse", f_reverse},     {"join", f_join},           {"default", f_default},
      {"d", f_default},       {"items", f_items},         {"tojson", f_tojson},       {"int", f_int},
      {"float", f_float},     {"abs", f_abs},             {"round", f_round},         {"select", f_select},
      {"reject", f_reject},   {"selectattr", f_selectattr}, {"rejectattr", f_rejectattr}, {"map", f_map},
      {"sort", f_sort},       {"dictsort", f_dictsort},   {"unique", f_unique},       {"min", f_min},
      {"max", f_max},         {"sum", f_sum},             {"batch", f_batch},         {"slice", f_slice},
      {"attr", f_attr},       {"pprint", f_pprint},
  };
  return table;
}

const std::unordered_map<std::string_view, BuiltinFn>& tests() {
  static const std::unordered_map<std::string_view, BuiltinFn> table = {
      {"defined", t_defined},   {"undefined", t_undefined}, {"none", t_none},         {"string", t_string},
      {"number", t_number},     {"integer", t_integer},     {"float", t_float},       {"boolean", t_boolean},
      {"true", t_true},         {"false", t_false},         {"mapping", t_mapping},   {"iterable", t_iterable},
      {"sequence", t_sequence}, {"callable", t_callable},   {"odd", t_odd},           {"even", t_even},
      {"divisibleby", t_divisibleby}, {"eq", t_eq},         {"equalto", t_eq},        {"==", t_eq},
      {"ne", t_ne},             {"!=", t_ne},               {"lt", t_lt},             {"lessthan", t_lt},
      {"<", t_lt},              {"le", t_le},               {"<=", t_le},             {"gt", t_gt},
      {"greaterthan", t_gt},    {">", t_gt},                {"ge", t_ge},             {">=", t_ge},
      {"in", t_in},             {"lower", t_lower},         {"upper", t_upper},       {"sameas", t_sameas},
      {"escaped", t_escaped},   {"filter", t_filter},       {"test", t_test},
  };
  return table;
}

// ---- global functions ----

struct Builtin : CallableObj {
  Value (*impl)(Renderer&, const CallArgs&);
  Value call(Renderer& r, const CallArgs& a) override { return impl(r, a); }
  std::string repr() const override { return "<built-in function " + name + ">"; }
};

Value g_range(Renderer& r, const CallArgs& a) {
  auto num = [](const Value& v) {
    if (!v.is_int() && !v.is_bool()) throw JinjaError(std::string("'") + v.type_name() + "' object cannot be interpreted as an integer");
    return v.as_int();
  };
  int64_t start = 0, stop, step = 1;
  if (a.positional.size() == 1) stop = num(a.positional[0]);
  else if (a.positional.size() >= 2) {
    start = num(a.positional[0]);
    stop = num(a.positional[1]);
    if (a.positional.size() > 2) step = num(a.positional[2]);
  } else {
    throw JinjaError("range expected at least 1 argument, got 0");
  }
  if (step == 0) throw JinjaError("range() arg 3 must not be zero");
  int64_t count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                           : (start > stop ? (start - stop - step - 1) / -step : 0);
  // The sandbox's MAX_RANGE.
  if (count > 100000) throw JinjaError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  r.count_iterations(uint64_t(count) / 16);
  std::vector<Value> out;
  out.reserve(size_t(count));
  for (int64_t i = 0; i < count; ++i) out.push_back(Value::integer(start + i * step));
  return Value::list(std::move(out));
}

Value g_namespace(Renderer& r, const CallArgs& a) {
  auto d = std::make_shared<DictObj>();
  for (auto& p : a.positional) {
    if (!p.is_dict()) throw JinjaError("namespace() positional argument must be a mapping");
    for (auto& [k, v] : p.dict_obj().entries) d->set(k, v);
  }
  for (auto& [k, v] : a.keyword) d->set(Value::string(k), v);
  r.adopt_namespace(d);
  return Value::namespace_object(d);
}

Value g_dict(Renderer&, const CallArgs& a) {
  auto d = std::make_shared<DictObj>();
  for (auto& p : a.positional) {
    if (p.is_dict()) {
      for (auto& [k, v] : p.dict_obj().entries) d->set(k, v);
    } else {
      for (auto& pair : iterate(p)) {
        auto kv = iterate(pair);
        if (kv.size() != 2) throw JinjaError("dictionary update sequence element has wrong length");
        d->set(kv[0], kv[1]);
      }
    }
  }
  for (auto& [k, v] : a.keyword) d->set(Value::string(k), v);
  return Value::dict(d);
}

Value g_raise_exception(Renderer&, const CallArgs& a) {
  throw TemplateRaised(a.positional.empty() ? std::string("raise_exception called") : a.positional[0].to_str());
}

Value g_strftime_now(Renderer&, const CallArgs& a) {
  std::string fmt = a.positional.empty() ? std::string() : a.positional[0].to_str();
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[512];
  size_t n = fmt.empty() ? 0 : std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
  return Value::string(std::string(buf, n));
}

struct Joiner : CallableObj {
  std::string sep;
  bool used = false;
  Value call(Renderer&, const CallArgs&) override {
    if (!used) {
      used = true;
      return Value::string("");
    }
    return Value::string(sep);
  }
};

Value g_joiner(Renderer&, const CallArgs& a) {
  auto j = std::make_shared<Joiner>();
  j->name = "joiner";
  j->sep = a.positional.empty() ? ", " : a.positional[0].to_str();
  return Value::callable(j);
}

}  // namespace

BuiltinFn find_filter(const std::string& name) {
  auto it = filters().find(name);
  return it == filters().end() ? nullptr : it->second;
}

BuiltinFn find_test(const std::string& name) {
  auto it = tests().find(name);
  return it == tests().end() ? nullptr : it->second;
}

void install_globals(Renderer& r) {
  auto add = [&](const char* name, Value (*impl)(Renderer&, const CallArgs&)) {
    auto b = std::make_shared<Builtin>();
    b->name = name;
    b->impl = impl;
    r.set_global(name, Value::callable(b));
  };
  add("range", g_range);
  add("namespace", g_namespace);
  add("dict", g_dict);
  add("raise_exception", g_raise_exception);
  add("strftime_now", g_strftime_now);
  add("joiner", g_joiner);
}

}  // namespace llmesh::api::jinja
