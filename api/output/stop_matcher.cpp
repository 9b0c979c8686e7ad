#include <algorithm>

#include "output/marker_search.h"
#include "output/output_parser.h"

namespace llmesh::api {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  // An empty stop string would match everywhere; APIs treat it as absent.
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopMatcher::feed(std::string_view text) {
  if (matched_) return {};
  held_.append(text);

  // The match that completes first wins, as it would have token by token; of two that end
  // together, the longer (earlier) one. held_ never holds a whole stop string from an
  // earlier feed, so every match here ends in the new text.
  size_t best_begin = std::string::npos, best_end = std::string::npos;
  const std::string* best = nullptr;
  for (const auto& stop : stops_) {
    size_t at = held_.find(stop);
    if (at == std::string::npos) continue;
    size_t end = at + stop.size();
    if (best == nullptr || end < best_end || (end == best_end && at < best_begin)) {
      best = &stop;
      best_begin = at;
      best_end = end;
    }
  }
  if (best != nullptr) {
    matched_ = true;
    matched_string_ = *best;
    std::string out = held_.substr(0, best_begin);
    held_.clear();
    return out;
  }

  // Hold back the longest tail that could still grow into a stop string.
  size_t hold = 0;
  for (const auto& stop : stops_) hold = std::max(hold, partial_suffix_length(held_, stop));
  std::string out = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return out;
}

std::string StopMatcher::finish() {
  if (matched_) return {};
  return std::exchange(held_, {});
}

}  // namespace llmesh::api
