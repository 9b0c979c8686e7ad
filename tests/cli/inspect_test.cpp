// `llmesh inspect` as a user runs it: text and --json on real models, clear errors on corrupt files.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "subprocess.h"
#include "test_paths.h"

namespace llmesh {
namespace {

std::string inspect(const std::string& args) {
  return test::llmesh_binary() + " inspect " + args;
}

std::string temp_file(const std::string& name, const std::string& bytes) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

std::string model_bytes(const std::string& name) {
  std::ifstream in(test::model_path(name), std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(CliInspect, TextShowsHeaderMetadataAndTensors) {
  auto r = test::run_command(inspect(test::model_path("stories260K-q4_0.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string& o = r.output;
  EXPECT_NE(o.find("GGUF v3, 370784 bytes, alignment 32, tensor data at offset 14304"),
            std::string::npos) << o;
  EXPECT_NE(o.find("292800 parameters in 48 tensors"), std::string::npos) << o;
  EXPECT_NE(o.find("16 F32, 32 Q4_0"), std::string::npos) << o;
  EXPECT_NE(o.find("metadata (23 keys)"), std::string::npos) << o;
  EXPECT_NE(o.find("tensors (48)"), std::string::npos) << o;
  // Rows: key, type, value; arrays show their element type and length; floats print short.
  EXPECT_NE(o.find("general.architecture"), std::string::npos);
  EXPECT_NE(o.find("\"llama\""), std::string::npos);
  EXPECT_NE(o.find("string[512]"), std::string::npos) << o;
  EXPECT_NE(o.find("[\"<unk>\", \"<s>\", \"</s>\""), std::string::npos) << o;
  EXPECT_NE(o.find("1e-05"), std::string::npos) << o;
  EXPECT_NE(o.find("token_embd.weight"), std::string::npos);
  EXPECT_NE(o.find("[64, 512]"), std::string::npos);
  // Every line is reasonably short (long values are cut).
  size_t start = 0;
  while (start < o.size()) {
    size_t end = o.find('\n', start);
    if (end == std::string::npos) end = o.size();
    EXPECT_LE(end - start, 220u) << o.substr(start, end - start);
    start = end + 1;
  }
}

TEST(CliInspect, JsonMatchesTheFile) {
  auto r = test::run_command(inspect(test::model_path("stories260K-f32.gguf") + " --json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["version"], 3);
  EXPECT_EQ(j["file_size"], 1185504);
  EXPECT_EQ(j["alignment"], 32);
  EXPECT_EQ(j["data_offset"], 14304);
  EXPECT_EQ(j["parameters"], 292800);
  EXPECT_EQ(j["tensor_bytes"], 1171200);
  const auto& md = j["metadata"];
  EXPECT_EQ(md.size(), 23u);
  EXPECT_EQ(md["general.architecture"], "llama");
  EXPECT_EQ(md["llama.block_count"], 5);
  EXPECT_EQ(md["llama.attention.layer_norm_rms_epsilon"], 1e-05);
  EXPECT_EQ(md["llama.rope.freq_base"], 10000.0);
  EXPECT_EQ(md["tokenizer.ggml.add_bos_token"], true);
  EXPECT_EQ(md["tokenizer.ggml.add_eos_token"], false);
  ASSERT_EQ(md["tokenizer.ggml.tokens"].size(), 8u);  // --max-array default
  EXPECT_EQ(md["tokenizer.ggml.tokens"][1], "<s>");
  EXPECT_EQ(md["tokenizer.ggml.token_type"][0], 2);
  EXPECT_EQ(j["metadata_types"]["tokenizer.ggml.tokens"], "string[512]");
  EXPECT_EQ(j["metadata_types"]["llama.block_count"], "uint32");
  const auto& ts = j["tensors"];
  ASSERT_EQ(ts.size(), 48u);
  EXPECT_EQ(ts[0]["name"], "token_embd.weight");
  EXPECT_EQ(ts[0]["type"], "F32");
  EXPECT_EQ(ts[0]["shape"], nlohmann::json::array({64, 512}));
  EXPECT_EQ(ts[0]["offset"], 0);
  EXPECT_EQ(ts[0]["bytes"], 131072);
  uint64_t sum = 0;
  for (const auto& t : ts) sum += t["bytes"].get<uint64_t>();
  EXPECT_EQ(sum, j["tensor_bytes"].get<uint64_t>());
}

TEST(CliInspect, MaxArrayZeroShowsEverything) {
  auto r = test::run_command(
      inspect(test::model_path("stories260K-q8_0.gguf") + " --json --max-array 0"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.tokens"].size(), 512u);
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.scores"].size(), 512u);
}

TEST(CliInspect, CorruptFilesFailWithTheProblem) {
  struct Case { std::string name, bytes, message; };
  std::string good = model_bytes("stories260K-q8_0.gguf");
  ASSERT_GT(good.size(), 20000u);
  std::string v1 = good;
  v1[4] = 1;
  std::string huge_count = good;
  for (int k = 16; k < 24; ++k) huge_count[k] = '\xff';  // metadata count
  const Case cases[] = {
      {"text.gguf", "this is a text file, not a model", "not a GGUF file"},
      {"empty.gguf", "", "empty file"},
      {"truncated.gguf", good.substr(0, 5000), "truncated"},
      {"short-data.gguf", good.substr(0, good.size() - 100), "extends past the end of the file"},
      {"v1.gguf", v1, "GGUF version 1 is not supported"},
      {"count.gguf", huge_count, "metadata count 18446744073709551615 exceeds the limit"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = temp_file(c.name, c.bytes);
    for (const char* flags : {"", " --json"}) {
      auto r = test::run_command(inspect(path + flags + " 2>&1"));
      EXPECT_EQ(r.exit_code, 1) << r.output;
      EXPECT_NE(r.output.find("llmesh inspect: error: " + path + ": "), std::string::npos)
          << r.output;
      EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    }
  }
  auto r = test::run_command(inspect("/nonexistent/model.gguf 2>&1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("/nonexistent/model.gguf: cannot open"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace llmesh
