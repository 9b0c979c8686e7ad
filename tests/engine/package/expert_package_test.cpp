// Mixture-of-experts layer packages: one artifact per (layer, expert) holding that expert's exact
// bytes, a whole package bit-identical to the GGUF file, an expert shard that needs (and maps)
// only its experts' artifacts and computes what the GGUF shard computes, older packages with the
// merged expert tensors in the layer files, and hostile manifests and artifacts refused.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gguf/gguf_writer.h"
#include "model/forward.h"
#include "package/package_model.h"
#include "package/package_writer.h"
#include "test_paths.h"

namespace llmesh {
namespace {

namespace fs = std::filesystem;
using Experts = std::vector<std::vector<int>>;

const std::string kMoe = "stories260K-moe4x2-noisy-f32.gguf";  // 4 experts, 2 used, 5 layers

fs::path scratch(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("llmesh_xpkg_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

struct Dir {
  fs::path path;
  explicit Dir(const std::string& name) : path(scratch(name)) {}
  ~Dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

// The package of kMoe, written once per test binary run.
const Dir& moe_package() {
  static Dir dir("pkg");
  static bool written = false;
  if (!written) {
    write_package(test::model_path(kMoe), dir.str());
    written = true;
  }
  return dir;
}

// A directory holding the manifest and only what needed_for(first, last, experts) lists.
void copy_needed(const fs::path& dst, int first, int last, const Experts& experts) {
  const fs::path src = moe_package().path;
  PackageManifest m = read_manifest(src.string());
  fs::create_directories(dst / "layers");
  fs::copy_file(src / kPackageManifestName, dst / kPackageManifestName);
  for (const Artifact* a : m.needed_for(first, last, experts)) fs::copy_file(src / a->path, dst / a->path);
}

Experts every_layer(std::vector<int> held, int n_layer = 5) { return Experts(n_layer, held); }

Batch prompt_batch(const std::vector<int32_t>& ids) {
  Batch b;
  for (size_t i = 0; i < ids.size(); ++i) b.add(ids[i], static_cast<int>(i), 0, true);
  return b;
}

// Logits of every position of a fixed prompt.
std::vector<float> logits_of(const Model& model) {
  KvCacheOptions kv;
  kv.n_ctx = 32;
  KvCache cache(model.config(), model.first_layer(), model.last_layer(), kv);
  ThreadPool pool(2);
  Forward fwd(model, cache, pool);
  auto out = fwd.run(prompt_batch({1, 403, 407, 261, 378, 432, 383}));
  return {out.begin(), out.end()};
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string load_error(const std::string& dir, const PackageLoadOptions& opt) {
  try {
    load_package_model(dir, opt);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

std::set<std::string> files_in(const fs::path& dir) {
  std::set<std::string> s;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) s.insert(fs::relative(e.path(), dir).generic_string());
  return s;
}

TEST(ExpertPackage, OneArtifactPerLayerAndExpertWithTheExpertsExactBytes) {
  const Dir& dir = moe_package();
  PackageManifest m = read_manifest(dir.str());
  auto src = GgufFile::open(test::model_path(kMoe));
  ASSERT_EQ(m.n_layer, 5);
  EXPECT_EQ(m.n_expert, 4);
  ASSERT_EQ(m.artifacts.size(), 5u + 3u + 5u * 4u);
  EXPECT_EQ(to_json(parse_manifest(to_json(m))), to_json(m));
  int experts = 0;
  for (const Artifact& a : m.artifacts) {
    auto f = GgufFile::open((dir.path / a.path).string());
    if (a.kind == "layer") {
      // The rest of the layer: norms, attention, router; no expert weights.
      EXPECT_TRUE(f->find_tensor("blk." + std::to_string(a.layer) + ".ffn_gate_inp.weight")) << a.path;
      for (const GgufTensor& t : f->tensors()) {
        EXPECT_EQ(t.name.find("_exps"), std::string::npos) << t.name;
        EXPECT_EQ(t.name.find("ffn_gate."), std::string::npos) << t.name;
      }
    }
    if (a.kind != "expert") continue;
    ++experts;
    EXPECT_EQ(a.path, "layers/blk." + std::to_string(a.layer) + ".expert." + std::to_string(a.expert) + ".gguf");
    ASSERT_EQ(f->tensors().size(), 3u) << a.path;
    for (const char* w : {"gate", "up", "down"}) {
      const std::string name = fmt::format("blk.{}.ffn_{}.{}.weight", a.layer, w, a.expert);
      const GgufTensor* t = f->find_tensor(name);
      ASSERT_TRUE(t) << name;
      const GgufTensor& merged = src->tensor(fmt::format("blk.{}.ffn_{}_exps.weight", a.layer, w));
      const uint64_t slice = merged.nbytes / 4;
      EXPECT_EQ(t->type, merged.type);
      EXPECT_EQ(t->n_dims, 2u);
      EXPECT_EQ(t->ne[0], merged.ne[0]);
      EXPECT_EQ(t->ne[1], merged.ne[1]);
      ASSERT_EQ(t->nbytes, slice);
      EXPECT_EQ(std::memcmp(t->data, merged.data + slice * a.expert, slice), 0) << name;
    }
  }
  EXPECT_EQ(experts, 20);
  // needed_for: every expert by default, only the shard's with experts, in layer order.
  EXPECT_EQ(m.needed_for(0, 5).size(), 5u + 3u + 20u);
  auto shard = m.needed_for(1, 3, every_layer({2, 0}));
  std::vector<std::string> paths;
  for (const Artifact* a : shard) paths.push_back(a->path);
  EXPECT_EQ(paths, (std::vector<std::string>{"metadata.gguf", "layers/blk.1.gguf", "layers/blk.1.expert.0.gguf",
                                             "layers/blk.1.expert.2.gguf", "layers/blk.2.gguf",
                                             "layers/blk.2.expert.0.gguf", "layers/blk.2.expert.2.gguf"}));
  EXPECT_THROW(m.needed_for(0, 5, every_layer({0, 4})), std::invalid_argument);    // no expert 4
  EXPECT_THROW(m.needed_for(0, 5, every_layer({1, 1})), std::invalid_argument);    // twice
  EXPECT_THROW(m.needed_for(0, 5, every_layer({-1})), std::invalid_argument);
  EXPECT_THROW(m.needed_for(0, 5, every_layer({0}, 4)), std::invalid_argument);    // 4 lists, 5 layers
  EXPECT_THROW(m.needed_for(0, 5, every_layer({}, 5)), std::invalid_argument);     // nothing held
}

TEST(ExpertPackage, WholePackageIsBitIdenticalToTheGguf) {
  auto plain = Model::load(test::model_path(kMoe));
  auto pkg = load_package_model(moe_package().str(), {.layers = {}, .verify_sha256 = true});
  EXPECT_TRUE(pkg->holds_all_experts());
  EXPECT_TRUE(same_bits(logits_of(*pkg), logits_of(*plain)));
}

TEST(ExpertPackage, AShardNeedsOnlyItsExpertsAndMatchesTheGgufShard) {
  const Experts held = every_layer({0, 2});
  Dir dir("shard");
  copy_needed(dir.path, 0, 5, held);
  std::set<std::string> want = {"manifest.json", "metadata.gguf", "embeddings.gguf", "output.gguf"};
  for (int il = 0; il < 5; ++il) {
    want.insert(fmt::format("layers/blk.{}.gguf", il));
    want.insert(fmt::format("layers/blk.{}.expert.0.gguf", il));
    want.insert(fmt::format("layers/blk.{}.expert.2.gguf", il));
  }
  EXPECT_EQ(files_in(dir.path), want);  // experts 1 and 3 are not there

  auto shard = load_package_model(dir.str(), {.layers = {}, .verify_sha256 = true, .experts = held});
  EXPECT_FALSE(shard->holds_all_experts());
  EXPECT_EQ(shard->layer(3).n_held, 2);
  // Only the needed files are mapped: metadata, embeddings, 5 layers, 10 experts, output.
  auto gguf_shard = Model::load(test::model_path(kMoe), {.layers = {}, .experts = held});
  const auto got = logits_of(*shard);
  EXPECT_TRUE(same_bits(got, logits_of(*gguf_shard)));
  // A shard is not the whole model (the router is restricted to the held experts).
  EXPECT_FALSE(same_bits(got, logits_of(*Model::load(test::model_path(kMoe)))));

  // The whole model is refused there, naming an absent expert.
  std::string err = load_error(dir.str(), {});
  EXPECT_NE(err.find("layers/blk.0.expert.1.gguf is missing (expert 1 of layer 0"), std::string::npos) << err;
  // A needed expert that is gone: a clear error naming it.
  fs::remove(dir.path / "layers/blk.3.expert.2.gguf");
  err = load_error(dir.str(), {.layers = {}, .experts = held});
  EXPECT_NE(err.find("layers/blk.3.expert.2.gguf is missing (expert 2 of layer 3"), std::string::npos) << err;
  // Bad shards are refused before anything is read.
  err = load_error(moe_package().str(), {.layers = {}, .experts = every_layer({0, 9})});
  EXPECT_NE(err.find("expert 9 of layer 0 does not exist"), std::string::npos) << err;
  err = load_error(moe_package().str(), {.layers = {}, .experts = every_layer({3, 3})});
  EXPECT_NE(err.find("listed twice"), std::string::npos) << err;
  // A dense package has no experts to shard.
  Dir dense("dense");
  write_package(test::model_path("stories260K-f32.gguf"), dense.str());
  EXPECT_EQ(read_manifest(dense.str()).n_expert, 0);
  EXPECT_EQ(to_json(read_manifest(dense.str())).find("n_expert"), std::string::npos);
  err = load_error(dense.str(), {.layers = {}, .experts = every_layer({0})});
  EXPECT_NE(err.find("no experts"), std::string::npos) << err;
}

TEST(ExpertPackage, ShardStagesChainLikeTheGgufShard) {
  // Two stages of an expert shard, each from a directory with only its own artifacts.
  const Experts held = {{1, 3}, {0, 1, 2}, {2}, {0, 3}, {0, 1, 2, 3}};
  Dir a("stage_a"), b("stage_b");
  copy_needed(a.path, 0, 2, held);
  copy_needed(b.path, 2, 5, held);
  EXPECT_FALSE(fs::exists(b.path / "layers/blk.2.expert.0.gguf"));
  EXPECT_TRUE(fs::exists(b.path / "layers/blk.2.expert.2.gguf"));
  auto ma = load_package_model(a.str(), {.layers = {0, 2}, .verify_sha256 = true, .experts = held});
  auto mb = load_package_model(b.str(), {.layers = {2, 5}, .verify_sha256 = true, .experts = held});
  auto whole = Model::load(test::model_path(kMoe), {.layers = {}, .experts = held});

  KvCacheOptions kv;
  kv.n_ctx = 32;
  ThreadPool pool(2);
  KvCache ca(ma->config(), 0, 2, kv), cb(mb->config(), 2, 5, kv);
  Forward fa(*ma, ca, pool), fb(*mb, cb, pool);
  const Batch prompt = prompt_batch({1, 403, 407, 261, 378});
  auto hidden = fa.run(prompt);
  Batch hb = prompt;
  hb.tokens.clear();
  hb.hidden.assign(hidden.begin(), hidden.end());
  auto got = fb.run(hb);
  KvCache cw(whole->config(), 0, 5, kv);
  Forward fw(*whole, cw, pool);
  auto want = fw.run(prompt);
  EXPECT_TRUE(same_bits({got.begin(), got.end()}, {want.begin(), want.end()}));
}

// An MoE package written before expert artifacts: the merged expert tensors in the layer files,
// no n_expert, no expert entries. It still loads, whole and as a shard.
TEST(ExpertPackage, OlderPackagesWithMergedExpertsStillLoad) {
  Dir dir("old");
  fs::copy(moe_package().path, dir.path, fs::copy_options::recursive);
  auto src = GgufFile::open(test::model_path(kMoe));
  PackageManifest m = read_manifest(dir.str());
  std::vector<Artifact> kept;
  for (Artifact a : m.artifacts) {
    if (a.kind == "expert") {
      fs::remove(dir.path / a.path);
      continue;
    }
    if (a.kind == "layer") {
      GgufWriter w;
      w.set_string("general.architecture", m.architecture);
      for (const GgufTensor& t : src->tensors())
        if (t.name.starts_with("blk." + std::to_string(a.layer) + ".")) w.add_tensor(t);
      w.write((dir.path / a.path).string());
      a.bytes = fs::file_size(dir.path / a.path);
      a.sha256 = sha256_file((dir.path / a.path).string());
    }
    kept.push_back(a);
  }
  m.artifacts = kept;
  m.n_expert = 0;
  const std::string text = to_json(m);
  EXPECT_EQ(text.find("expert"), std::string::npos);
  std::ofstream(dir.path / kPackageManifestName) << text;

  PackageManifest r = read_manifest(dir.str());
  EXPECT_EQ(r.n_expert, 0);
  EXPECT_EQ(r.needed_for(0, 5, every_layer({0, 2})).size(), 5u + 3u);  // the experts are in the layers
  auto whole = load_package_model(dir.str(), {.layers = {}, .verify_sha256 = true});
  EXPECT_TRUE(same_bits(logits_of(*whole), logits_of(*Model::load(test::model_path(kMoe)))));
  auto shard = load_package_model(dir.str(), {.layers = {}, .verify_sha256 = true, .experts = every_layer({0, 2})});
  auto gguf_shard = Model::load(test::model_path(kMoe), {.layers = {}, .experts = every_layer({0, 2})});
  EXPECT_TRUE(same_bits(logits_of(*shard), logits_of(*gguf_shard)));
}

// Rewrites the package's manifest after `edit` (on its JSON) and returns the load error.
template <typename F>
std::string manifest_error(const Dir& dir, F edit) {
  nlohmann::json j = nlohmann::json::parse(to_json(read_manifest(moe_package().str())));
  edit(j);
  try {
    parse_manifest(j.dump());
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  (void)dir;
  return "";
}

int index_of(const nlohmann::json& j, int layer, int expert) {
  for (size_t k = 0; k < j["artifacts"].size(); ++k) {
    const auto& a = j["artifacts"][k];
    if (a["kind"] == "expert" && a["layer"] == layer && a["expert"] == expert) return static_cast<int>(k);
  }
  return -1;
}

TEST(ExpertPackage, HostileManifestEntriesAreRefused) {
  const Dir& pkg = moe_package();
  EXPECT_EQ(manifest_error(pkg, [](auto&) {}), "");
  std::string err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 1, 2)]["expert"] = 4; });
  EXPECT_NE(err.find("'artifacts[" + std::to_string(index_of(nlohmann::json::parse(to_json(read_manifest(pkg.str()))), 1, 2)) +
                     "].expert' = 4 is out of range [0, 3]"),
            std::string::npos)
      << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 1, 2)]["expert"] = -1; });
  EXPECT_NE(err.find("expert' = -1 is out of range"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 1, 2)]["expert"] = 1; });  // (1, 1) twice
  EXPECT_NE(err.find("expert' = 1 of layer 1 appears more than once"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 1, 2)]["layer"] = 5; });
  EXPECT_NE(err.find("layer' = 5 is out of range [0, 4]"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 1, 2)]["expert"] = "2"; });
  EXPECT_NE(err.find("must be an integer"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 1, 2)].erase("expert"); });
  EXPECT_NE(err.find("expert' is missing"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][2]["expert"] = 0; });  // on a layer entry
  EXPECT_NE(err.find("'artifacts[2].expert' is not a known field"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"].erase(index_of(j, 4, 3)); });
  EXPECT_NE(err.find("has 27 entries, expected 28"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j.erase("n_expert"); });
  EXPECT_NE(err.find("n_expert"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["n_expert"] = 0; });
  EXPECT_NE(err.find("'n_expert' = 0 is out of range"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["n_expert"] = 1 << 20; });
  EXPECT_NE(err.find("'n_expert'"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 0, 0)]["path"] = "../blk.0.expert.0.gguf"; });
  EXPECT_NE(err.find("not a safe relative path"), std::string::npos) << err;
  err = manifest_error(pkg, [](auto& j) { j["artifacts"][index_of(j, 0, 0)]["path"] = "layers/blk.0.gguf"; });
  EXPECT_NE(err.find("appears more than once"), std::string::npos) << err;
}

TEST(ExpertPackage, AnArtifactCannotStandInForAnother) {
  // Expert 1's file under expert 2's name (manifest rewritten to match its hash): refused.
  {
    Dir dir("swap");
    fs::copy(moe_package().path, dir.path, fs::copy_options::recursive);
    fs::copy_file(dir.path / "layers/blk.2.expert.1.gguf", dir.path / "layers/blk.2.expert.2.gguf",
                  fs::copy_options::overwrite_existing);
    PackageManifest m = read_manifest(dir.str());
    for (Artifact& a : m.artifacts)
      if (a.kind == "expert" && a.layer == 2 && a.expert == 2) {
        a.bytes = fs::file_size(dir.path / a.path);
        a.sha256 = sha256_file((dir.path / a.path).string());
      }
    std::ofstream(dir.path / kPackageManifestName) << to_json(m);
    std::string err = load_error(dir.str(), {.layers = {}, .verify_sha256 = true});
    EXPECT_NE(err.find("layers/blk.2.expert.2.gguf (expert) holds tensor 'blk.2.ffn_"), std::string::npos) << err;
    // A shard that does not need expert 2 of layer 2 loads.
    EXPECT_EQ(load_error(dir.str(), {.layers = {}, .verify_sha256 = true, .experts = every_layer({0, 1})}), "");
  }
  // A layer file that also carries the merged expert tensors, in a package with expert files.
  {
    Dir dir("fat_layer");
    fs::copy(moe_package().path, dir.path, fs::copy_options::recursive);
    auto src = GgufFile::open(test::model_path(kMoe));
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    for (const GgufTensor& t : src->tensors())
      if (t.name.starts_with("blk.1.")) w.add_tensor(t);
    w.write((dir.path / "layers/blk.1.gguf").string());
    PackageManifest m = read_manifest(dir.str());
    for (Artifact& a : m.artifacts)
      if (a.kind == "layer" && a.layer == 1) {
        a.bytes = fs::file_size(dir.path / a.path);
        a.sha256 = sha256_file((dir.path / a.path).string());
      }
    std::ofstream(dir.path / kPackageManifestName) << to_json(m);
    std::string err = load_error(dir.str(), {.layers = {}, .experts = every_layer({0})});
    EXPECT_NE(err.find("layers/blk.1.gguf (layer) holds tensor 'blk.1.ffn_"), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace llmesh
