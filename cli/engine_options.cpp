#include "cli/engine_options.h"

#include <chrono>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

#include "fetch/gguf_ranges.h"
#include "fetch/package_fetch.h"
#include "package/package_model.h"

namespace llmesh::cli {

void add_engine_options(CLI::App* sub, EngineOptions& o) {
  sub->add_option("-m,--model", o.model,
                  "GGUF model file, a layer package directory (llmesh package), the http(s):// base URL "
                  "of a layer package, or the http(s):// URL of a .gguf file (fetched into the cache)")
      ->required()
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            if (mesh::is_url(s)) return {};
            return CLI::ExistingPath(s);
          },
          "PATH or URL"));
  sub->add_option("--fetch-cache", o.fetch_cache,
                  "Cache directory for a package fetched from a URL (default: $LLMESH_CACHE, "
                  "$XDG_CACHE_HOME/llmesh or ~/.cache/llmesh)");
  sub->add_option("-t,--threads", o.threads, "Threads (0: all hardware threads)")->capture_default_str();
  sub->add_option("-c,--ctx", o.ctx, "Context length (0: min(4096, the model's))")->capture_default_str();
  sub->add_option("-b,--batch", o.batch, "Prompt tokens per forward pass")
      ->check(CLI::Range(1, 1 << 16))->capture_default_str();
  sub->add_option("--kv-type", o.kv_type, "KV cache element type")
      ->check(CLI::IsMember({"f16", "f32"}))->capture_default_str();
}

LoadedEngine load_engine(const EngineOptions& o, int n_seq) {
  auto t0 = std::chrono::steady_clock::now();
  LoadedEngine e;
  // Every layer; with o.experts only those experts of each layer are read, fetched or mapped.
  ModelOptions mo;
  mo.experts = o.experts;
  PackageLoadOptions po;
  po.experts = o.experts;
  if (mesh::is_gguf_url(o.model)) {
    mesh::PackageFetchOptions fo;
    fo.cache_root = o.fetch_cache;
    fo.progress = mesh::stderr_progress();
    fo.experts = o.experts;  // an expert shard: only the trunk and these experts' bytes travel
    mesh::FetchedGguf g = mesh::fetch_gguf_layers(o.model, {}, fo);
    e.model = Model::load(g.path.string(), mo);
  } else if (mesh::is_url(o.model)) {
    mesh::PackageFetchOptions fo;
    fo.cache_root = o.fetch_cache;
    fo.progress = mesh::stderr_progress();
    fo.experts = o.experts;  // an expert shard: only these experts' artifacts are fetched
    mesh::FetchedPackage p = mesh::fetch_package(o.model, {}, fo);
    fmt::print(stderr, "llmesh: {}: {} fetched, {} from the cache in {}\n", p.manifest.model_id,
               mesh::human_bytes(static_cast<double>(p.bytes_fetched)),
               mesh::human_bytes(static_cast<double>(p.bytes_cached)), p.dir.string());
    e.model = load_package_model(p.dir.string(), p.manifest, po);
    e.model_id = p.manifest.model_id;
  } else if (std::filesystem::is_directory(o.model)) {
    if (!is_package_dir(o.model))
      throw std::runtime_error(o.model + " is a directory without a manifest.json (not a layer package)");
    e.model = load_package_model(o.model, po);  // every layer: the whole model (or its expert shard)
    e.model_id = read_manifest(o.model).model_id;
  } else {
    e.model = Model::load(o.model, mo);
  }
  const ModelConfig& c = e.model->config();
  KvCacheOptions kv;
  kv.n_ctx = o.ctx > 0 ? o.ctx : std::min(4096, c.n_ctx_train);
  kv.n_seq = n_seq;
  kv.type = o.kv_type == "f32" ? DType::F32 : DType::F16;
  e.cache = std::make_unique<KvCache>(c, e.model->first_layer(), e.model->last_layer(), kv);
  e.pool = std::make_unique<ThreadPool>(o.threads);
  e.forward = std::make_unique<Forward>(*e.model, *e.cache, *e.pool);
  e.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return e;
}

}  // namespace llmesh::cli
