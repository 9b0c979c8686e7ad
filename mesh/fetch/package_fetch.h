// Fetching a layer package (docs/layer-packages.md, "Fetching a package"): reads manifest.json
// from a source (an http(s) base URL or a directory), picks the artifacts a layer range needs
// (PackageManifest::needed_for) and makes exactly those present and verified in the artifact
// cache (artifact_cache.h), next to a copy of the manifest, so the cache directory is a package
// directory load_package_model reads.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "fetch/artifact_cache.h"
#include "fetch/fetch_progress.h"
#include "model/model.h"
#include "package/manifest.h"

namespace llmesh::mesh {

struct PackageFetchOptions {
  // Empty: default_cache_root().
  std::filesystem::path cache_root;
  // Per-artifact progress (stderr_progress() prints it); also called for cached artifacts.
  ProgressFn progress;
  // Hash every needed artifact again after it is in the cache, even one the cache trusts by its
  // marker; a file that no longer matches is removed and fetched again.
  bool verify = false;
  // Warnings (e.g. "source unreachable, using the cached manifest"); empty: printed on stderr.
  std::function<void(const std::string&)> warn;
  ArtifactCacheOptions cache_options;
  // A mixture-of-experts shard (docs/moe.md): per absolute layer, the experts this node holds.
  // Empty: every expert. fetch_package fetches only those expert artifacts
  // (PackageManifest::needed_for(first, last, experts)); fetch_gguf_layers only those experts'
  // byte ranges. A later fetch with other experts transfers only what is still missing.
  std::vector<std::vector<int>> experts = {};
};
using FetchOptions = PackageFetchOptions;

struct FetchedPackage {
  std::filesystem::path dir;          // the cache directory: manifest.json + the needed artifacts
  PackageManifest manifest;
  std::vector<Artifact> artifacts;    // the artifacts fetched for the range (and experts), in needed_for order
  uint64_t bytes_fetched = 0;         // artifact bytes transferred from the source this time
  uint64_t bytes_cached = 0;          // artifact bytes already in the cache
  uint64_t manifest_bytes = 0;        // size of manifest.json (fetched fresh unless offline)
  bool offline = false;               // the source was unreachable: the cached manifest was used
  std::string source;                 // the source as described in messages
};

// Fetches the artifacts a stage running `layers` ([first, last), last = -1: through the last
// layer) needs from `source_spec` (make_source: "http://...", "https://..." or a directory
// holding the package). The cache namespace is the manifest's source_sha256 (or a hash of the
// source spec when empty). The manifest is read fresh each time (at most
// package_limits::kMaxManifestBytes) and kept in the cache: when the source cannot be reached
// (any FetchError reading manifest.json) and a manifest fetched earlier from the same spec is
// cached together with every artifact the range needs, that one is used, with a warning.
// Throws FetchError naming the source or the artifact (unreachable, 404, wrong size or sha256),
// std::runtime_error for a manifest that does not parse, std::invalid_argument for a bad range.
FetchedPackage fetch_package(const std::string& source_spec, LayerRange layers = {},
                             const PackageFetchOptions& options = {});

// The same with a source the caller made, e.g. a FallbackSource of mesh peers and the origin
// (peer_artifacts.h). `source_spec` names the origin as the first form takes it (a URL or a
// directory); it is only a key here: for the copy of the manifest kept for offline restarts
// (shared with the first form) and the cache namespace when the manifest has no source_sha256.
// manifest.json is read through `source`; before the artifacts, `source.expect()` gets the
// range's refs. When manifest.json cannot be read (the origin is down) the cached manifest is
// used as above, and, unlike the first form, artifacts it lists that are not cached are still
// fetched through `source` (mesh peers may hold them). Errors as above, naming
// source.describe().
FetchedPackage fetch_package(ArtifactSource& source, const std::string& source_spec, LayerRange layers = {},
                             const PackageFetchOptions& options = {});

// True for "http://..." and "https://..." (what fetch_package reads over the network).
bool is_url(const std::string& spec);

}  // namespace llmesh::mesh
