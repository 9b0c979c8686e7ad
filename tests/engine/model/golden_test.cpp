// Greedy token ids must equal ../shared/models/GOLDEN.txt (an independent pure-Python
// reference) exactly, on every kernel ISA this CPU has.
#include <fstream>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "kernels/kernels.h"
#include "model/forward.h"
#include "sampling/sampler.h"
#include "test_paths.h"

namespace llmesh {
namespace {

struct GoldenCase {
  std::string model;
  std::vector<int32_t> prompt;  // prompt ids (BOS only when the file says so)
  std::vector<int32_t> expected;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> v;
  std::regex num("-?[0-9]+");
  for (auto it = std::sregex_iterator(s.begin(), s.end(), num); it != std::sregex_iterator(); ++it)
    v.push_back(std::stoi(it->str()));
  return v;
}

std::vector<GoldenCase> load_golden() {
  std::ifstream in(test::model_path("GOLDEN.txt"));
  std::vector<GoldenCase> cases;
  std::string line;
  std::regex header(R"(^## (\S+\.gguf)\s+(.*)$)");
  GoldenCase cur;
  bool in_case = false;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, header)) {
      cur = GoldenCase{m[1].str(), {1}, {}};  // "BOS only" unless prompt ids follow
      in_case = true;
    } else if (line.rfind("## ", 0) == 0) {
      in_case = false;
    } else if (in_case && line.rfind("prompt ids:", 0) == 0) {
      cur.prompt = parse_ids(line.substr(11));
    } else if (in_case && line.rfind("generated ids:", 0) == 0) {
      cur.expected = parse_ids(line.substr(14));
      cases.push_back(cur);
    }
  }
  return cases;
}

// Greedy decoding as the reference does it: one token at a time after the prompt, stopping
// at BOS/EOS.
std::vector<int32_t> greedy(const std::string& path, const std::vector<int32_t>& prompt, size_t n,
                            DType kv_type, int threads, bool batched_prompt) {
  auto model = Model::load(path);
  KvCacheOptions kv;
  kv.n_ctx = 256;
  kv.type = kv_type;
  KvCache cache(model->config(), 0, model->config().n_layer, kv);
  ThreadPool pool(threads);
  Forward fwd(*model, cache, pool);
  Batch b;
  std::span<const float> logits;
  if (batched_prompt) {
    for (size_t i = 0; i < prompt.size(); ++i) b.add(prompt[i], static_cast<int>(i), 0, i + 1 == prompt.size());
    logits = fwd.run(b);
  } else {
    for (size_t i = 0; i < prompt.size(); ++i) {
      b.clear();
      b.add(prompt[i], static_cast<int>(i), 0, true);
      logits = fwd.run(b);
    }
  }
  std::vector<int32_t> out;
  int pos = static_cast<int>(prompt.size());
  while (out.size() < n) {
    int32_t next = argmax(logits.data(), model->config().n_vocab);
    if (next == 1 || next == 2) break;
    out.push_back(next);
    b.clear();
    b.add(next, pos++, 0, true);
    logits = fwd.run(b);
  }
  return out;
}

class Golden : public ::testing::TestWithParam<kernels::Isa> {};

TEST_P(Golden, GreedyIdsMatchReference) {
  if (!kernels::isa_supported(GetParam())) GTEST_SKIP() << "CPU lacks " << kernels::isa_name(GetParam());
  kernels::force_isa(GetParam());
  auto cases = load_golden();
  ASSERT_GE(cases.size(), 7u) << "GOLDEN.txt not found or not understood";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.model);
    auto got = greedy(test::model_path(c.model), c.prompt, c.expected.size(), DType::F16, 2, true);
    EXPECT_EQ(got, c.expected);
  }
  kernels::force_isa(kernels::detected_isa());
}

INSTANTIATE_TEST_SUITE_P(AllIsas, Golden,
                         ::testing::Values(kernels::Isa::Scalar, kernels::Isa::Avx2, kernels::Isa::Avx512),
                         [](const auto& info) { return std::string(kernels::isa_name(info.param)); });

// Prompt processed token by token, in one batch, single- or multi-threaded, F16 or F32 cache:
// the same greedy continuation.
TEST(Forward, BatchedPromptEqualsSequential) {
  const std::string m = test::model_path("stories260K-f32.gguf");
  std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  auto a = greedy(m, prompt, 30, DType::F16, 1, false);
  auto b = greedy(m, prompt, 30, DType::F16, 2, true);
  auto c = greedy(m, prompt, 30, DType::F32, 2, true);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
}

}  // namespace
}  // namespace llmesh
