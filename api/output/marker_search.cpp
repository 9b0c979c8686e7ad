#include "output/marker_search.h"

#include <algorithm>
#include <string>

namespace llmesh::api {

MarkerHit find_marker(std::string_view text, std::initializer_list<std::string_view> markers) {
  std::string first_chars;
  for (std::string_view m : markers)
    if (!m.empty()) first_chars += m.front();
  if (first_chars.empty()) return {};

  for (size_t pos = text.find_first_of(first_chars); pos != std::string_view::npos;
       pos = text.find_first_of(first_chars, pos + 1)) {
    const std::string_view rest = text.substr(pos);
    size_t index = 0;
    for (std::string_view m : markers) {
      if (!m.empty() && rest.starts_with(m)) return {pos, index, false};
      ++index;
    }
    index = 0;
    for (std::string_view m : markers) {
      if (!m.empty() && rest.size() < m.size() && m.starts_with(rest)) return {pos, index, true};
      ++index;
    }
  }
  return {};
}

size_t partial_suffix_length(std::string_view text, std::string_view needle) {
  if (needle.empty()) return 0;
  for (size_t len = std::min(text.size(), needle.size() - 1); len > 0; --len)
    if (text.substr(text.size() - len) == needle.substr(0, len)) return len;
  return 0;
}

}  // namespace llmesh::api
