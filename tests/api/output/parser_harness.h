// Runs OutputParser over an input cut into pieces and collects what came out, so a test can
// compare the whole-input result with character-by-character and random-split streaming.
#pragma once
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "output/output_parser.h"

namespace llmesh::api::test {

// Events with ids left out and adjacent deltas of one kind merged: equal for every split.
struct Outcome {
  struct Item {
    OutputEvent::Kind kind;
    std::string text;       // Text / Reasoning
    std::string name, arguments;  // ToolCall
    bool operator==(const Item&) const = default;
  };
  std::vector<Item> items;
  std::string text, reasoning;
  std::vector<ToolCall> calls;
  bool operator==(const Outcome& o) const {
    return items == o.items && text == o.text && reasoning == o.reasoning;
  }
};

inline void collect(Outcome& out, const std::vector<OutputEvent>& events) {
  for (const auto& e : events) {
    if (e.kind == OutputEvent::Kind::ToolCall) {
      out.items.push_back({e.kind, "", e.call.name, e.call.arguments});
      out.calls.push_back(e.call);
      continue;
    }
    if (e.kind == OutputEvent::Kind::Text) out.text += e.text;
    else out.reasoning += e.text;
    if (!out.items.empty() && out.items.back().kind == e.kind) out.items.back().text += e.text;
    else out.items.push_back({e.kind, e.text, "", ""});
  }
}

inline Outcome parse_pieces(const OutputParserOptions& opt, const std::vector<std::string>& pieces) {
  OutputParser parser(opt);
  Outcome out;
  for (const auto& p : pieces) collect(out, parser.feed(p));
  collect(out, parser.finish());
  return out;
}

inline Outcome parse_whole(const OutputParserOptions& opt, std::string_view text) {
  return parse_pieces(opt, {std::string(text)});
}

inline bool is_utf8_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// One piece per UTF-8 character.
inline std::vector<std::string> split_chars(std::string_view text) {
  std::vector<std::string> pieces;
  for (char c : text) {
    if (is_utf8_continuation(c) && !pieces.empty()) pieces.back() += c;
    else pieces.emplace_back(1, c);
  }
  return pieces;
}

// Pieces of 1 to 8 characters, never cutting a UTF-8 character.
inline std::vector<std::string> split_random(std::string_view text, std::mt19937& rng) {
  std::vector<std::string> chars = split_chars(text), pieces;
  std::uniform_int_distribution<int> len(1, 8);
  for (size_t i = 0; i < chars.size();) {
    std::string piece;
    for (int n = len(rng); n > 0 && i < chars.size(); --n) piece += chars[i++];
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

inline OutputParserOptions options(ToolFormat tools, bool thinking = false,
                                   bool starts_thinking = false) {
  OutputParserOptions o;
  o.tools = tools;
  o.thinking = thinking;
  o.starts_thinking = starts_thinking;
  return o;
}

}  // namespace llmesh::api::test
