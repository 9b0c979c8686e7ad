#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "test_paths.h"

using namespace llmesh;

TEST(GgufReader, OpensStories260K) {
  auto f = GgufFile::open(test::model_path("stories260K-f32.gguf"));
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_uint("llama.block_count"), 5u);
  const auto& tok = f->get_array("tokenizer.ggml.tokens");
  EXPECT_EQ(tok.elem, GgufType::STRING);
  EXPECT_EQ(tok.count, 512u);
  const auto& emb = f->tensor("token_embd.weight");
  EXPECT_EQ(emb.type, DType::F32);
  EXPECT_EQ(emb.ne[0], 64);
  EXPECT_EQ(emb.ne[1], 512);
  EXPECT_EQ(emb.nbytes, 64u * 512u * 4u);
}

TEST(GgufReader, MissingFileNamesThePath) {
  try {
    GgufFile::open("/nonexistent/model.gguf");
    FAIL();
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
  }
}
