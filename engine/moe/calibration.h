// The text an expert profile and the quality gate run on (docs/moe.md, "Calibration"): a
// built-in set of varied English (stories, dialogue, instructions, facts, code, arithmetic), or
// the user's prompts, tokenized into sequences of bounded length.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace llmesh::moe {

// The built-in calibration texts.
const std::vector<std::string>& builtin_calibration_texts();

// Prompts from a file: a .jsonl file holds one JSON object per line with a "text" or "prompt"
// string; any other file holds prompts separated by blank lines. Throws std::runtime_error
// naming the file and line when it cannot be read or holds no prompt.
std::vector<std::string> read_prompts_file(const std::string& path);

struct CalibrationSet {
  std::vector<std::vector<int32_t>> sequences;  // each starts with BOS when the model adds one
  int64_t tokens() const;
};

// Tokenizes `texts` into sequences of at most `max_seq_tokens` tokens (a longer text is cut
// into several), stopping once `max_tokens` tokens are collected. Sequences shorter than 2
// tokens are dropped (they predict nothing).
CalibrationSet tokenize_calibration(const Tokenizer& tok, const std::vector<std::string>& texts, int max_seq_tokens,
                                    int64_t max_tokens);

// Splits a set in two for profiling and evaluation: even-numbered sequences profile, odd ones
// evaluate, so the quality gate measures a grouping on text it was not chosen on. A set of one
// sequence is used for both.
std::pair<CalibrationSet, CalibrationSet> split_calibration(const CalibrationSet& all);

}  // namespace llmesh::moe
