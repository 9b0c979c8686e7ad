// Splits a template into text and tag tokens the way jinja2's lexer does with
// trim_blocks=True and lstrip_blocks=True: whitespace control (`-`, `+`) and block trimming
// are applied here, comments are dropped and raw blocks become text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace llmesh::api::jinja {

struct Token {
  enum class Type : uint8_t {
    Text,
    VarBegin,
    VarEnd,
    BlockBegin,
    BlockEnd,
    Name,
    String,
    Integer,
    Float,
    Operator,
    Eof
  };
  Type type;
  std::string text;  // text data, name, decoded string literal or operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1, column = 1;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Throws JinjaError (with line and column) on malformed input.
std::vector<Token> tokenize(const std::string& source, const LexOptions& options = {});

}  // namespace llmesh::api::jinja
