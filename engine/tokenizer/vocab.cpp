#include "tokenizer/vocab.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace llmesh {

namespace {

[[noreturn]] void bad(const GgufFile& f, const std::string& what) {
  throw std::runtime_error(fmt::format("{}: tokenizer: {}", f.path(), what));
}

// A token id from metadata: -1 when absent or negative (some converters write -1 for none).
int32_t read_id(const GgufFile& f, std::string_view key, int32_t n_vocab) {
  const GgufValue* v = f.find(key);
  if (!v) return -1;
  if (!v->is_integer()) bad(f, fmt::format("'{}' must be an integer token id", key));
  const bool is_signed = v->type == GgufType::INT8 || v->type == GgufType::INT16 ||
                         v->type == GgufType::INT32 || v->type == GgufType::INT64;
  if (is_signed && v->i < 0) return -1;
  if (v->u >= static_cast<uint64_t>(n_vocab)) {
    bad(f, fmt::format("'{}' = {} is out of range (the vocabulary has {} tokens)", key, v->u,
                       n_vocab));
  }
  return static_cast<int32_t>(v->u);
}

bool is_numeric(GgufType t) {
  return t != GgufType::STRING && t != GgufType::ARRAY;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

void Vocab::load(const GgufFile& f, bool spm) {
  const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
  if (!tokens) bad(f, "missing 'tokenizer.ggml.tokens'");
  if (tokens->type != GgufType::ARRAY || tokens->elem != GgufType::STRING) {
    bad(f, "'tokenizer.ggml.tokens' must be an array of strings");
  }
  if (tokens->strings.empty()) bad(f, "'tokenizer.ggml.tokens' is empty");
  if (tokens->strings.size() > static_cast<size_t>(INT32_MAX)) {
    bad(f, "'tokenizer.ggml.tokens' has too many tokens");
  }
  const size_t n = tokens->strings.size();
  text.assign(tokens->strings.begin(), tokens->strings.end());

  score.assign(n, 0.0f);
  if (const GgufValue* s = f.find("tokenizer.ggml.scores")) {
    if (s->type != GgufType::ARRAY || !is_numeric(s->elem)) {
      bad(f, "'tokenizer.ggml.scores' must be a numeric array");
    }
    if (s->count != n) {
      bad(f, fmt::format("'tokenizer.ggml.scores' has {} entries but there are {} tokens",
                         s->count, n));
    }
    for (size_t i = 0; i < n; ++i) score[i] = static_cast<float>(s->array_number(i));
  }

  type.assign(n, TokenType::Normal);
  if (const GgufValue* t = f.find("tokenizer.ggml.token_type")) {
    if (t->type != GgufType::ARRAY || !is_numeric(t->elem) || t->elem == GgufType::FLOAT32 ||
        t->elem == GgufType::FLOAT64) {
      bad(f, "'tokenizer.ggml.token_type' must be an integer array");
    }
    if (t->count != n) {
      bad(f, fmt::format("'tokenizer.ggml.token_type' has {} entries but there are {} tokens",
                         t->count, n));
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t v = t->array_int(i);
      if (v < 0 || v > 6) {
        bad(f, fmt::format("'tokenizer.ggml.token_type'[{}] = {} is not a token type (0..6)", i, v));
      }
      type[i] = static_cast<TokenType>(v);
    }
  }

  id_of.build(text);

  // <0xNN> byte tokens (SentencePiece byte fallback).
  byte_token.fill(-1);
  for (size_t i = 0; i < n; ++i) {
    const std::string& s = text[i];
    if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') continue;
    if (type[i] != TokenType::Byte && type[i] != TokenType::Undefined &&
        f.has("tokenizer.ggml.token_type")) {
      continue;
    }
    const int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    if (hi < 0 || lo < 0) continue;
    int32_t& slot = byte_token[static_cast<size_t>(hi * 16 + lo)];
    if (slot < 0) slot = static_cast<int32_t>(i);
  }

  const int32_t nv = static_cast<int32_t>(n);
  bos = read_id(f, "tokenizer.ggml.bos_token_id", nv);
  eos = read_id(f, "tokenizer.ggml.eos_token_id", nv);
  unk = read_id(f, "tokenizer.ggml.unknown_token_id", nv);
  eot = read_id(f, "tokenizer.ggml.eot_token_id", nv);
  pad = read_id(f, "tokenizer.ggml.padding_token_id", nv);
  const int32_t eom = read_id(f, "tokenizer.ggml.eom_token_id", nv);
  add_bos = f.opt_bool("tokenizer.ggml.add_bos_token").value_or(spm);
  add_eos = f.opt_bool("tokenizer.ggml.add_eos_token").value_or(false);
  if (add_bos && bos < 0) bad(f, "'tokenizer.ggml.add_bos_token' is set but there is no bos_token_id");
  if (add_eos && eos < 0) bad(f, "'tokenizer.ggml.add_eos_token' is set but there is no eos_token_id");
  if (spm && unk < 0) unk = find("<unk>");

  // End of generation: the ids metadata names, plus the usual end-of-turn tokens.
  eog.assign(n, 0);
  for (int32_t id : {eos, eot, eom}) {
    if (id >= 0) eog[static_cast<size_t>(id)] = 1;
  }
  static constexpr std::string_view kEndTokens[] = {
      "<|eot_id|>",   "<|im_end|>",   "<|endoftext|>", "<end_of_turn>", "<|end|>",
      "<|eom_id|>",   "<EOT>",        "<|end_of_text|>", "<|return|>", "<|call|>",
      "<｜end▁of▁sentence｜>",
  };
  for (std::string_view t : kEndTokens) {
    const int32_t id = find(t);
    if (id >= 0 && type[static_cast<size_t>(id)] != TokenType::Normal) {
      eog[static_cast<size_t>(id)] = 1;
    }
  }

  // Special-token matcher: control, unknown and user-defined tokens.
  for (auto& v : special_by_first_) v.clear();
  for (size_t i = 0; i < n; ++i) {
    const TokenType t = type[i];
    if (text[i].empty()) continue;
    if (t != TokenType::Control && t != TokenType::UserDefined && t != TokenType::Unknown) continue;
    special_by_first_[static_cast<uint8_t>(text[i][0])].push_back(static_cast<int32_t>(i));
  }
  for (auto& v : special_by_first_) {
    std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) {
      return text[static_cast<size_t>(a)].size() > text[static_cast<size_t>(b)].size();
    });
  }
}

void Vocab::partition(std::string_view s, bool parse_special,
                      std::vector<std::pair<int32_t, std::string_view>>& out) const {
  size_t start = 0;  // start of the pending plain-text fragment
  for (size_t i = 0; i < s.size();) {
    int32_t hit = -1;
    for (int32_t id : special_by_first_[static_cast<uint8_t>(s[i])]) {
      const TokenType t = type[static_cast<size_t>(id)];
      if (!parse_special && t != TokenType::UserDefined) continue;
      if (s.substr(i).starts_with(text[static_cast<size_t>(id)])) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > start) out.emplace_back(-1, s.substr(start, i - start));
    const std::string& t = text[static_cast<size_t>(hit)];
    out.emplace_back(hit, std::string_view(t));
    i += t.size();
    start = i;
  }
  if (start < s.size()) out.emplace_back(-1, s.substr(start));
}

}  // namespace llmesh
