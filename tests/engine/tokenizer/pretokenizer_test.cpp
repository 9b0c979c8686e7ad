// The hand-written pre-tokenizer matchers against the real regexes (cases computed with
// Python's `regex` module by gen_pretokenizer_cases.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode_category.h"

using namespace llmesh;

namespace {

std::vector<std::string> split(PreTokenizerKind kind, const std::string& text) {
  std::vector<std::pair<uint32_t, uint32_t>> pieces;
  pre_tokenize(kind, text, pieces);
  std::vector<std::string> out;
  for (auto [b, e] : pieces) out.push_back(text.substr(b, e - b));
  return out;
}

}  // namespace

TEST(PreTokenizer, MatchesRegexReferenceCases) {
  std::ifstream in(std::string(LLMESH_SOURCE_DIR) + "/tests/engine/tokenizer/pretokenizer_cases.json");
  ASSERT_TRUE(in);
  const auto cases = nlohmann::json::parse(in);
  ASSERT_GT(cases.size(), 500u);
  int failures = 0;
  for (const auto& c : cases) {
    const std::string kind = c["kind"].get<std::string>();
    PreTokenizerKind k;
    if (kind == "gpt2") k = PreTokenizerKind::Gpt2;
    else if (kind == "llama3") k = PreTokenizerKind::Llama3;
    else if (kind == "qwen2") k = PreTokenizerKind::Qwen2;
    else if (kind == "gpt-4o") k = PreTokenizerKind::Gpt4o;
    else if (kind == "tekken") k = PreTokenizerKind::Tekken;
    else if (kind == "gpt2-split-digits") k = PreTokenizerKind::Gpt2SplitDigits;
    else FAIL() << "unknown kind " << kind;
    const std::string text = c["text"].get<std::string>();
    const auto want = c["pieces"].get<std::vector<std::string>>();
    const auto got = split(k, text);
    if (got != want && failures++ < 10) {
      ADD_FAILURE() << kind << " " << nlohmann::json(text).dump() << "\n  regex:   "
                    << nlohmann::json(want).dump() << "\n  matcher: " << nlohmann::json(got).dump();
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(PreTokenizer, KnownAndFallbackNames) {
  EXPECT_EQ(pre_tokenizer_for("qwen2").kind, PreTokenizerKind::Qwen2);
  EXPECT_EQ(pre_tokenizer_for("llama-bpe").kind, PreTokenizerKind::Llama3);
  EXPECT_EQ(pre_tokenizer_for("smollm").kind, PreTokenizerKind::Gpt2SplitDigits);
  EXPECT_EQ(pre_tokenizer_for("tekken").kind, PreTokenizerKind::Tekken);
  EXPECT_TRUE(pre_tokenizer_for("default").exact);
  EXPECT_FALSE(pre_tokenizer_for("deepseek-llm").exact);
  EXPECT_FALSE(pre_tokenizer_for("no-such-pre").exact);
  EXPECT_EQ(pre_tokenizer_for("no-such-pre").kind, PreTokenizerKind::Gpt2);
}

TEST(PreTokenizer, InvalidUtf8IsOneCharacterPerByte) {
  const std::string text("ab\xff\xfe cd\xc3", 8);
  for (auto k : {PreTokenizerKind::Gpt2, PreTokenizerKind::Llama3, PreTokenizerKind::Qwen2,
                 PreTokenizerKind::Gpt4o, PreTokenizerKind::Tekken, PreTokenizerKind::Gpt2SplitDigits}) {
    std::string joined;
    for (const auto& p : split(k, text)) joined += p;
    EXPECT_EQ(joined, text);
  }
}

TEST(UnicodeCategory, SpotChecks) {
  EXPECT_EQ(unicode_category('A'), UnicodeCategory::Lu);
  EXPECT_EQ(unicode_category('z'), UnicodeCategory::Ll);
  EXPECT_EQ(unicode_category('5'), UnicodeCategory::Nd);
  EXPECT_EQ(unicode_category(' '), UnicodeCategory::Zs);
  EXPECT_EQ(unicode_category(0x4F60), UnicodeCategory::Lo);   // 你
  EXPECT_EQ(unicode_category(0x0301), UnicodeCategory::Mn);   // combining acute
  EXPECT_EQ(unicode_category(0x1F999), UnicodeCategory::So);  // 🦙
  EXPECT_EQ(unicode_category(0x0663), UnicodeCategory::Nd);   // Arabic-Indic 3
  EXPECT_EQ(unicode_category(0x2163), UnicodeCategory::Nl);   // Ⅳ
  EXPECT_EQ(unicode_category(0xE000), UnicodeCategory::Co);
  EXPECT_EQ(unicode_category(0x10FFFF), UnicodeCategory::Cn);
  EXPECT_EQ(unicode_category(0x110000), UnicodeCategory::Cn);
  EXPECT_TRUE(is_unicode_space(0x3000));
  EXPECT_FALSE(is_unicode_space(0xFEFF));
}
