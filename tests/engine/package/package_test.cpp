// Layer packages end to end: writing (every tensor byte-identical, in exactly one file), greedy
// generation from a package equal to GOLDEN.txt / the plain GGUF, stages loaded from directories
// holding only their artifacts, bit-identical chaining, and damaged artifacts detected.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include <gtest/gtest.h>

#include "model/forward.h"
#include "package/package_model.h"
#include "package/package_writer.h"
#include "sampling/sampler.h"
#include "test_paths.h"

namespace llmesh {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("llmesh_package_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

// A package per model, written once per test binary run and removed at exit.
struct Packages {
  std::map<std::string, std::string> dirs;
  ~Packages() {
    std::error_code ec;
    for (auto& [model, dir] : dirs) fs::remove_all(dir, ec);
  }
};
const std::string& package_of(const std::string& model) {
  static Packages packages;
  auto& dirs = packages.dirs;
  auto it = dirs.find(model);
  if (it != dirs.end()) return it->second;
  fs::path dir = scratch("pkg_" + model);
  write_package(test::model_path(model), dir.string());
  return dirs[model] = dir.string();
}

// A directory holding only the artifacts [first, last) needs, plus the manifest.
std::string partial_dir(const std::string& model, int first, int last, const std::string& tag) {
  const std::string src = package_of(model);
  PackageManifest m = read_manifest(src);
  fs::path dir = scratch(tag);
  fs::create_directories(dir / "layers");
  fs::copy_file(fs::path(src) / kPackageManifestName, dir / kPackageManifestName);
  // (callers remove the directory when done)
  for (const Artifact* a : m.needed_for(first, last)) fs::copy_file(fs::path(src) / a->path, dir / a->path);
  return dir.string();
}

struct Stage {
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  ThreadPool pool{2};
  std::unique_ptr<Forward> fwd;
  explicit Stage(std::unique_ptr<Model> m) : model(std::move(m)) {
    KvCacheOptions kv;
    kv.n_ctx = 64;
    cache = std::make_unique<KvCache>(model->config(), model->first_layer(), model->last_layer(), kv);
    fwd = std::make_unique<Forward>(*model, *cache, pool);
  }
};

Batch prompt_batch(const std::vector<int32_t>& ids) {
  Batch b;
  for (size_t i = 0; i < ids.size(); ++i) b.add(ids[i], static_cast<int>(i), 0, i + 1 == ids.size());
  return b;
}

std::vector<int32_t> greedy(Stage& s, std::vector<int32_t> prompt, int n) {
  std::vector<int32_t> out;
  auto logits = s.fwd->run(prompt_batch(prompt));
  int pos = static_cast<int>(prompt.size());
  for (int i = 0; i < n; ++i) {
    int32_t tok = argmax(logits.data(), s.model->config().n_vocab);
    out.push_back(tok);
    Batch b;
    b.add(tok, pos++, 0, true);
    logits = s.fwd->run(b);
  }
  return out;
}

std::vector<int32_t> golden_bos_only(const std::string& model) {
  std::ifstream in(test::model_path("GOLDEN.txt"));
  std::string line;
  bool in_case = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) in_case = line == "## " + model + "  (BOS only, 40 tokens)";
    else if (in_case && line.rfind("generated ids:", 0) == 0) {
      std::vector<int32_t> v;
      std::regex num("[0-9]+");
      for (auto it = std::sregex_iterator(line.begin(), line.end(), num); it != std::sregex_iterator(); ++it)
        v.push_back(std::stoi(it->str()));
      return v;
    }
  }
  return {};
}

std::string load_error(const std::string& dir, PackageLoadOptions opt) {
  try {
    load_package_model(dir, opt);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(PackageWriter, EveryTensorByteIdenticalInExactlyOneFile) {
  for (std::string model : {"stories260K-f32.gguf", "stories260K-q4_0.gguf", "qwen3-tiny-q8_0.gguf"}) {
    SCOPED_TRACE(model);
    int calls = 0;
    fs::path dir = scratch("writer");
    PackageManifest m = write_package(test::model_path(model), dir.string(),
                                      [&](const PackageProgress& p) {
                                        ++calls;
                                        EXPECT_EQ(p.index, calls);
                                        EXPECT_GT(p.artifact->bytes, 0u);
                                      });
    auto src = GgufFile::open(test::model_path(model));
    EXPECT_EQ(calls, m.n_layer + 3);
    EXPECT_EQ(m.artifacts.size(), static_cast<size_t>(m.n_layer + 3));
    EXPECT_EQ(m.source_bytes, src->file_size());
    EXPECT_EQ(m.source_sha256, sha256_file(test::model_path(model)));
    EXPECT_EQ(m.tied_embeddings, model.starts_with("qwen3"));  // qwen3-tiny has no output.weight
    EXPECT_EQ(m.model_id, model.substr(0, model.size() - 5));
    EXPECT_EQ(to_json(read_manifest(dir.string())), to_json(m));

    std::map<std::string, int> seen;
    for (const Artifact& a : m.artifacts) {
      fs::path p = dir / a.path;
      ASSERT_EQ(fs::file_size(p), a.bytes) << a.path;
      EXPECT_EQ(sha256_file(p.string()), a.sha256) << a.path;
      auto f = GgufFile::open(p.string());
      if (a.kind == "metadata") {  // all of the source's metadata, same types and values
        for (const auto& [key, v] : src->metadata()) {
          const GgufValue* got = f->find(key);
          ASSERT_NE(got, nullptr) << key;
          EXPECT_EQ(got->type, v.type) << key;
          EXPECT_EQ(got->u, v.u) << key;
          EXPECT_EQ(got->s, v.s) << key;
          EXPECT_EQ(got->count, v.count) << key;
        }
        EXPECT_TRUE(f->has(m.architecture + ".vocab_size"));
      }
      for (const GgufTensor& t : f->tensors()) {
        ++seen[t.name];
        const GgufTensor& s = src->tensor(t.name);
        EXPECT_EQ(t.type, s.type) << t.name;
        EXPECT_EQ(t.shape_string(), s.shape_string()) << t.name;
        ASSERT_EQ(t.nbytes, s.nbytes) << t.name;
        EXPECT_EQ(std::memcmp(t.data, s.data, t.nbytes), 0) << t.name;
        if (a.kind == "layer") {
          EXPECT_TRUE(t.name.starts_with("blk." + std::to_string(a.layer) + "."));
        }
      }
    }
    EXPECT_EQ(seen.size(), src->tensors().size());
    for (auto& [name, n] : seen) EXPECT_EQ(n, 1) << name;
    fs::remove_all(dir);
  }
}

TEST(PackageModel, WholeModelGreedyMatchesGolden) {
  for (std::string model : {"stories260K-f32.gguf", "stories260K-q4_0.gguf", "stories260K-moe4x2-f32.gguf"}) {
    SCOPED_TRACE(model);
    auto want = golden_bos_only(model);
    ASSERT_EQ(want.size(), 40u);
    Stage s(load_package_model(package_of(model), {.layers = {}, .verify_sha256 = true}));
    EXPECT_TRUE(s.model->has_embedding());
    EXPECT_TRUE(s.model->has_head());
    EXPECT_EQ(greedy(s, {1}, 40), want);
  }
}

TEST(PackageModel, TiedEmbeddingsModelMatchesThePlainFile) {
  const std::string model = "qwen3-tiny-q8_0.gguf";
  Stage plain(Model::load(test::model_path(model)));
  Stage pkg(load_package_model(package_of(model)));
  std::vector<int32_t> prompt = {9707, 1879, 11, 1879};
  auto a = plain.fwd->run(prompt_batch(prompt));
  std::vector<float> la(a.begin(), a.end());
  auto b = pkg.fwd->run(prompt_batch(prompt));
  ASSERT_EQ(la.size(), b.size());
  EXPECT_EQ(std::memcmp(la.data(), b.data(), la.size() * sizeof(float)), 0);
  plain.cache->clear(0);
  pkg.cache->clear(0);
  EXPECT_EQ(greedy(pkg, prompt, 12), greedy(plain, prompt, 12));
  // The last stage of a tied model needs the embedding table: its partial dir has it.
  PackageManifest m = read_manifest(package_of(model));
  EXPECT_TRUE(m.tied_embeddings);
  const std::string dir = partial_dir(model, 1, 2, "qwen_last");
  EXPECT_TRUE(fs::exists(fs::path(dir) / "embeddings.gguf"));
  {
    Stage last(load_package_model(dir, {.layers = {1, -1}}));
    EXPECT_TRUE(last.model->has_head());
  }
  fs::remove_all(dir);
}

TEST(PackageModel, StagesFromPartialDirectoriesChainBitIdentically) {
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  for (std::string model : {"stories260K-f32.gguf", "stories260K-moe4x2-f32.gguf", "qwen3-tiny-q8_0.gguf"}) {
    SCOPED_TRACE(model);
    const int n = read_manifest(package_of(model)).n_layer;
    Stage full(Model::load(test::model_path(model)));
    auto w = full.fwd->run(prompt_batch(prompt));
    std::vector<float> want(w.begin(), w.end());
    for (int k = 1; k < n; k += (n > 2 ? 2 : 1)) {
      SCOPED_TRACE("split " + std::to_string(k));
      std::string dir_a = partial_dir(model, 0, k, "a"), dir_b = partial_dir(model, k, n, "b");
      // Only the needed artifacts are there.
      EXPECT_FALSE(fs::exists(fs::path(dir_a) / "output.gguf"));
      EXPECT_FALSE(fs::exists(fs::path(dir_b) / "layers/blk.0.gguf"));
      Stage a(load_package_model(dir_a, {.layers = {0, k}, .verify_sha256 = true}));
      Stage b(load_package_model(dir_b, {.layers = {k, n}, .verify_sha256 = true}));
      EXPECT_FALSE(a.model->has_head());
      EXPECT_FALSE(b.model->has_embedding());
      auto hidden = a.fwd->run(prompt_batch(prompt));
      Batch hb = prompt_batch(prompt);
      hb.tokens.clear();
      hb.hidden.assign(hidden.begin(), hidden.end());
      auto got = b.fwd->run(hb);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
      // The other stage's range is refused there, naming a missing file.
      EXPECT_NE(load_error(dir_b, {.layers = {0, k}}).find("is missing"), std::string::npos);
      fs::remove_all(dir_a);
      fs::remove_all(dir_b);
    }
  }
}

TEST(PackageModel, DamagedArtifactsAreDetectedNamingTheFile) {
  const std::string model = "stories260K-f32.gguf";
  // Missing.
  {
    std::string dir = partial_dir(model, 2, 5, "missing");
    fs::remove(fs::path(dir) / "layers/blk.3.gguf");
    std::string err = load_error(dir, {.layers = {2, 5}});
    EXPECT_NE(err.find("layers/blk.3.gguf is missing"), std::string::npos) << err;
    fs::remove_all(dir);
  }
  // Truncated: caught by the size check, even without hashing.
  {
    std::string dir = partial_dir(model, 2, 5, "truncated");
    fs::path p = fs::path(dir) / "layers/blk.3.gguf";
    fs::resize_file(p, fs::file_size(p) - 100);
    std::string err = load_error(dir, {.layers = {2, 5}});
    EXPECT_NE(err.find("layers/blk.3.gguf has"), std::string::npos) << err;
    EXPECT_NE(err.find("truncated"), std::string::npos) << err;
    fs::remove_all(dir);
  }
  // One flipped byte in the weights: same size, so only SHA-256 sees it.
  {
    std::string dir = partial_dir(model, 2, 5, "corrupt");
    fs::path p = fs::path(dir) / "output.gguf";
    {
      std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(fs::file_size(p)) - 7);
      f.put('\x5a');
    }
    std::string err = load_error(dir, {.layers = {2, 5}, .verify_sha256 = true});
    EXPECT_NE(err.find("output.gguf has SHA-256"), std::string::npos) << err;
    EXPECT_NE(err.find("corrupted"), std::string::npos) << err;
    EXPECT_EQ(load_error(dir, {.layers = {2, 5}, .verify_sha256 = false}), "");  // documented: size only
    fs::remove_all(dir);
  }
  // A valid GGUF of another layer under this layer's name (manifest rewritten to match).
  {
    std::string dir = partial_dir(model, 2, 5, "swapped");
    fs::copy_file(fs::path(package_of(model)) / "layers/blk.1.gguf", fs::path(dir) / "layers/blk.3.gguf",
                  fs::copy_options::overwrite_existing);
    PackageManifest m = read_manifest(dir);
    for (Artifact& a : m.artifacts)
      if (a.kind == "layer" && a.layer == 3) {
        a.bytes = fs::file_size(fs::path(dir) / a.path);
        a.sha256 = sha256_file((fs::path(dir) / a.path).string());
      }
    std::ofstream(fs::path(dir) / kPackageManifestName) << to_json(m);
    std::string err = load_error(dir, {.layers = {2, 5}, .verify_sha256 = true});
    EXPECT_NE(err.find("layers/blk.3.gguf (layer) holds tensor 'blk.1."), std::string::npos) << err;
    fs::remove_all(dir);
  }
  // A hostile manifest in the directory.
  {
    std::string dir = partial_dir(model, 2, 5, "hostile");
    std::string text = to_json(read_manifest(dir));
    text.replace(text.find("layers/blk.3.gguf"), 17, "../../etc/passwd");
    std::ofstream(fs::path(dir) / kPackageManifestName) << text;
    std::string err = load_error(dir, {.layers = {2, 5}});
    EXPECT_NE(err.find("manifest.json"), std::string::npos) << err;
    EXPECT_NE(err.find("path"), std::string::npos) << err;
    fs::remove_all(dir);
  }
}

TEST(PackageWriter, RefusesNonModelsAndRewritesCleanly) {
  fs::path dir = scratch("rewrite");
  EXPECT_THROW(write_package("/nonexistent.gguf", dir.string()), std::runtime_error);
  EXPECT_FALSE(fs::exists(dir / kPackageManifestName));
  write_package(test::model_path("stories260K-q4_0.gguf"), dir.string());
  PackageManifest m = write_package(test::model_path("stories260K-q4_0.gguf"), dir.string(), {}, "custom-id");
  EXPECT_EQ(read_manifest(dir.string()).model_id, "custom-id");
  EXPECT_EQ(m.model_id, "custom-id");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmesh
