// The token table every tokenizer model shares: texts, scores, types, special ids, the
// end-of-generation set and the matcher that finds special/added tokens written in text.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/token_index.h"

namespace llmesh {

// tokenizer.ggml.token_type values.
enum class TokenType : uint8_t {
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

struct Vocab {
  Vocab() = default;
  Vocab(const Vocab&) = delete;  // id_of points into `text`
  Vocab& operator=(const Vocab&) = delete;

  // Reads tokens, scores, token types and the special ids; throws std::runtime_error naming
  // the key when something is missing, mismatched or out of range. `spm` selects defaults
  // (add_bos_token is true for SentencePiece models).
  void load(const GgufFile& f, bool spm);

  int32_t size() const { return static_cast<int32_t>(text.size()); }
  int32_t find(std::string_view s) const { return id_of.find(s); }
  bool valid(int32_t id) const { return id >= 0 && id < size(); }

  // Splits `text` into plain-text fragments and special tokens (longest match first).
  // User-defined tokens are always recognised, control/unknown ones only with parse_special.
  // Each element is either {-1, fragment} or {token id, token text}.
  void partition(std::string_view text, bool parse_special,
                 std::vector<std::pair<int32_t, std::string_view>>& out) const;

  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<TokenType> type;
  TokenIndex id_of;  // text -> first id with that text
  std::vector<uint8_t> eog;                             // 1 for end-of-generation tokens
  std::array<int32_t, 256> byte_token{};                // <0xNN> tokens, -1 when absent

  int32_t bos = -1, eos = -1, unk = -1, eot = -1, pad = -1;
  bool add_bos = false, add_eos = false;

 private:
  // Candidates for special-token matching, by first byte, longest first.
  std::array<std::vector<int32_t>, 256> special_by_first_{};
};

}  // namespace llmesh
