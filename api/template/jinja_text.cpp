#include "template/jinja_text.h"

#include <algorithm>

namespace llmesh::api::jinja {

namespace {
bool is_line_break(uint32_t c) {
  return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}
}  // namespace

std::string py_strip(const std::string& s, const std::string* chars, bool left, bool right) {
  auto cps = utf8_decode(s);
  std::vector<uint32_t> set;
  if (chars) set = utf8_decode(*chars);
  auto strip_it = [&](uint32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : is_py_space(c);
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return utf8_encode(std::vector<uint32_t>(cps.begin() + long(b), cps.begin() + long(e)));
}

std::vector<std::string> py_split_whitespace(const std::string& s, int64_t maxsplit, bool from_right) {
  auto cps = utf8_decode(s);
  std::vector<std::pair<size_t, size_t>> words;  // [begin, end) in code points
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && is_py_space(cps[i])) ++i;
    if (i >= cps.size()) break;
    size_t b = i;
    while (i < cps.size() && !is_py_space(cps[i])) ++i;
    words.emplace_back(b, i);
  }
  auto sub = [&](size_t b, size_t e) {
    return utf8_encode(std::vector<uint32_t>(cps.begin() + long(b), cps.begin() + long(e)));
  };
  std::vector<std::string> out;
  if (maxsplit < 0 || size_t(maxsplit) >= words.size()) {
    for (auto [b, e] : words) out.push_back(sub(b, e));
    return out;
  }
  if (!from_right) {
    for (size_t w = 0; w < size_t(maxsplit); ++w) out.push_back(sub(words[w].first, words[w].second));
    // The rest keeps its inner whitespace, trailing whitespace stripped.
    size_t e = cps.size();
    while (e > 0 && is_py_space(cps[e - 1])) --e;
    out.push_back(sub(words[size_t(maxsplit)].first, e));
  } else {
    size_t first_kept = words.size() - size_t(maxsplit);
    size_t b = 0;
    while (b < cps.size() && is_py_space(cps[b])) ++b;
    out.push_back(sub(b, words[first_kept - 1].second));
    for (size_t w = first_kept; w < words.size(); ++w) out.push_back(sub(words[w].first, words[w].second));
  }
  return out;
}

std::vector<std::string> py_split(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right) {
  if (sep.empty()) throw JinjaError("empty separator");
  std::vector<std::string> out;
  if (!from_right) {
    size_t start = 0;
    while (maxsplit < 0 || int64_t(out.size()) < maxsplit) {
      size_t p = s.find(sep, start);
      if (p == std::string::npos) break;
      out.push_back(s.substr(start, p - start));
      start = p + sep.size();
    }
    out.push_back(s.substr(start));
    return out;
  }
  size_t end = s.size();
  std::vector<std::string> rev;
  while (maxsplit < 0 || int64_t(rev.size()) < maxsplit) {
    if (end < sep.size()) break;
    size_t p = s.rfind(sep, end - sep.size());
    if (p == std::string::npos) break;
    rev.push_back(s.substr(p + sep.size(), end - p - sep.size()));
    end = p;
  }
  rev.push_back(s.substr(0, end));
  return std::vector<std::string>(rev.rbegin(), rev.rend());
}

std::vector<std::string> py_splitlines(const std::string& s, bool keepends) {
  auto cps = utf8_decode(s);
  std::vector<std::string> out;
  size_t b = 0, i = 0;
  while (i < cps.size()) {
    if (!is_line_break(cps[i])) {
      ++i;
      continue;
    }
    size_t brk = (cps[i] == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ? 2 : 1;
    size_t e = keepends ? i + brk : i;
    out.push_back(utf8_encode(std::vector<uint32_t>(cps.begin() + long(b), cps.begin() + long(e))));
    i += brk;
    b = i;
  }
  if (b < cps.size()) out.push_back(utf8_encode(std::vector<uint32_t>(cps.begin() + long(b), cps.end())));
  return out;
}

std::string py_upper(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = char(c - 32);
  return out;
}

std::string py_lower(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = char(c + 32);
  return out;
}

std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    bool lower = c >= 'a' && c <= 'z', upper = c >= 'A' && c <= 'Z';
    if (lower && !prev_cased) c = char(c - 32);
    else if (upper && prev_cased) c = char(c + 32);
    // Non-ASCII letters count as cased so that "émile" does not capitalise the 'm'.
    prev_cased = lower || upper || static_cast<unsigned char>(c) >= 0x80;
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out = py_lower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = char(out[0] - 32);
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& with, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `with` between every code point (and at both ends).
    auto cps = utf8_decode(s);
    int64_t n = 0;
    for (uint32_t c : cps) {
      if (count < 0 || n < count) {
        out += with;
        ++n;
      }
      utf8_append(out, c);
    }
    if (count < 0 || n < count) out += with;
    return out;
  }
  size_t start = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t p = s.find(old, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += with;
    start = p + old.size();
    ++n;
  }
  out.append(s, start, std::string::npos);
  return out;
}

}  // namespace llmesh::api::jinja
