// Finding fixed markers (<tool_call>, </think>, stop strings) in streamed text, including a
// marker that has only begun to arrive at the end of what was seen so far.
#pragma once
#include <cstddef>
#include <initializer_list>
#include <string_view>

namespace llmesh::api {

struct MarkerHit {
  static constexpr size_t kNone = std::string_view::npos;
  size_t pos = kNone;   // where the marker starts
  size_t marker = 0;    // which of the markers
  bool partial = false; // the text ends with a proper prefix of the marker
  bool found() const { return pos != kNone; }
};

// The first place in `text` where one of `markers` starts, whole or cut off by the end of
// the text. Linear in the text: markers are short and a whole marker wins over a cut-off one.
MarkerHit find_marker(std::string_view text, std::initializer_list<std::string_view> markers);

// Length of the longest proper prefix of `needle` that `text` ends with (0 if none): the
// bytes that must be held back because the next piece could complete `needle`.
size_t partial_suffix_length(std::string_view text, std::string_view needle);

}  // namespace llmesh::api
