// llmesh fetch SOURCE [--layers A..B]: fetch exactly the artifacts of a layer package a stage
// running those layers needs into the artifact cache (docs/layer-packages.md, "Fetching a package"),
// or, for the URL of a plain GGUF, the byte ranges of those layers (docs/fetching.md).
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "fetch/gguf_ranges.h"
#include "fetch/package_fetch.h"

namespace llmesh::cli {
namespace {

struct FetchCliOptions {
  std::string source, layers, cache;
  bool json = false, quiet = false, verify = false;
};

// "A..B": layers [A, B); "A..": A through the last layer; "" : all.
LayerRange parse_layers(const std::string& s) {
  LayerRange r;
  if (s.empty()) return r;
  auto dots = s.find("..");
  auto number = [&](const std::string& t) {
    if (t.empty() || t.size() > 6 || t.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("--layers " + s + ": expected A..B (layers A to B-1) or A.. (A to the last)");
    return std::stoi(t);
  };
  if (dots == std::string::npos) number("");
  r.first = number(s.substr(0, dots));
  std::string last = s.substr(dots + 2);
  r.last = last.empty() ? -1 : number(last);
  return r;
}

int run_fetch(const FetchCliOptions& o) {
  mesh::PackageFetchOptions fo;
  fo.cache_root = o.cache;
  fo.verify = o.verify;
  if (!o.quiet) fo.progress = mesh::stderr_progress();
  if (o.quiet) fo.warn = [](const std::string&) {};
  LayerRange range = parse_layers(o.layers);
  if (mesh::is_gguf_url(o.source)) {
    // A plain GGUF: the header and the layers' byte ranges into a sparse local copy.
    mesh::FetchedGguf g = mesh::fetch_gguf_layers(o.source, range, fo);
    const int last = range.last < 0 ? g.n_layer : range.last;
    if (o.json) {
      nlohmann::ordered_json j;
      j["file"] = g.path.string();
      j["n_layer"] = g.n_layer;
      j["layers"] = {range.first, last};
      j["file_bytes"] = g.file_bytes;
      j["header_bytes"] = g.header_bytes;
      j["bytes_fetched"] = g.bytes_fetched;
      j["bytes_cached"] = g.bytes_cached;
      std::printf("%s\n", j.dump().c_str());
    } else {
      if (!o.quiet)
        std::fprintf(stderr, "%s: layers %d..%d of %d by byte ranges: %s fetched, %s from the cache (file %s)\n",
                     o.source.c_str(), range.first, last, g.n_layer,
                     mesh::human_bytes(static_cast<double>(g.bytes_fetched)).c_str(),
                     mesh::human_bytes(static_cast<double>(g.bytes_cached)).c_str(),
                     mesh::human_bytes(static_cast<double>(g.file_bytes)).c_str());
      std::printf("%s\n", g.path.string().c_str());
    }
    return 0;
  }
  mesh::FetchedPackage p = mesh::fetch_package(o.source, range, fo);
  const int first = range.first;
  const int last = range.last < 0 ? p.manifest.n_layer : range.last;
  if (o.json) {
    nlohmann::ordered_json j;
    j["dir"] = p.dir.string();
    j["manifest"] = (p.dir / kPackageManifestName).string();
    j["model_id"] = p.manifest.model_id;
    j["n_layer"] = p.manifest.n_layer;
    j["layers"] = {first, last};
    j["artifacts"] = nlohmann::json::array();
    for (const Artifact& a : p.artifacts)
      j["artifacts"].push_back({{"path", a.path}, {"bytes", a.bytes}, {"file", (p.dir / a.path).string()}});
    j["bytes_fetched"] = p.bytes_fetched;
    j["bytes_cached"] = p.bytes_cached;
    j["offline"] = p.offline;
    std::printf("%s\n", j.dump().c_str());
  } else {
    if (!o.quiet)
      std::fprintf(stderr, "%s: layers %d..%d of %d, %zu artifacts: %s fetched, %s from the cache%s\n",
                   p.manifest.model_id.c_str(), first, last, p.manifest.n_layer, p.artifacts.size(),
                   mesh::human_bytes(static_cast<double>(p.bytes_fetched)).c_str(),
                   mesh::human_bytes(static_cast<double>(p.bytes_cached)).c_str(),
                   p.offline ? " (offline: cached manifest)" : "");
    std::printf("%s\n", p.dir.string().c_str());
  }
  return 0;
}

}  // namespace

Runner add_fetch(CLI::App& app) {
  auto o = std::make_shared<FetchCliOptions>();
  auto* sub = app.add_subcommand(
      "fetch", "Fetch what a layer range needs (a layer package's artifacts, or a GGUF's byte ranges) into the local cache");
  sub->add_option("source", o->source,
                  "The package: an http(s):// base URL (the directory holding manifest.json) or a local directory; "
                  "or the http(s):// URL of a plain .gguf file (read by byte ranges)")
      ->required();
  sub->add_option("--layers", o->layers,
                  "Layers A..B (A to B-1) or A.. (A to the last); default: all (the whole model)");
  sub->add_option("--cache", o->cache,
                  "Cache directory (default: $LLMESH_CACHE, $XDG_CACHE_HOME/llmesh or ~/.cache/llmesh)");
  sub->add_flag("--verify", o->verify, "Hash every needed artifact again, even ones the cache already verified");
  sub->add_flag("--json", o->json, "Print one JSON object (dir, artifacts, bytes fetched / cached) on stdout");
  sub->add_flag("-q,--quiet", o->quiet, "No progress or warnings on stderr");
  return [o] { return run_fetch(*o); };
}

}  // namespace llmesh::cli
