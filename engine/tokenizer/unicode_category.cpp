#include "tokenizer/unicode_category.h"

#include <algorithm>
#include <array>

namespace llmesh {
namespace unicode_detail {
extern const uint32_t kCategoryRuns[];
extern const uint32_t kCategoryRunCount;
}  // namespace unicode_detail

namespace {

UnicodeCategory lookup_runs(uint32_t cp) {
  using unicode_detail::kCategoryRunCount;
  using unicode_detail::kCategoryRuns;
  // Last run whose first code point is <= cp.
  const uint32_t key = (cp << 8) | 0xFF;
  const uint32_t* end = kCategoryRuns + kCategoryRunCount;
  const uint32_t* it = std::upper_bound(kCategoryRuns, end, key);
  return static_cast<UnicodeCategory>(it[-1] & 0xFF);  // the first run starts at U+0000
}

// Latin-1 is most of what tokenizers see: answer it from a flat table.
const std::array<UnicodeCategory, 256>& latin1_table() {
  static const std::array<UnicodeCategory, 256> table = [] {
    std::array<UnicodeCategory, 256> t{};
    for (uint32_t cp = 0; cp < 256; ++cp) t[cp] = lookup_runs(cp);
    return t;
  }();
  return table;
}

}  // namespace

UnicodeCategory unicode_category(uint32_t cp) {
  if (cp < 256) return latin1_table()[cp];
  if (cp > 0x10FFFF) return UnicodeCategory::Cn;
  return lookup_runs(cp);
}

}  // namespace llmesh
