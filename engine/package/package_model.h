// Loads a Model for a layer range from a layer package directory (docs/layer-packages.md).
// Only the artifacts the range needs must be present; each is checked against the manifest
// (size always, SHA-256 when asked) before any of it is used.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "package/manifest.h"

namespace llmesh {

struct PackageLoadOptions {
  LayerRange layers;            // last = -1: through the last layer
  bool verify_sha256 = false;   // hash every needed file (reads it all) before use
  // A mixture-of-experts shard (docs/moe.md): per absolute layer, the experts to load (as
  // ModelOptions::experts). Empty: every expert. Only these experts' artifacts are needed,
  // checked and mapped (needed_for(first, last, experts)).
  std::vector<std::vector<int>> experts = {};
};

// Throws std::runtime_error naming the package directory and the artifact file that is missing,
// truncated, corrupted (size or SHA-256 mismatch) or inconsistent with the manifest.
std::unique_ptr<Model> load_package_model(const std::string& dir, const PackageLoadOptions& opt = {});
// The same with a manifest already read (e.g. to list needed_for() first).
std::unique_ptr<Model> load_package_model(const std::string& dir, const PackageManifest& manifest,
                                          const PackageLoadOptions& opt);

}  // namespace llmesh
