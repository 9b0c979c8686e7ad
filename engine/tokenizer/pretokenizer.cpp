#include "tokenizer/pretokenizer.h"

#include <array>

#include "tokenizer/unicode_category.h"
#include "tokenizer/utf8.h"

namespace llmesh {

namespace {

// Per-character class bits, computed once per text.
enum : uint8_t {
  kLetter = 1,     // \p{L}
  kNumber = 2,     // \p{N}
  kSpace = 4,      // \s (Unicode White_Space)
  kNewline = 8,    // \r or \n
  kUpperish = 16,  // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
  kLowerish = 32,  // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
};

uint8_t classify(uint32_t cp) {
  uint8_t f = 0;
  if (is_unicode_space(cp)) f |= kSpace;
  if (cp == '\r' || cp == '\n') f |= kNewline;
  const UnicodeCategory c = unicode_category(cp);
  if (is_letter_category(c)) f |= kLetter;
  if (is_number_category(c)) f |= kNumber;
  const bool mark = is_mark_category(c);
  if (mark || c == UnicodeCategory::Lu || c == UnicodeCategory::Lt || c == UnicodeCategory::Lm ||
      c == UnicodeCategory::Lo) {
    f |= kUpperish;
  }
  if (mark || c == UnicodeCategory::Ll || c == UnicodeCategory::Lm || c == UnicodeCategory::Lo) {
    f |= kLowerish;
  }
  return f;
}

// The text as characters: code points, class bits and byte offsets (off[n] == text size).
struct Chars {
  std::vector<uint32_t> cp;
  std::vector<uint8_t> cls;
  std::vector<uint32_t> off;
  size_t size() const { return cp.size(); }
};

Chars decode(std::string_view text) {
  Chars c;
  c.cp.reserve(text.size());
  c.cls.reserve(text.size());
  c.off.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    const Utf8Char u = utf8_next(text, i);
    c.cp.push_back(u.cp);
    c.cls.push_back(u.cp < 0x80 ? classify(u.cp) : (u.valid ? classify(u.cp) : 0));
    c.off.push_back(static_cast<uint32_t>(i));
    i += u.len;
  }
  c.off.push_back(static_cast<uint32_t>(text.size()));
  return c;
}

// A matcher returns the end (exclusive, in characters) of the piece that starts at `i`,
// never more than `end`, always more than `i`.
struct Span {
  const Chars& c;
  size_t end;
  bool has(size_t i, uint8_t bits) const { return i < end && (c.cls[i] & bits) != 0; }
  bool is(size_t i, uint32_t cp) const { return i < end && c.cp[i] == cp; }
  // "Other": [^\s\p{L}\p{N}]
  bool other(size_t i) const { return i < end && (c.cls[i] & (kSpace | kLetter | kNumber)) == 0; }
  size_t run(size_t i, uint8_t bits) const {
    while (has(i, bits)) ++i;
    return i;
  }
  size_t run_other(size_t i) const {
    while (other(i)) ++i;
    return i;
  }
};

uint32_t ascii_lower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; }

// 's|'t|'re|'ve|'m|'ll|'d at i: the length (0 when none).
size_t contraction(const Span& s, size_t i, bool ignore_case) {
  if (!s.is(i, '\'') || i + 1 >= s.end) return 0;
  const auto at = [&](size_t k) {
    if (k >= s.end) return uint32_t{0};
    return ignore_case ? ascii_lower(s.c.cp[k]) : s.c.cp[k];
  };
  const uint32_t a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  const uint32_t b = at(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Whitespace alternatives shared by every regex here, tried after the others:
// [\s*[\r\n]+] (when with_newline_run) | \s+(?!\S) | \s+
size_t match_spaces(const Span& s, size_t i, bool with_newline_run) {
  const size_t j = s.run(i, kSpace);
  if (j == i) return i;
  if (with_newline_run) {
    // \s*[\r\n]+ : up to the last newline of the run.
    for (size_t k = j; k > i; --k) {
      if (s.c.cls[k - 1] & kNewline) return k;
    }
  }
  if (j == s.end || j - i == 1) return j;
  return j - 1;  // leave the last space to prefix the next word
}

size_t match_gpt2(const Span& s, size_t i) {
  if (size_t n = contraction(s, i, false)) return i + n;
  const size_t p = s.is(i, ' ') ? i + 1 : i;
  if (s.has(p, kLetter)) return s.run(p, kLetter);
  if (s.has(p, kNumber)) return s.run(p, kNumber);
  if (s.other(p)) return s.run_other(p);
  const size_t e = match_spaces(s, i, false);
  return e > i ? e : i + 1;
}

size_t match_llama3(const Span& s, size_t i, size_t max_digits) {
  if (size_t n = contraction(s, i, true)) return i + n;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (s.has(i, kLetter)) return s.run(i, kLetter);
  if (i < s.end && !s.has(i, kNewline | kLetter | kNumber) && s.has(i + 1, kLetter)) {
    return s.run(i + 1, kLetter);
  }
  // \p{N}{1,max}
  if (s.has(i, kNumber)) {
    size_t j = i;
    while (j - i < max_digits && s.has(j, kNumber)) ++j;
    return j;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const size_t p = s.is(i, ' ') ? i + 1 : i;
  if (s.other(p)) return s.run(s.run_other(p), kNewline);
  const size_t e = match_spaces(s, i, true);
  return e > i ? e : i + 1;
}

// gpt-4o style: [^\r\n\p{L}\p{N}]?U*L+C? | [^\r\n\p{L}\p{N}]?U+L*C? | \p{N}{1,max} |
// ' ?[^\s\p{L}\p{N}]+[\r\n/]*' | \s*[\r\n]+ | \s+(?!\S) | \s+
// where U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], L = [\p{Ll}\p{Lm}\p{Lo}\p{M}], C = contraction.
size_t match_gpt4o(const Span& s, size_t i, size_t max_digits, bool contractions) {
  const auto with_contraction = [&](size_t e) {
    if (!contractions) return e;
    return e + contraction(s, e, true);
  };
  const bool prefix_ok = i < s.end && !s.has(i, kNewline | kLetter | kNumber);
  for (int with_prefix = prefix_ok ? 1 : 0; with_prefix >= 0; --with_prefix) {
    const size_t p = i + static_cast<size_t>(with_prefix);
    // U*L+: the U-run p..q, then the L-run at q, or else end after the last L inside the U-run.
    const size_t q = s.run(p, kUpperish);
    if (s.has(q, kLowerish)) return with_contraction(s.run(q, kLowerish));
    for (size_t k = q; k > p; --k) {
      if (s.c.cls[k - 1] & kLowerish) return with_contraction(k);
    }
  }
  for (int with_prefix = prefix_ok ? 1 : 0; with_prefix >= 0; --with_prefix) {
    const size_t p = i + static_cast<size_t>(with_prefix);
    const size_t q = s.run(p, kUpperish);
    if (q > p) return with_contraction(s.run(q, kLowerish));
  }
  if (s.has(i, kNumber)) {
    size_t j = i;
    while (j - i < max_digits && s.has(j, kNumber)) ++j;
    return j;
  }
  const size_t p = s.is(i, ' ') ? i + 1 : i;
  if (s.other(p)) {
    size_t j = s.run_other(p);
    while (j < s.end && (s.has(j, kNewline) || s.c.cp[j] == '/')) ++j;
    return j;
  }
  const size_t e = match_spaces(s, i, true);
  return e > i ? e : i + 1;
}

template <typename Match>
void split_with(const Chars& c, size_t begin, size_t end, std::vector<size_t>& bounds,
                Match match) {
  const Span s{c, end};
  for (size_t i = begin; i < end;) {
    size_t e = match(s, i);
    if (e <= i || e > end) e = i + 1;  // defensive: always progress
    bounds.push_back(e);
    i = e;
  }
}

}  // namespace

PreTokenizerChoice pre_tokenizer_for(std::string_view pre) {
  using K = PreTokenizerKind;
  struct Entry {
    std::string_view name;
    K kind;
    bool exact;
  };
  static constexpr std::array<Entry, 40> kTable = {{
      {"default", K::Gpt2, true},          {"gpt2", K::Gpt2, true},
      {"gpt-2", K::Gpt2, true},            {"phi-2", K::Gpt2, true},
      {"mpt", K::Gpt2, true},              {"olmo", K::Gpt2, true},
      {"jais", K::Gpt2, true},             {"roberta-bpe", K::Gpt2, true},
      {"jina-es", K::Gpt2, true},          {"jina-de", K::Gpt2, true},
      {"jina-v2-es", K::Gpt2, true},       {"jina-v2-de", K::Gpt2, true},
      {"jina-v2-code", K::Gpt2, true},     {"gigachat", K::Gpt2, true},
      {"poro-chat", K::Gpt2, true},        {"viking", K::Gpt2, true},
      {"starcoder", K::Gpt2SplitDigits, true}, {"refact", K::Gpt2SplitDigits, true},
      {"command-r", K::Gpt2SplitDigits, true}, {"smollm", K::Gpt2SplitDigits, true},
      {"codeshell", K::Gpt2SplitDigits, true}, {"exaone", K::Gpt2SplitDigits, true},
      {"minerva-7b", K::Gpt2SplitDigits, true},
      {"llama3", K::Llama3, true},         {"llama-bpe", K::Llama3, true},
      {"llama-v3", K::Llama3, true},       {"falcon3", K::Llama3, true},
      {"dbrx", K::Llama3, true},           {"smaug-bpe", K::Llama3, true},
      {"pixtral", K::Tekken, true},        {"tekken", K::Tekken, true},
      {"qwen2", K::Qwen2, true},           {"deepseek-r1-qwen", K::Qwen2, true},
      {"stablelm2", K::Qwen2, true},       {"megrez", K::Qwen2, true},
      {"hunyuan", K::Qwen2, true},         {"gpt-4o", K::Gpt4o, true},
      {"llama4", K::Gpt4o, true},
      // Multi-regex pre-tokenizers not implemented exactly: the closest single regex.
      {"deepseek-llm", K::Llama3, false},  {"deepseek-coder", K::Llama3, false},
  }};
  for (const Entry& e : kTable) {
    if (e.name == pre) return {e.kind, e.exact};
  }
  if (pre.starts_with("deepseek")) return {K::Llama3, false};
  if (pre.starts_with("qwen")) return {K::Qwen2, false};
  if (pre.starts_with("llama")) return {K::Llama3, false};
  return {K::Gpt2, false};
}

const char* pre_tokenizer_name(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::Gpt2: return "gpt2";
    case PreTokenizerKind::Gpt2SplitDigits: return "gpt2-split-digits";
    case PreTokenizerKind::Llama3: return "llama3";
    case PreTokenizerKind::Qwen2: return "qwen2";
    case PreTokenizerKind::Gpt4o: return "gpt-4o";
    case PreTokenizerKind::Tekken: return "tekken";
  }
  return "?";
}

void pre_tokenize(PreTokenizerKind kind, std::string_view text,
                  std::vector<std::pair<uint32_t, uint32_t>>& pieces) {
  if (text.empty()) return;
  const Chars c = decode(text);
  std::vector<size_t> bounds;  // piece ends, in characters
  bounds.reserve(c.size() / 2 + 4);
  switch (kind) {
    case PreTokenizerKind::Gpt2:
      split_with(c, 0, c.size(), bounds, match_gpt2);
      break;
    case PreTokenizerKind::Gpt2SplitDigits: {
      // First pass: each \p{N} alone; the GPT-2 regex then splits the text between digits.
      size_t start = 0;
      for (size_t i = 0; i <= c.size(); ++i) {
        if (i < c.size() && !(c.cls[i] & kNumber)) continue;
        split_with(c, start, i, bounds, match_gpt2);
        if (i < c.size()) bounds.push_back(i + 1);
        start = i + 1;
      }
      break;
    }
    case PreTokenizerKind::Llama3:
      split_with(c, 0, c.size(), bounds, [](const Span& s, size_t i) { return match_llama3(s, i, 3); });
      break;
    case PreTokenizerKind::Qwen2:
      split_with(c, 0, c.size(), bounds, [](const Span& s, size_t i) { return match_llama3(s, i, 1); });
      break;
    case PreTokenizerKind::Gpt4o:
      split_with(c, 0, c.size(), bounds,
                 [](const Span& s, size_t i) { return match_gpt4o(s, i, 3, true); });
      break;
    case PreTokenizerKind::Tekken:
      split_with(c, 0, c.size(), bounds,
                 [](const Span& s, size_t i) { return match_gpt4o(s, i, 1, false); });
      break;
  }
  size_t prev = 0;
  for (size_t b : bounds) {
    pieces.emplace_back(c.off[prev], c.off[b]);
    prev = b;
  }
}

}  // namespace llmesh
