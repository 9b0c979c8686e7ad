// Streaming detokenization, hostile input (random bytes and ids: a sanitizer run picks up the
// "Hostile" tests) and clear errors for bad tokenizer metadata.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "gguf/gguf.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

using namespace llmesh;

namespace {

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = utf8_next(s, i);
    if (!c.valid) return false;
    i += c.len;
  }
  return true;
}

std::unique_ptr<Tokenizer> load(const std::string& model) {
  auto f = GgufFile::open(test::model_path(model));
  return Tokenizer::from_gguf(*f);
}

const std::vector<std::string> kModels = {"stories260K-f32.gguf", "llama-2-tiny-random.gguf",
                                          "qwen3-tiny-q8_0.gguf"};

// A minimal GGUF v3 file with metadata only, built in memory.
class GgufBuilder {
 public:
  GgufBuilder& str(const std::string& key, const std::string& v) {
    header(key, 8);
    string(v);
    return *this;
  }
  GgufBuilder& u32(const std::string& key, uint32_t v) {
    header(key, 4);
    pod(v);
    return *this;
  }
  GgufBuilder& strings(const std::string& key, const std::vector<std::string>& v) {
    header(key, 9);
    pod(uint32_t{8});
    pod(uint64_t{v.size()});
    for (const auto& s : v) string(s);
    return *this;
  }
  GgufBuilder& f32s(const std::string& key, const std::vector<float>& v) {
    header(key, 9);
    pod(uint32_t{6});
    pod(uint64_t{v.size()});
    for (float x : v) pod(x);
    return *this;
  }
  GgufBuilder& i32s(const std::string& key, const std::vector<int32_t>& v) {
    header(key, 9);
    pod(uint32_t{5});
    pod(uint64_t{v.size()});
    for (int32_t x : v) pod(x);
    return *this;
  }
  // The file points into this builder: keep the builder alive while the file is used.
  std::unique_ptr<GgufFile> parse() {
    std::string out = "GGUF";
    const uint32_t version = 3;
    const uint64_t n_tensors = 0;
    out.append(reinterpret_cast<const char*>(&version), 4);
    out.append(reinterpret_cast<const char*>(&n_tensors), 8);
    out.append(reinterpret_cast<const char*>(&n_kv_), 8);
    out += body_;
    while (out.size() % 32) out += '\0';
    bytes_ = out;
    return GgufFile::parse(reinterpret_cast<const uint8_t*>(bytes_.data()), bytes_.size(), "synthetic");
  }

 private:
  template <typename T>
  void pod(T v) {
    body_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void string(const std::string& s) {
    pod(uint64_t{s.size()});
    body_ += s;
  }
  void header(const std::string& key, uint32_t type) {
    string(key);
    pod(type);
    ++n_kv_;
  }
  std::string body_, bytes_;
  uint64_t n_kv_ = 0;
};

// A small byte-level BPE vocabulary: the 256 byte characters plus a few merges.
GgufBuilder tiny_bpe(const std::string& pre) {
  std::vector<std::string> tokens;
  uint32_t next = 256;  // GPT-2's stand-ins for unprintable bytes
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    std::string s;
    utf8_append(s, printable ? b : next++);
    tokens.push_back(s);
  }
  tokens.push_back("he");
  tokens.push_back("hel");
  tokens.push_back("<|end|>");
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  GgufBuilder g;
  g.str("tokenizer.ggml.model", "gpt2").str("tokenizer.ggml.pre", pre).strings("tokenizer.ggml.tokens", tokens);
  g.i32s("tokenizer.ggml.token_type", types).strings("tokenizer.ggml.merges", {"h e", "he l"});
  g.u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tokens.size() - 1));
  return g;
}

void expect_error(GgufBuilder g, const std::string& needle) {
  auto f = g.parse();
  try {
    Tokenizer::from_gguf(*f);
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(StreamDecoder, NeverEmitsHalfACharacter) {
  const std::string text = "Emoji 🦙🚀👨‍👩‍👧 and CJK 你好世界，こんにちは 안녕 — done ✓";
  for (const auto& model : kModels) {
    auto tok = load(model);
    const auto ids = tok->encode(text, true, false);
    StreamDecoder dec(*tok);
    std::string joined;
    for (int32_t id : ids) {
      const std::string part = dec.push(id);
      EXPECT_TRUE(valid_utf8(part)) << model << ": token " << id;
      joined += part;
    }
    joined += dec.flush();
    // SentencePiece's added leading space is part of the stream.
    EXPECT_EQ(joined, model == "qwen3-tiny-q8_0.gguf" ? text : " " + text) << model;
  }
}

TEST(StreamDecoder, FlushReplacesInvalidBytes) {
  auto tok = load("stories260K-f32.gguf");
  StreamDecoder dec(*tok);
  // <0xE4> <0xBD> (an incomplete 3-byte character) then <0xFF> (never valid).
  EXPECT_EQ(dec.push(3 + 0xE4), "");
  EXPECT_EQ(dec.push(3 + 0xBD), "");
  EXPECT_EQ(dec.push(3 + 0xA0), "你");
  EXPECT_EQ(dec.push(3 + 0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.push(3 + 0xE4), "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.flush(), "");
}

TEST(TokenizerHostile, RandomBytesNeverCrashAndRoundTrip) {
  std::mt19937 rng(1234);
  for (const auto& model : kModels) {
    auto tok = load(model);
    for (int iter = 0; iter < 400; ++iter) {
      std::string s(rng() % 80, '\0');
      const bool mostly_ascii = iter % 2 == 0;
      for (char& c : s) c = static_cast<char>(mostly_ascii ? (rng() % 3 ? 0x20 + rng() % 95 : rng() % 256) : rng() % 256);
      const auto ids = tok->encode(s, iter % 3 == 0, false);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->n_vocab()) << model;
      std::vector<int32_t> plain = ids;
      if (!plain.empty() && plain.front() == tok->bos() && tok->add_bos() && iter % 3 == 0) plain.erase(plain.begin());
      EXPECT_EQ(tok->decode(plain), s) << model << " iteration " << iter;
      const auto special = tok->encode(s, true, true);
      for (int32_t id : special) ASSERT_TRUE(id >= 0 && id < tok->n_vocab());
    }
  }
}

TEST(TokenizerHostile, RandomIdsDecodeSafely) {
  std::mt19937 rng(99);
  for (const auto& model : kModels) {
    auto tok = load(model);
    StreamDecoder dec(*tok, true);
    for (int i = 0; i < 3000; ++i) {
      int32_t id = static_cast<int32_t>(rng() % static_cast<uint32_t>(tok->n_vocab() + 20)) - 10;
      const std::string part = dec.push(id);
      ASSERT_TRUE(valid_utf8(part)) << model;
      (void)tok->token_to_piece(id, i % 2 == 0);
      (void)tok->token_text(id);
      (void)tok->is_eog(id);
    }
    EXPECT_TRUE(valid_utf8(dec.flush()));
  }
}

TEST(TokenizerHostile, LongRunsStayFast) {
  auto tok = load("qwen3-tiny-q8_0.gguf");
  const std::string spaces(200000, ' '), letters(200000, 'a'), digits(100000, '7');
  for (const auto* s : {&spaces, &letters, &digits}) {
    const auto ids = tok->encode(*s, false, false);
    EXPECT_EQ(tok->decode(ids), *s);
  }
}

TEST(TokenizerErrors, BadMetadataIsNamed) {
  expect_error(GgufBuilder().str("tokenizer.ggml.model", "bert").strings("tokenizer.ggml.tokens", {"a"}),
               "'bert' is not supported");
  expect_error(GgufBuilder().strings("tokenizer.ggml.tokens", {"a"}), "tokenizer.ggml.model");
  expect_error(GgufBuilder().str("tokenizer.ggml.model", "llama"), "tokenizer.ggml.tokens");
  expect_error(GgufBuilder()
                   .str("tokenizer.ggml.model", "llama")
                   .strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "a"})
                   .f32s("tokenizer.ggml.scores", {0, 0}),
               "tokenizer.ggml.scores");
  expect_error(GgufBuilder()
                   .str("tokenizer.ggml.model", "llama")
                   .strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "a"})
                   .i32s("tokenizer.ggml.token_type", {2, 3, 9}),
               "tokenizer.ggml.token_type");
  expect_error(GgufBuilder()
                   .str("tokenizer.ggml.model", "llama")
                   .strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "a"})
                   .u32("tokenizer.ggml.bos_token_id", 7),
               "bos_token_id");
}

TEST(TokenizerErrors, MalformedMerges) {
  auto base = [](const std::vector<std::string>& merges) {
    GgufBuilder g;
    g.str("tokenizer.ggml.model", "gpt2").strings("tokenizer.ggml.tokens", {"a", "b", "ab"});
    g.strings("tokenizer.ggml.merges", merges);
    return g;
  };
  expect_error(base({"ab"}), "tokenizer.ggml.merges'[0]");
  expect_error(base({"a x"}), "not in the vocabulary");
  expect_error(base({"b a"}), "merged token");
  GgufBuilder good = base({"a b"});  // owns the bytes the parsed file points into
  auto ok = good.parse();
  auto tok = Tokenizer::from_gguf(*ok);
  EXPECT_EQ(tok->encode("ab", false, false), (std::vector<int32_t>{2}));
}

TEST(TokenizerErrors, UnknownPreFallsBackWithoutCrashing) {
  for (const std::string pre : {"deepseek-llm", "mistral", "something-new", ""}) {
    GgufBuilder g = tiny_bpe(pre);  // owns the bytes the parsed file points into
    auto f = g.parse();
    auto tok = Tokenizer::from_gguf(*f);
    const auto ids = tok->encode("hello world<|end|>", false, true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), 257);  // "hel" after the "h e" and "he l" merges
    EXPECT_EQ(ids.back(), 258);
    EXPECT_TRUE(tok->is_eog(258));
    EXPECT_EQ(tok->decode(ids), "hello world");
  }
}
