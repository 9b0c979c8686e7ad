// Pre-tokenizers of byte-level BPE models: split text into words before BPE merges, as the
// regex named by tokenizer.ggml.pre would. Each regex is a hand-written matcher (see
// docs/tokenizer.md for the regexes); std::regex knows nothing of \p{L}.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmesh {

enum class PreTokenizerKind {
  Gpt2,             // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Gpt2SplitDigits,  // every \p{N} on its own first, then Gpt2 (starcoder, smollm, command-r...)
  Llama3,           // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|...
  Qwen2,            // Llama3 with \p{N} one digit at a time
  Gpt4o,            // case-aware words with trailing contractions, \p{N}{1,3} (gpt-4o, llama4)
  Tekken,           // Gpt4o without contractions, single digits (Mistral Nemo)
};

struct PreTokenizerChoice {
  PreTokenizerKind kind = PreTokenizerKind::Gpt2;
  bool exact = true;  // false: `pre` is unknown or only approximated; a warning is due
};

// Maps a tokenizer.ggml.pre value to its pre-tokenizer. Never throws: unknown values get the
// closest known one with exact = false.
PreTokenizerChoice pre_tokenizer_for(std::string_view pre);
const char* pre_tokenizer_name(PreTokenizerKind kind);

// Splits `text` into pieces, appended to `pieces` as [begin, end) byte offsets that cover the
// text in order. Invalid UTF-8 bytes count as one character each (neither letter, digit nor
// space).
void pre_tokenize(PreTokenizerKind kind, std::string_view text,
                  std::vector<std::pair<uint32_t, uint32_t>>& pieces);

}  // namespace llmesh
