// fetch_package: a real layer package (stories260K-f32) served by a local HTTP server that records
// the paths asked for; a layer range fetches only its artifacts, the whole package loads into a
// model equal to the GGUF file, wrong bytes are named, the cache answers a second fetch, and a
// restart without the server uses the cached manifest.
#include "fetch/package_fetch.h"

#include <httplib.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "fetch_fixture.h"
#include "model/forward.h"
#include "package/package_model.h"
#include "package/package_writer.h"
#include "sampling/sampler.h"
#include "test_paths.h"

namespace llmesh::mesh {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

using test::PackageServer;


const std::string kModel = "stories260K-f32.gguf";

// The package of kModel, written once per test binary run.
const fs::path& package_dir() {
  static TempDir dir;
  static bool written = false;
  if (!written) {
    write_package(llmesh::test::model_path(kModel), (dir.path / "pkg").string());
    written = true;
  }
  static fs::path p = dir.path / "pkg";
  return p;
}

PackageFetchOptions quiet_options(const fs::path& cache, std::vector<std::string>* warnings = nullptr) {
  PackageFetchOptions o;
  o.cache_root = cache;
  o.warn = [warnings](const std::string& w) {
    if (warnings) warnings->push_back(w);
  };
  o.cache_options.retry_delay = std::chrono::milliseconds(1);
  return o;
}

std::set<std::string> dir_files(const fs::path& dir) {
  std::set<std::string> s;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && !e.path().string().ends_with(".sha256"))  // the cache's markers
      s.insert(fs::relative(e.path(), dir).generic_string());
  return s;
}

std::vector<int32_t> greedy(Model& model, std::vector<int32_t> prompt, int n) {
  KvCacheOptions kv;
  kv.n_ctx = 64;
  KvCache cache(model.config(), model.first_layer(), model.last_layer(), kv);
  ThreadPool pool(2);
  Forward fwd(model, cache, pool);
  Batch b;
  for (size_t i = 0; i < prompt.size(); ++i) b.add(prompt[i], static_cast<int>(i), 0, i + 1 == prompt.size());
  auto logits = fwd.run(b);
  int pos = static_cast<int>(prompt.size());
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    int32_t tok = argmax(logits.data(), model.config().n_vocab);
    out.push_back(tok);
    Batch next;
    next.add(tok, pos++, 0, true);
    logits = fwd.run(next);
  }
  return out;
}

TEST(PackageFetch, ALayerRangeFetchesOnlyItsArtifacts) {
  PackageServer server(package_dir());
  TempDir cache;
  // A middle stage: the metadata and its two layers, nothing else.
  FetchedPackage p = fetch_package(server.url(), {2, 4}, quiet_options(cache.path));
  EXPECT_EQ(server.take_requested(),
            (std::set<std::string>{"manifest.json", "metadata.gguf", "layers/blk.2.gguf", "layers/blk.3.gguf"}));
  EXPECT_EQ(dir_files(p.dir),
            (std::set<std::string>{"manifest.json", "metadata.gguf", "layers/blk.2.gguf", "layers/blk.3.gguf"}));
  ASSERT_EQ(p.artifacts.size(), 3u);
  EXPECT_EQ(p.manifest.n_layer, 5);
  EXPECT_EQ(p.dir, cache.path / p.manifest.source_sha256);
  EXPECT_FALSE(p.offline);
  uint64_t want = 0;
  for (const Artifact& a : p.artifacts) want += a.bytes;
  EXPECT_EQ(p.bytes_fetched, want);
  EXPECT_EQ(p.bytes_cached, 0u);
  EXPECT_EQ(test::read_all(p.dir / "manifest.json"), server.files["manifest.json"]);
  // The cache directory is a package directory holding what the stage loads.
  auto stage = load_package_model(p.dir.string(), {{2, 4}, true});
  EXPECT_EQ(stage->first_layer(), 2);
  EXPECT_EQ(stage->last_layer(), 4);

  // The last stage adds output.gguf (the model has its own head), still no embeddings; the
  // layers already there come from the cache.
  p = fetch_package(server.url(), {2, 5}, quiet_options(cache.path));
  EXPECT_EQ(server.take_requested(),
            (std::set<std::string>{"manifest.json", "layers/blk.4.gguf", "output.gguf"}));
  EXPECT_EQ(p.bytes_cached, p.manifest.find("metadata")->bytes + p.manifest.find("layer", 2)->bytes +
                                p.manifest.find("layer", 3)->bytes);
  EXPECT_FALSE(fs::exists(p.dir / "embeddings.gguf"));

  EXPECT_THROW(fetch_package(server.url(), {4, 2}, quiet_options(cache.path)), std::invalid_argument);
  EXPECT_THROW(fetch_package(server.url(), {0, 6}, quiet_options(cache.path)), std::invalid_argument);
}

TEST(PackageFetch, WholeModelRunsLikeTheGgufAndASecondFetchIsFromTheCache) {
  PackageServer server(package_dir());
  TempDir cache;
  int progress_calls = 0;
  PackageFetchOptions o = quiet_options(cache.path);
  o.progress = [&](const FetchProgress& p) {
    ++progress_calls;
    EXPECT_FALSE(p.from_cache) << p.path;
  };
  FetchedPackage p = fetch_package(server.url(), {}, o);
  EXPECT_EQ(p.artifacts.size(), 8u);
  EXPECT_EQ(p.bytes_fetched, p.manifest.total_bytes());
  EXPECT_GE(progress_calls, 16);
  EXPECT_EQ(server.take_requested().size(), 9u);

  auto from_package = load_package_model(p.dir.string());
  auto from_gguf = Model::load(llmesh::test::model_path(kModel));
  std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  auto want = greedy(*from_gguf, prompt, 12);
  EXPECT_EQ(greedy(*from_package, prompt, 12), want);

  // Again: only the manifest crosses the network.
  o.progress = [&](const FetchProgress& p) { EXPECT_TRUE(p.from_cache) << p.path; };
  o.verify = true;  // hashes every file again; all still match
  p = fetch_package(server.url(), {}, o);
  EXPECT_EQ(server.take_requested(), (std::set<std::string>{"manifest.json"}));
  EXPECT_EQ(p.bytes_fetched, 0u);
  EXPECT_EQ(p.bytes_cached, p.manifest.total_bytes());
  EXPECT_EQ(p.manifest_bytes, server.files["manifest.json"].size());

  // The same package from a directory source lands in the same cache directory.
  FetchedPackage d = fetch_package(package_dir().string(), {}, quiet_options(cache.path));
  EXPECT_EQ(d.dir, p.dir);
  EXPECT_EQ(d.bytes_fetched, 0u);
}

TEST(PackageFetch, WrongBytesAreNamed) {
  PackageServer server(package_dir());
  TempDir cache;
  std::string& blk = server.files["layers/blk.3.gguf"];
  blk[blk.size() / 2] ^= 0x5a;  // same size, wrong sha256
  try {
    fetch_package(server.url(), {3, 4}, quiet_options(cache.path));
    FAIL() << "no error";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("layers/blk.3.gguf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(cache.path / read_manifest(package_dir().string()).source_sha256 / "layers/blk.3.gguf"));

  // A truncated artifact, too.
  blk = test::read_all(package_dir() / "layers/blk.3.gguf");
  blk.resize(blk.size() - 10);
  try {
    fetch_package(server.url(), {3, 4}, quiet_options(cache.path));
    FAIL() << "no error";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("layers/blk.3.gguf"), std::string::npos) << e.what();
  }
}

TEST(PackageFetch, BadOrMissingManifest) {
  PackageServer server(package_dir());
  TempDir cache;
  server.files["manifest.json"] = "{\"format_version\": 1}";
  try {
    fetch_package(server.url(), {}, quiet_options(cache.path));
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.json from " + server.url()), std::string::npos) << e.what();
  }
  server.files["manifest.json"] = std::string(package_limits::kMaxManifestBytes + 1, ' ');
  try {
    fetch_package(server.url(), {}, quiet_options(cache.path));
    FAIL() << "no error";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("larger than"), std::string::npos) << e.what();
  }
  server.files.erase("manifest.json");
  try {
    fetch_package(server.url(), {}, quiet_options(cache.path));
    FAIL() << "no error";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read the package manifest"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("404"), std::string::npos) << e.what();
  }
}

TEST(PackageFetch, OfflineRestartUsesTheCachedManifest) {
  TempDir cache;
  std::string url;
  FetchedPackage online;
  {
    PackageServer server(package_dir());
    url = server.url();
    online = fetch_package(url, {0, 2}, quiet_options(cache.path));
  }
  // The server is gone: the cached manifest and artifacts serve the same range, with a warning.
  std::vector<std::string> warnings;
  FetchedPackage p = fetch_package(url, {0, 2}, quiet_options(cache.path, &warnings));
  EXPECT_TRUE(p.offline);
  EXPECT_EQ(p.dir, online.dir);
  EXPECT_EQ(p.bytes_fetched, 0u);
  EXPECT_EQ(p.bytes_cached, online.bytes_fetched);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("using the manifest cached at"), std::string::npos) << warnings[0];
  EXPECT_NE(load_package_model(p.dir.string(), {{0, 2}, true}), nullptr);

  // A range with artifacts that were never fetched cannot be served offline.
  try {
    fetch_package(url, {0, 3}, quiet_options(cache.path));
    FAIL() << "no error";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("layers/blk.2.gguf is not in the cache"), std::string::npos) << e.what();
  }
  // Nothing cached for that source at all.
  TempDir empty;
  try {
    fetch_package(url, {0, 2}, quiet_options(empty.path));
    FAIL() << "no error";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read the package manifest from " + url), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace llmesh::mesh
