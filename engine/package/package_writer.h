// Splits a GGUF model into a layer package (docs/layer-packages.md): metadata.gguf,
// embeddings.gguf, output.gguf and layers/blk.N.gguf, tensors byte-identical to the source,
// then manifest.json (written last, atomically) with every file's size and SHA-256.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "package/manifest.h"

namespace llmesh {

struct PackageProgress {
  const Artifact* artifact = nullptr;  // the artifact just written (path, bytes, sha256)
  int index = 0;                       // 1-based
  int total = 0;                       // artifacts in the package
};
using PackageProgressFn = std::function<void(const PackageProgress&)>;

// Writes the package of `gguf_path` into `out_dir` (created when missing; an existing
// manifest.json there is removed first, so a failed run never leaves a manifest that points at
// half-written files). Returns the manifest it wrote to out_dir/manifest.json. `model_id`
// defaults to the file name without ".gguf". Throws std::runtime_error (GgufError for a bad
// source) naming the file.
PackageManifest write_package(const std::string& gguf_path, const std::string& out_dir,
                              const PackageProgressFn& progress = {}, const std::string& model_id = {});

}  // namespace llmesh
