// Expert shards fetched over HTTP (stories260K-moe4x2-noisy: 5 layers of 4 experts): from a plain
// GGUF only the trunk and the held experts' slices of the merged expert tensors travel, a later
// shard with more experts moves only the missing slices; from a layer package only the held
// experts' artifacts are asked for. Either way the shard computes what the GGUF shard computes.
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include <fmt/format.h>

#include "fetch/gguf_ranges.h"
#include "fetch/package_fetch.h"
#include "fetch_fixture.h"
#include "gguf/gguf.h"
#include "kernels/thread_pool.h"
#include "model/forward.h"
#include "package/package_model.h"
#include "package/package_writer.h"
#include "test_paths.h"

namespace llmesh::mesh {
namespace {

namespace fs = std::filesystem;
using Experts = std::vector<std::vector<int>>;
using test::TempDir;

const std::string kMoe = "stories260K-moe4x2-noisy-f32.gguf";

Experts every_layer(std::vector<int> held) { return Experts(5, held); }

std::vector<float> logits_of(const Model& model) {
  KvCacheOptions kv;
  kv.n_ctx = 16;
  KvCache cache(model.config(), model.first_layer(), model.last_layer(), kv);
  ThreadPool pool(1);
  Forward fwd(model, cache, pool);
  Batch b;
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  for (size_t i = 0; i < ids.size(); ++i) b.add(ids[i], static_cast<int>(i), 0, true);
  auto out = fwd.run(b);
  return {out.begin(), out.end()};
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool is_merged_expert(const std::string& name) { return name.find("_exps.weight") != std::string::npos; }

// Tensor bytes a shard needs: everything but the merged expert tensors, plus the held slices.
uint64_t shard_bytes(const GgufFile& f, size_t held_per_layer) {
  uint64_t n = 0;
  for (const auto& t : f.tensors()) n += is_merged_expert(t.name) ? t.nbytes / 4 * held_per_layer : t.nbytes;
  return n;
}

struct GgufExperts : ::testing::Test {
  TempDir cache;
  test::FileServer server;
  std::string original = llmesh::test::model_path(kMoe);
  std::string content = test::read_all(original);
  std::shared_ptr<GgufFile> header = GgufFile::open(original);
  PackageFetchOptions opts;
  GgufExperts() {
    server.files["moe.gguf"] = content;
    opts.cache_root = cache.path;
  }
  std::string url() const { return server.url("files") + "moe.gguf"; }
};

TEST_F(GgufExperts, FetchesOnlyTheTrunkAndTheHeldExpertsSlices) {
  const Experts held = every_layer({0, 2});
  // The ranges never touch expert 1's or 3's bytes.
  const auto ranges = gguf_ranges_for_layers(*header, {}, held);
  for (const auto& t : header->tensors()) {
    if (!is_merged_expert(t.name)) continue;
    const uint64_t s = t.nbytes / 4, base = header->data_offset() + t.offset;
    for (int x : {1, 3})
      for (auto [a, b] : ranges) EXPECT_TRUE(b <= base + x * s || a >= base + (x + 1) * s) << t.name << " expert " << x;
  }
  const uint64_t want = shard_bytes(*header, 2);
  auto g = fetch_gguf_layers(url(), {}, held, opts);
  EXPECT_EQ(g.bytes_fetched, want);
  EXPECT_EQ(g.bytes_cached, 0u);
  EXPECT_LT(want, content.size() * 3 / 4);
  EXPECT_LE(server.served.load(), want + (256u << 10));  // + the first header read
  // The sparse copy loads as the shard, equal to the GGUF's shard; absent experts are holes.
  auto shard = Model::load(g.path.string(), {.layers = {}, .experts = held});
  EXPECT_TRUE(same_bits(logits_of(*shard), logits_of(*Model::load(original, {.layers = {}, .experts = held}))));
  auto copy = GgufFile::open(g.path.string());
  const GgufTensor& t = copy->tensor("blk.3.ffn_up_exps.weight");
  const GgufTensor& o = header->tensor("blk.3.ffn_up_exps.weight");
  const uint64_t s = t.nbytes / 4;
  EXPECT_EQ(std::memcmp(t.data + 2 * s, o.data + 2 * s, s), 0);
  EXPECT_EQ(std::memcmp(t.data + 1 * s, std::string(s, '\0').data(), s), 0) << "expert 1 was not fetched";

  // A later shard with expert 1 too moves only expert 1's slices.
  const uint64_t slices1 = shard_bytes(*header, 3) - shard_bytes(*header, 2);
  server.served = 0;
  auto g2 = fetch_gguf_layers(url(), {}, every_layer({1, 0, 2}), opts);
  EXPECT_EQ(g2.bytes_fetched, slices1);
  EXPECT_EQ(g2.bytes_cached, want);
  EXPECT_EQ(server.served.load(), slices1) << "only the missing slices travelled (the header is cached)";
  // Everything: only expert 3 is left, and then the copy is the file.
  auto all = fetch_gguf_layers(url(), {}, opts);
  EXPECT_EQ(all.bytes_fetched, shard_bytes(*header, 4) - shard_bytes(*header, 3));
  EXPECT_EQ(test::read_all(all.path), content);
}

TEST_F(GgufExperts, ALayerRangeOfAShard) {
  const Experts held = {{3}, {0}, {1, 2}, {0, 1, 2, 3}, {2, 3}};
  auto g = fetch_gguf_layers(url(), {2, 4}, held, opts);
  uint64_t want = 0;
  for (const auto& t : header->tensors()) {
    const bool in = t.name.starts_with("blk.2.") || t.name.starts_with("blk.3.");
    if (in) want += is_merged_expert(t.name) ? t.nbytes / 4 * (t.name.starts_with("blk.2.") ? 2 : 4) : t.nbytes;
    else if (!t.name.starts_with("blk.") && t.name != "token_embd.weight" && !t.name.starts_with("output")) want += t.nbytes;
  }
  EXPECT_EQ(g.bytes_fetched, want);
  auto stage = Model::load(g.path.string(), {.layers = {2, 4}, .experts = held});
  EXPECT_EQ(stage->layer(2).n_held, 2);
}

TEST_F(GgufExperts, BadShardsAreRefused) {
  EXPECT_THROW(gguf_ranges_for_layers(*header, {}, every_layer({0, 4})), std::invalid_argument);
  EXPECT_THROW(gguf_ranges_for_layers(*header, {}, every_layer({2, 2})), std::invalid_argument);
  EXPECT_THROW(gguf_ranges_for_layers(*header, {}, Experts(4, {0})), std::invalid_argument);
  EXPECT_THROW(gguf_ranges_for_layers(*header, {}, every_layer({})), std::invalid_argument);
  auto dense = GgufFile::open(llmesh::test::model_path("stories260K-f32.gguf"));
  EXPECT_THROW(gguf_ranges_for_layers(*dense, {}, every_layer({0})), std::invalid_argument);
  EXPECT_THROW(fetch_gguf_layers(url(), {}, every_layer({7}), opts), std::invalid_argument);
  // Without experts: the whole layers, as before.
  uint64_t all = 0;
  for (auto [a, b] : gguf_ranges_for_layers(*header, {})) all += b - a;
  EXPECT_EQ(all, shard_bytes(*header, 4));
}

// The package of kMoe, written once per test binary run.
const fs::path& moe_package() {
  static TempDir dir;
  static bool written = false;
  if (!written) {
    write_package(llmesh::test::model_path(kMoe), (dir.path / "pkg").string());
    written = true;
  }
  static fs::path p = dir.path / "pkg";
  return p;
}

TEST(PackageExperts, AShardFetchesOnlyItsExpertArtifacts) {
  test::PackageServer server(moe_package());
  TempDir cache;
  PackageFetchOptions o;
  o.cache_root = cache.path;
  o.warn = [](const std::string&) {};
  o.experts = every_layer({0, 2});
  FetchedPackage p = fetch_package(server.url(), {}, o);
  std::set<std::string> want = {"manifest.json", "metadata.gguf", "embeddings.gguf", "output.gguf"};
  for (int il = 0; il < 5; ++il)
    for (std::string f : {"", ".expert.0", ".expert.2"}) want.insert(fmt::format("layers/blk.{}{}.gguf", il, f));
  EXPECT_EQ(server.take_requested(), want);
  EXPECT_EQ(p.artifacts.size(), 3u + 5u + 10u);
  uint64_t bytes = 0;
  for (const Artifact& a : p.artifacts) bytes += a.bytes;
  EXPECT_EQ(p.bytes_fetched, bytes);
  EXPECT_LT(bytes, p.manifest.total_bytes());
  auto shard = load_package_model(p.dir.string(), p.manifest, {.layers = {}, .verify_sha256 = true, .experts = o.experts});
  auto gguf_shard = Model::load(llmesh::test::model_path(kMoe), {.layers = {}, .experts = o.experts});
  EXPECT_TRUE(same_bits(logits_of(*shard), logits_of(*gguf_shard)));
  // The whole model is not there.
  EXPECT_THROW(load_package_model(p.dir.string(), p.manifest, {}), std::runtime_error);

  // One more expert: only its five artifacts travel.
  o.experts = every_layer({0, 1, 2});
  FetchedPackage q = fetch_package(server.url(), {}, o);
  std::set<std::string> more = {"manifest.json"};
  for (int il = 0; il < 5; ++il) more.insert(fmt::format("layers/blk.{}.expert.1.gguf", il));
  EXPECT_EQ(server.take_requested(), more);
  EXPECT_EQ(q.bytes_cached, bytes);
  // A middle stage of a shard: metadata, its layers and their held experts.
  o.experts = every_layer({3});
  FetchedPackage r = fetch_package(server.url(), {1, 3}, o);
  EXPECT_EQ(server.take_requested(), (std::set<std::string>{"manifest.json", "layers/blk.1.expert.3.gguf",
                                                            "layers/blk.2.expert.3.gguf"}));
  EXPECT_EQ(r.artifacts.size(), 1u + 2u + 2u);
  o.experts = every_layer({4});
  EXPECT_THROW(fetch_package(server.url(), {}, o), std::invalid_argument);
}

}  // namespace
}  // namespace llmesh::mesh
