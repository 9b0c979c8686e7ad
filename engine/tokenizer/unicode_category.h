// Unicode general categories and the character classes the pre-tokenizers need
// (\p{L}, \p{N}, \s...). The category table is generated: gen_unicode_tables.py.
#pragma once
#include <cstdint>

namespace llmesh {

// Same order as CATEGORIES in gen_unicode_tables.py.
enum class UnicodeCategory : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No,
  Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So,
  Zs, Zl, Zp, Cc, Cf, Cs, Co,
};

// Code points above U+10FFFF (and our marker for invalid UTF-8 bytes) are Cn.
UnicodeCategory unicode_category(uint32_t cp);

inline bool is_letter_category(UnicodeCategory c) {
  return c >= UnicodeCategory::Lu && c <= UnicodeCategory::Lo;
}
inline bool is_mark_category(UnicodeCategory c) {
  return c >= UnicodeCategory::Mn && c <= UnicodeCategory::Me;
}
inline bool is_number_category(UnicodeCategory c) {
  return c >= UnicodeCategory::Nd && c <= UnicodeCategory::No;
}
inline bool is_punctuation_category(UnicodeCategory c) {
  return c >= UnicodeCategory::Pc && c <= UnicodeCategory::Po;
}

// The Unicode White_Space property (what \s means in the Rust/Oniguruma regexes that
// Hugging Face tokenizers use).
inline bool is_unicode_space(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

}  // namespace llmesh
