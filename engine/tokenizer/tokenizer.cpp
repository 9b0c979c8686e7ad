#include "tokenizer/tokenizer.h"

#include <stdexcept>

#include <fmt/format.h>

#include "tokenizer/utf8.h"
#include "tokenizer/vocab_tokenizer.h"

namespace llmesh {

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  const GgufValue* m = f.find("tokenizer.ggml.model");
  if (!m) throw std::runtime_error(fmt::format("{}: missing 'tokenizer.ggml.model'", f.path()));
  if (m->type != GgufType::STRING) {
    throw std::runtime_error(fmt::format("{}: 'tokenizer.ggml.model' must be a string", f.path()));
  }
  if (m->s == "llama") return make_spm_tokenizer(f);
  if (m->s == "gpt2") return make_bpe_tokenizer(f);
  throw std::runtime_error(fmt::format(
      "{}: tokenizer.ggml.model '{}' is not supported (supported: llama, gpt2)", f.path(), m->s));
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool special) const {
  std::string out;
  bool first = strips_leading_space();
  for (int32_t id : ids) {
    std::string piece = token_to_piece(id, special);
    if (first && !piece.empty()) {
      first = false;
      if (piece[0] == ' ') piece.erase(0, 1);
    }
    out += piece;
  }
  return out;
}

std::vector<int32_t> VocabTokenizer::encode(std::string_view text, bool add_special,
                                            bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && vocab_.add_bos && vocab_.bos >= 0) out.push_back(vocab_.bos);
  std::vector<std::pair<int32_t, std::string_view>> parts;
  vocab_.partition(text, parse_special, parts);
  bool after_special = true;
  for (const auto& [id, piece] : parts) {
    if (id >= 0) {
      out.push_back(id);
      after_special = true;
    } else {
      encode_plain(piece, after_special, out);
      after_special = false;
    }
  }
  if (add_special && vocab_.add_eos && vocab_.eos >= 0) out.push_back(vocab_.eos);
  return out;
}

const std::string& VocabTokenizer::token_text(int32_t id) const {
  static const std::string kEmpty;
  return vocab_.valid(id) ? vocab_.text[static_cast<size_t>(id)] : kEmpty;
}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_.token_to_piece(id, special_);
  // Emit every complete character; replace bytes that can never become valid; keep an
  // incomplete tail for the next token.
  const size_t keep = utf8_incomplete_tail(pending_);
  const std::string_view ready(pending_.data(), pending_.size() - keep);
  std::string out;
  out.reserve(ready.size());
  for (size_t i = 0; i < ready.size();) {
    const Utf8Char c = utf8_next(ready, i);
    if (c.valid) {
      out.append(ready.substr(i, c.len));
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += c.len;
  }
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  for (size_t i = 0; i < pending_.size();) {
    const Utf8Char c = utf8_next(pending_, i);
    if (c.valid) {
      out.append(pending_, i, c.len);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += c.len;
  }
  pending_.clear();
  return out;
}

}  // namespace llmesh
