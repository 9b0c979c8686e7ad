// llmesh package MODEL.gguf OUT_DIR: split a model into a layer package (docs/layer-packages.md).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "package/package_writer.h"

namespace llmesh::cli {
namespace {

struct PackageOptions {
  std::string model, out_dir, model_id;
  bool json = false, quiet = false;
};

int run_package(const PackageOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  auto progress = [&](const PackageProgress& p) {
    if (o.quiet) return;
    std::fprintf(stderr, "[%d/%d] %-24s %12llu bytes  sha256 %.16s...\n", p.index, p.total,
                 p.artifact->path.c_str(), static_cast<unsigned long long>(p.artifact->bytes),
                 p.artifact->sha256.c_str());
  };
  PackageManifest m = write_package(o.model, o.out_dir, progress, o.model_id);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string manifest = (std::filesystem::path(o.out_dir) / kPackageManifestName).string();
  if (o.json) {
    nlohmann::ordered_json j;
    j["manifest"] = manifest;
    j["model_id"] = m.model_id;
    j["architecture"] = m.architecture;
    j["n_layer"] = m.n_layer;
    j["artifacts"] = m.artifacts.size();
    j["total_bytes"] = m.total_bytes();
    j["source_bytes"] = m.source_bytes;
    j["source_sha256"] = m.source_sha256;
    j["tied_embeddings"] = m.tied_embeddings;
    j["seconds"] = seconds;
    std::printf("%s\n", j.dump().c_str());
  } else if (!o.quiet) {
    std::fprintf(stderr, "%s: %zu artifacts, %llu bytes (source %llu bytes) in %.2f s\n", manifest.c_str(),
                 m.artifacts.size(), static_cast<unsigned long long>(m.total_bytes()),
                 static_cast<unsigned long long>(m.source_bytes), seconds);
  }
  return 0;
}

}  // namespace

Runner add_package(CLI::App& app) {
  auto o = std::make_shared<PackageOptions>();
  auto* sub = app.add_subcommand(
      "package", "Split a GGUF model into per-layer files with a hashed manifest (a layer package)");
  sub->add_option("model", o->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  sub->add_option("out_dir", o->out_dir, "Output directory (created; its manifest.json is replaced)")->required();
  sub->add_option("--model-id", o->model_id, "Model id in the manifest (default: the file name without .gguf)");
  sub->add_flag("--json", o->json, "Print one JSON object (manifest path and summary) on stdout");
  sub->add_flag("-q,--quiet", o->quiet, "No progress on stderr");
  return [o] { return run_package(*o); };
}

}  // namespace llmesh::cli
