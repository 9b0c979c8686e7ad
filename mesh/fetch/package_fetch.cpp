#include "fetch/package_fetch.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "log/event_log.h"

namespace llmesh::mesh {

namespace fs = std::filesystem;

namespace {

// The spec as a key for the offline copy of its manifest: URLs with a trailing '/', directories
// absolute and normalized without one.
std::string normalized_spec(const std::string& spec) {
  if (is_url(spec)) return spec.ends_with('/') ? spec : spec + "/";
  std::string p = fs::absolute(fs::path(spec)).lexically_normal().string();
  while (p.size() > 1 && p.ends_with('/')) p.pop_back();
  return p;
}

void write_atomically(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  fs::path tmp = file;
  tmp += ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) throw FetchError("cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw FetchError("cannot write " + file.string());
  }
}

std::string read_bounded(const fs::path& file) {
  std::error_code ec;
  auto size = fs::file_size(file, ec);
  if (ec) throw FetchError("cannot read " + file.string() + ": " + ec.message());
  if (size > package_limits::kMaxManifestBytes)
    throw FetchError(fmt::format("{} is larger than {} bytes", file.string(), package_limits::kMaxManifestBytes));
  std::ifstream in(file, std::ios::binary);
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (!in) throw FetchError("cannot read " + file.string());
  return text;
}

// Thrown by the manifest sink: a manifest over the bound is an error, never a reason to fall
// back to the cached one.
struct ManifestTooLarge : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

bool is_url(const std::string& spec) {
  return spec.starts_with("http://") || spec.starts_with("https://");
}

namespace {

// Both fetch_package forms: `get_source` makes (or hands over) the source; a FetchError from it
// counts as an unreachable source, like one reading manifest.json.
FetchedPackage fetch_package_impl(const std::string& source_spec, const std::function<ArtifactSource&()>& get_source,
                                  bool fetch_missing_offline, LayerRange layers, const PackageFetchOptions& options) {
  auto warn = [&](const std::string& msg) {
    if (options.warn) options.warn(msg);
    else logs::emit(logs::from_line("fetch", "llmesh: warning: " + msg));
  };
  const fs::path root =
      fs::absolute(options.cache_root.empty() ? default_cache_root() : options.cache_root).lexically_normal();
  const std::string key = sha256_hex(normalized_spec(source_spec));
  // The manifest last fetched from this spec, for restarts while the source is unreachable.
  const fs::path index = root / "sources" / key / kPackageManifestName;

  FetchedPackage out;
  out.source = source_spec;
  ArtifactSource* source = nullptr;
  std::string text, fetch_error;
  try {
    source = &get_source();
    out.source = source->describe();
    source->read(kPackageManifestName, 0, package_limits::kMaxManifestBytes,
                 [&](const char* data, size_t n) {
                   if (text.size() + n > package_limits::kMaxManifestBytes)
                     throw ManifestTooLarge(fmt::format("{} from {} is larger than {} bytes", kPackageManifestName,
                                                        out.source, package_limits::kMaxManifestBytes));
                   text.append(data, n);
                 });
  } catch (const FetchError& e) {
    fetch_error = e.what();
  } catch (const ManifestTooLarge& e) {
    throw FetchError(e.what());
  }
  if (!fetch_error.empty()) {
    if (!fs::exists(index))
      throw FetchError(fmt::format("cannot read the package manifest from {}: {}", source_spec, fetch_error));
    text = read_bounded(index);
    out.offline = true;
  }

  try {
    out.manifest = parse_manifest(text);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("{} from {}: {}", kPackageManifestName,
                                         out.offline ? index.string() : out.source, e.what()));
  }
  for (const Artifact& a : out.manifest.artifacts)
    if (a.path == kPackageManifestName)
      throw std::runtime_error(fmt::format("{} from {}: an artifact may not be named {}", kPackageManifestName,
                                           out.offline ? index.string() : out.source, kPackageManifestName));
  out.manifest_bytes = text.size();
  const std::vector<const Artifact*> needed = out.manifest.needed_for(layers.first, layers.last, options.experts);

  const std::string ns = out.manifest.source_sha256.empty() ? "source-" + key : out.manifest.source_sha256;
  ArtifactCache cache(ns, root, options.cache_options);
  out.dir = cache.directory();
  std::vector<ArtifactRef> refs;
  for (const Artifact* a : needed) {
    out.artifacts.push_back(*a);
    refs.push_back({a->path, a->bytes, a->sha256});
  }

  // Bytes transferred: a download's first report says where it starts (a resumed .part).
  std::map<std::string, uint64_t> start;
  ProgressFn count = [&](const FetchProgress& p) {
    if (p.from_cache) {
      out.bytes_cached += p.total_bytes;
    } else {
      auto it = start.try_emplace(p.path, p.done_bytes).first;
      if (p.finished) out.bytes_fetched += p.total_bytes - std::min(it->second, p.total_bytes);
    }
    if (options.progress) options.progress(p);
  };
  if (out.offline) {
    // The cached manifest's artifacts that are missing: a caller's source may still have them
    // (mesh peers while the origin is down); make_source's never does.
    std::vector<bool> have(refs.size());
    bool all = true;
    for (size_t i = 0; i < refs.size(); ++i) {
      have[i] = cache.is_cached(refs[i]);
      all = all && have[i];
    }
    if (!all && !(fetch_missing_offline && source))
      for (size_t i = 0; i < refs.size(); ++i)
        if (!have[i])
          throw FetchError(fmt::format("cannot read the package manifest from {} ({}), and {} is not in the cache {}",
                                       source_spec, fetch_error, refs[i].path, out.dir.string()));
    warn(fmt::format("cannot reach {} ({}); using the manifest cached at {} (reason source_unreachable)", source_spec,
                     fetch_error, index.string()));
    if (!all) source->expect(refs);
    for (size_t i = 0; i < refs.size(); ++i) {
      const ArtifactRef& r = refs[i];
      if (!have[i]) {
        try {
          cache.ensure(r, *source, count);
        } catch (const FetchError& e) {
          throw FetchError(fmt::format("{} is not in the cache {} and the manifest's source {} cannot be reached: {}",
                                       r.path, out.dir.string(), source_spec, e.what()),
                           e.transient());
        }
        continue;
      }
      out.bytes_cached += r.bytes;
      if (options.progress) {
        FetchProgress p;
        p.path = r.path;
        p.done_bytes = p.total_bytes = r.bytes;
        p.from_cache = p.finished = true;
        options.progress(p);
      }
    }
  } else {
    source->expect(refs);
    for (const ArtifactRef& r : refs) {
      start.erase(r.path);
      fs::path local = cache.ensure(r, *source, count);
      if (options.verify && sha256_file(local) != r.sha256) {
        warn(fmt::format("{} in the cache no longer matches its sha256; fetching it again (reason cache_corrupt)", r.path));
        std::error_code ec;
        fs::remove(local, ec);
        fs::path marker = local;
        marker += ".sha256";
        fs::remove(marker, ec);
        start.erase(r.path);
        local = cache.ensure(r, *source, count);
        if (sha256_file(local) != r.sha256)
          throw FetchError(fmt::format("{}: sha256 does not match the manifest after fetching it again", r.path));
      }
    }
    write_atomically(index, text);
  }
  if (out.offline && options.verify)
    for (const ArtifactRef& r : refs)
      if (sha256_file(cache.local_path(r)) != r.sha256)
        throw FetchError(fmt::format("{} in the cache {} does not match its sha256, and {} cannot be reached",
                                     r.path, out.dir.string(), source_spec));
  write_atomically(out.dir / kPackageManifestName, text);
  return out;
}

}  // namespace

FetchedPackage fetch_package(const std::string& source_spec, LayerRange layers,
                             const PackageFetchOptions& options) {
  std::unique_ptr<ArtifactSource> source;
  return fetch_package_impl(
      source_spec,
      [&]() -> ArtifactSource& {
        source = make_source(source_spec);
        return *source;
      },
      false, layers, options);
}

FetchedPackage fetch_package(ArtifactSource& source, const std::string& source_spec, LayerRange layers,
                             const PackageFetchOptions& options) {
  return fetch_package_impl(
      source_spec, [&]() -> ArtifactSource& { return source; }, true, layers, options);
}

}  // namespace llmesh::mesh
