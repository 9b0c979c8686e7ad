// SentencePiece-style tokenizer: ids from the reference (GOLDEN.txt), round trips, byte
// fallback.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

using namespace llmesh;

namespace {

std::unique_ptr<Tokenizer> load(const std::string& model) {
  auto f = GgufFile::open(test::model_path(model));
  return Tokenizer::from_gguf(*f);  // the tokenizer copies what it needs
}

}  // namespace

TEST(SpmTokenizer, Stories260KOnceUponATime) {
  auto tok = load("stories260K-f32.gguf");
  EXPECT_EQ(tok->n_vocab(), 512);
  EXPECT_EQ(tok->bos(), 1);
  EXPECT_EQ(tok->eos(), 2);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->encode("Once upon a time", true, false), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->encode("Once upon a time", false, false), (std::vector<int32_t>{403, 407, 261, 378}));
}

TEST(SpmTokenizer, Stories260KDecodesGoldenText) {
  auto tok = load("stories260K-f32.gguf");
  const std::vector<int32_t> ids = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317,
                                    426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282,
                                    295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352};
  EXPECT_EQ(tok->decode(ids),
            "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
            "park. One day, she saw a big, r");
  EXPECT_EQ(tok->token_to_piece(403), " Once");
  EXPECT_EQ(tok->token_to_piece(1), "");
  EXPECT_EQ(tok->token_to_piece(1, true), "<s>");
  EXPECT_TRUE(tok->is_control(1));
  EXPECT_TRUE(tok->is_eog(2));
  EXPECT_FALSE(tok->is_eog(403));
}

TEST(SpmTokenizer, Llama2HelloWorld) {
  auto tok = load("llama-2-tiny-random.gguf");
  EXPECT_EQ(tok->n_vocab(), 32000);
  EXPECT_EQ(tok->encode("Hello world", true, false), (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(tok->decode({1, 15043, 3186}), "Hello world");
}

TEST(SpmTokenizer, RoundTrips) {
  for (const char* model : {"stories260K-f32.gguf", "llama-2-tiny-random.gguf"}) {
    auto tok = load(model);
    for (std::string s : {"Hello world", " leading space", "two  spaces\tand a tab\nnewline",
                          "trailing space ", "", "   ", "Numbers 1234567890 and 3.14159",
                          "Emoji 🦙🚀 and CJK 你好世界, こんにちは", "Ünïcödé façade naïve",
                          "Arabic مرحبا Hindi नमस्ते", "<s> looks special but is text",
                          "code: for (int i = 0; i < n; ++i) { x += y[i]; }"}) {
      const auto ids = tok->encode(s, true, false);
      EXPECT_EQ(tok->decode(ids), s) << model << ": " << s;
    }
  }
}

TEST(SpmTokenizer, ByteFallbackForEmojiAndCjk) {
  auto tok = load("stories260K-f32.gguf");
  // The 512-token vocabulary has no piece for these: every byte becomes <0xNN>.
  const auto ids = tok->encode("🦙", false, false);
  ASSERT_GE(ids.size(), 4u);
  const std::vector<int32_t> tail(ids.end() - 4, ids.end());
  EXPECT_EQ(tail, (std::vector<int32_t>{0xF0 + 3, 0x9F + 3, 0xA6 + 3, 0x99 + 3}));  // <0x00> is id 3
  const auto cjk = tok->encode("你好", false, false);
  EXPECT_EQ(tok->decode(cjk), "你好");
  auto llama = load("llama-2-tiny-random.gguf");
  const auto l = llama->encode("🦙", false, false);
  EXPECT_EQ(llama->decode(l), "🦙");
  for (int32_t id : l) EXPECT_NE(id, 0) << "no <unk> with byte fallback";
}

TEST(SpmTokenizer, ParseSpecialRecognisesControlTokens) {
  auto tok = load("llama-2-tiny-random.gguf");
  const auto with = tok->encode("<s>Hi</s>", false, true);
  ASSERT_GE(with.size(), 3u);
  EXPECT_EQ(with.front(), 1);
  EXPECT_EQ(with.back(), 2);
  const auto without = tok->encode("<s>Hi</s>", false, false);
  for (int32_t id : without) {
    EXPECT_NE(id, 1);
    EXPECT_NE(id, 2);
  }
}
