// Finding where a JSON value ends in text that is still arriving, without parsing it: the
// output parser needs to know when a tool call's JSON is complete before handing it to
// nlohmann, and to give up early on text that cannot be JSON (so it streams as text).
#pragma once
#include <cstddef>
#include <string_view>

namespace llmesh::api {

// Deeper JSON than this is refused: nlohmann's dump() recurses, and no tool call needs it.
inline constexpr int kMaxJsonDepth = 128;

class JsonExtentScanner {
 public:
  enum class State { Open, Complete, Invalid };

  // `openers`: the characters the value may start with ("{" or "[{"); whitespace before it is
  // skipped. An outermost '[' must hold objects (a list of calls), so "[1] ..." or "[Note"
  // is ruled out at once.
  void reset(std::string_view openers);
  // Looks at the bytes of `text` not seen yet (text only ever grows by appending, so the
  // total work is linear in its length).
  State scan(std::string_view text);

  State state() const { return state_; }
  size_t begin() const { return begin_; }   // first byte of the value
  size_t end() const { return end_; }       // one past its last byte (Complete)
  size_t invalid_at() const { return end_; }  // the byte that ruled JSON out (Invalid)

 private:
  std::string_view openers_ = "{";
  State state_ = State::Open;
  size_t scanned_ = 0, begin_ = 0, end_ = 0;
  int depth_ = 0;
  bool started_ = false, in_string_ = false, escape_ = false;
  bool expect_key_ = false;     // just after '{': only '"' or '}' may follow
  bool expect_object_ = false;  // just after an outermost '[': only '{' or ']' may follow
};

// Whether a complete JSON text nests no deeper than `max_depth` (checked before parsing JSON
// that arrives inside a string, e.g. arguments given as "{\"a\": 1}").
bool json_depth_within(std::string_view text, int max_depth = kMaxJsonDepth);

}  // namespace llmesh::api
