// A plain GGUF served over HTTP and used by a stage without downloading all of it: only the
// header and the byte ranges of the needed tensors travel, into a sparse local copy that loads
// like the original.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "fetch/gguf_ranges.h"
#include "fetch_fixture.h"
#include "gguf/gguf.h"
#include "kernels/thread_pool.h"
#include "model/forward.h"
#include "sampling/sampler.h"
#include "test_paths.h"

namespace llmesh::mesh {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Logits of layers [first, n) for a fixed hidden input, from a model loaded from `path`.
std::vector<float> stage_logits(const std::string& path, int first) {
  auto m = Model::load(path, ModelOptions{{first, -1}});
  KvCacheOptions kv;
  kv.n_ctx = 16;
  KvCache cache(m->config(), first, m->config().n_layer, kv);
  ThreadPool pool(1);
  Forward f(*m, cache, pool);
  Batch b;
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0, 1);
  for (int t = 0; t < 3; ++t) {
    b.pos.push_back(t);
    b.seq.push_back(0);
    b.output.push_back(1);
    for (int i = 0; i < m->config().n_embd; ++i) b.hidden.push_back(d(rng));
  }
  auto out = f.run(b);
  return {out.begin(), out.end()};
}

struct GgufRanges : ::testing::Test {
  test::TempDir cache;
  test::FileServer server;
  std::string original = llmesh::test::model_path("stories260K-f32.gguf");
  std::string content = read_all(original);
  PackageFetchOptions opts;
  GgufRanges() {
    server.files["stories.gguf"] = content;
    opts.cache_root = cache.path;
  }
  std::string url(const std::string& route = "files") const { return server.url(route) + "stories.gguf"; }
};

TEST_F(GgufRanges, FetchesOnlyTheHeaderAndTheRangesTheLayersNeed) {
  auto header = GgufFile::open(original);
  const auto ranges = gguf_ranges_for_layers(*header, {2, 5});
  uint64_t need = 0;
  for (auto [a, b] : ranges) need += b - a;
  auto g = fetch_gguf_layers(url(), {2, 5}, opts);
  EXPECT_EQ(g.n_layer, 5);
  EXPECT_EQ(g.file_bytes, content.size());
  EXPECT_EQ(g.bytes_fetched, need);
  // What travelled: the first header read (256 KiB at most) and the ranges; layers 0 and 1 and
  // the embeddings stayed remote.
  EXPECT_LE(server.served.load(), need + (256u << 10));
  EXPECT_LT(need, content.size() * 2 / 3);
  // The copy loads like the original and computes the same thing.
  EXPECT_EQ(stage_logits(g.path.string(), 2), stage_logits(original, 2));
  // Every tensor of the range holds the original bytes; blk.0 is a hole.
  auto copy = GgufFile::open(g.path.string());
  for (const auto& t : copy->tensors()) {
    const auto* o = header->find_tensor(t.name);
    ASSERT_TRUE(o);
    const bool needed = t.name.rfind("blk.0.", 0) != 0 && t.name.rfind("blk.1.", 0) != 0 && t.name != "token_embd.weight";
    if (needed) EXPECT_EQ(std::memcmp(t.data, o->data, t.nbytes), 0) << t.name;
    if (t.name == "blk.0.attn_q.weight") EXPECT_NE(std::memcmp(t.data, o->data, t.nbytes), 0) << "not fetched";
  }
}

TEST_F(GgufRanges, ALaterRangeFetchesOnlyWhatIsMissing) {
  auto a = fetch_gguf_layers(url(), {2, 5}, opts);
  auto b = fetch_gguf_layers(url(), {0, 3}, opts);
  auto header = GgufFile::open(original);
  uint64_t want = 0;
  for (auto [x, y] : gguf_ranges_for_layers(*header, {0, 3})) want += y - x;
  EXPECT_EQ(b.bytes_fetched + b.bytes_cached, want);
  EXPECT_GT(b.bytes_cached, 0u) << "layer 2 was there";
  auto all = fetch_gguf_layers(url(), {0, -1}, opts);
  EXPECT_EQ(all.bytes_fetched, 0u) << "every tensor is present now";
  // The whole copy is the model: greedy output as GOLDEN.txt.
  auto m = Model::load(all.path.string());
  KvCacheOptions kv;
  kv.n_ctx = 64;
  KvCache cache(m->config(), 0, 5, kv);
  ThreadPool pool(1);
  Forward f(*m, cache, pool);
  std::vector<int32_t> got;
  int32_t tok = 1;
  for (int p = 0; p < 8; ++p) {
    Batch bt;
    bt.add(tok, p, 0, true);
    auto lg = f.run(bt);
    tok = llmesh::argmax(lg.data(), m->config().n_vocab);
    got.push_back(tok);
  }
  EXPECT_EQ(got, (std::vector<int32_t>{403, 407, 261, 378, 432, 383, 286, 261}));
}

TEST_F(GgufRanges, ADroppedConnectionResumes) {
  auto g = fetch_gguf_layers(url("droponce"), {0, -1}, opts);
  EXPECT_EQ(read_all(g.path.string()), content);
}

TEST_F(GgufRanges, BadSourcesAreClearErrors) {
  server.files["text.gguf"] = std::string(5000, 'x');
  EXPECT_THROW(fetch_gguf_layers(server.url("files") + "text.gguf", {0, 1}, opts), GgufError);
  try {
    fetch_gguf_layers(server.url("files") + "missing.gguf", {0, 1}, opts);
    ADD_FAILURE() << "a 404 was accepted";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("404"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fetch_gguf_layers(url() + "?download=true", {0, 1}, opts), FetchError);
  EXPECT_THROW(fetch_gguf_layers(url(), {4, 9}, opts), std::invalid_argument);
  EXPECT_TRUE(is_gguf_url(url()));
  EXPECT_FALSE(is_gguf_url(server.url("files")));
  EXPECT_FALSE(is_gguf_url("/models/x.gguf"));
}

}  // namespace
}  // namespace llmesh::mesh
