// Tokenizers built from GGUF metadata: SentencePiece-style ("llama") and byte-level BPE ("gpt2").
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"

namespace llmesh {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Builds the tokenizer a GGUF file describes; throws std::runtime_error naming what is wrong
  // (unknown tokenizer.ggml.model, missing arrays, bad ids...).
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);

  // add_special: add BOS/EOS as the metadata says (tokenizer.ggml.add_bos_token...).
  // parse_special: recognise special/control and user-defined added tokens written in the text.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special,
                                      bool parse_special) const = 0;
  // The bytes a token stands for (byte tokens and byte-level BPE decoded; SentencePiece's
  // U+2581 turned into a space). Control tokens give "" unless `special` is true.
  // decode() concatenates pieces (raw bytes: may end in half a character), dropping the space
  // SentencePiece adds in front of the text.
  virtual std::string token_to_piece(int32_t id, bool special = false) const = 0;
  std::string decode(const std::vector<int32_t>& ids, bool special = false) const;

  virtual int32_t n_vocab() const = 0;
  virtual const std::string& token_text(int32_t id) const = 0;  // as stored in the GGUF
  virtual int32_t bos() const = 0;  // -1 when none
  virtual int32_t eos() const = 0;  // -1 when none
  virtual bool add_bos() const = 0;
  // End of generation: EOS, EOT, <|im_end|>, <|eot_id|> and similar.
  virtual bool is_eog(int32_t id) const = 0;
  virtual bool is_control(int32_t id) const = 0;

 protected:
  // decode() drops one leading space from the first text it produces (SentencePiece adds one
  // when encoding). StreamDecoder never drops it: a stream continues a prompt.
  virtual bool strips_leading_space() const { return false; }
};

// Streaming detokenization: feed tokens one at a time, get only complete UTF-8 back.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool special = false) : tok_(tok), special_(special) {}
  std::string push(int32_t id);  // text that is now complete (possibly empty)
  std::string flush();           // whatever is left (invalid bytes replaced with U+FFFD)

 private:
  const Tokenizer& tok_;
  bool special_;
  std::string pending_;
};

}  // namespace llmesh
