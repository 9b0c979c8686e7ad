// What the SentencePiece and byte-level BPE tokenizers share: the vocabulary, special-token
// splitting, BOS/EOS. Each model only says how to encode plain text and how a token reads.
#pragma once
#include <memory>

#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace llmesh {

class VocabTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special,
                              bool parse_special) const final;

  int32_t n_vocab() const final { return vocab_.size(); }
  const std::string& token_text(int32_t id) const final;
  int32_t bos() const final { return vocab_.bos; }
  int32_t eos() const final { return vocab_.eos; }
  bool add_bos() const final { return vocab_.add_bos; }
  bool is_eog(int32_t id) const final { return vocab_.valid(id) && vocab_.eog[static_cast<size_t>(id)]; }
  bool is_control(int32_t id) const final { return type_of(id) == TokenType::Control; }

  const Vocab& vocab() const { return vocab_; }
  TokenType type_of(int32_t id) const {
    return vocab_.valid(id) ? vocab_.type[static_cast<size_t>(id)] : TokenType::Unused;
  }

 protected:
  // Encodes text that holds no special token. `after_special`: the fragment begins the text
  // or follows a special token (SentencePiece adds its space prefix there).
  virtual void encode_plain(std::string_view text, bool after_special,
                            std::vector<int32_t>& out) const = 0;

  Vocab vocab_;
};

std::unique_ptr<Tokenizer> make_spm_tokenizer(const GgufFile& f);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(const GgufFile& f);

}  // namespace llmesh
