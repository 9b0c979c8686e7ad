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
    // The rest is kept as it is, trailing whitespace included.
    out.push_back(sub(words[size_t(maxsplit)].first, cps.size()));
  } else {
    size_t first_kept = words.size() - size_t(maxsplit);
    out.push_back(sub(0, words[first_kept - 1].second));
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

// Simple case mappings for the scripts chat text commonly uses: ASCII, Latin-1, Latin
// Extended-A, Greek, Cyrillic and fullwidth Latin. Other code points map to themselves.
uint32_t to_upper_cp(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (c == 0xb5) return 0x39c;
  if (c == 0xff) return 0x178;
  if (c >= 0xe0 && c <= 0xfe && c != 0xf7) return c - 0x20;
  if (c >= 0x100 && c <= 0x17f) {
    if (c == 0x131) return 'I';
    if (c == 0x17f) return 'S';
    bool odd_lower = (c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177);
    bool even_lower = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e);
    if (odd_lower && (c & 1)) return c - 1;
    if (even_lower && !(c & 1)) return c - 1;
    return c;
  }
  if (c >= 0x3b1 && c <= 0x3c9 && c != 0x3c2) return c - 0x20;
  if (c == 0x3c2) return 0x3a3;
  if (c == 0x3ac) return 0x386;
  if (c >= 0x3ad && c <= 0x3af) return c - 0x25;
  if (c == 0x3cc) return 0x38c;
  if (c == 0x3cd || c == 0x3ce) return c - 0x3f;
  if (c >= 0x430 && c <= 0x44f) return c - 0x20;
  if (c >= 0x450 && c <= 0x45f) return c - 0x50;
  if (c >= 0xff41 && c <= 0xff5a) return c - 0x20;
  return c;
}

uint32_t to_lower_cp(uint32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (c == 0x178) return 0xff;
  if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 0x20;
  if (c >= 0x100 && c <= 0x17f) {
    bool odd_lower = (c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177);
    bool even_lower = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e);
    if (c == 0x130) return 'i';
    if (odd_lower && !(c & 1)) return c + 1;
    if (even_lower && (c & 1)) return c + 1;
    return c;
  }
  if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 0x20;
  if (c == 0x386) return 0x3ac;
  if (c >= 0x388 && c <= 0x38a) return c + 0x25;
  if (c == 0x38c) return 0x3cc;
  if (c == 0x38e || c == 0x38f) return c + 0x3f;
  if (c >= 0x410 && c <= 0x42f) return c + 0x20;
  if (c >= 0x400 && c <= 0x40f) return c + 0x50;
  if (c >= 0xff21 && c <= 0xff3a) return c + 0x20;
  return c;
}

bool is_cased(uint32_t c) { return to_upper_cp(c) != c || to_lower_cp(c) != c || c == 0xdf; }

namespace {
bool all_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}
// Maps each code point; ß upper-cases to "SS" as in Python.
std::string map_case(const std::string& s, bool upper) {
  if (all_ascii(s)) {
    std::string out = s;
    for (char& c : out) c = char(upper ? to_upper_cp(uint32_t(c)) : to_lower_cp(uint32_t(c)));
    return out;
  }
  std::string out;
  auto cps = utf8_decode(s);
  for (size_t i = 0; i < cps.size(); ++i) {
    uint32_t c = cps[i];
    if (upper && c == 0xdf) {
      out += "SS";
      continue;
    }
    // Python's final sigma: a capital sigma ending a word lower-cases to 'ς'.
    if (!upper && c == 0x3a3 && i > 0 && is_cased(cps[i - 1]) && (i + 1 == cps.size() || !is_cased(cps[i + 1]))) {
      utf8_append(out, 0x3c2);
      continue;
    }
    utf8_append(out, upper ? to_upper_cp(c) : to_lower_cp(c));
  }
  return out;
}
}  // namespace

std::string py_upper(const std::string& s) { return map_case(s, true); }
std::string py_lower(const std::string& s) { return map_case(s, false); }

std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (uint32_t c : utf8_decode(s)) {
    utf8_append(out, prev_cased ? to_lower_cp(c) : to_upper_cp(c));
    prev_cased = is_cased(c);
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  auto cps = utf8_decode(s);
  std::string out;
  for (size_t i = 0; i < cps.size(); ++i) utf8_append(out, i == 0 ? to_upper_cp(cps[i]) : to_lower_cp(cps[i]));
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
