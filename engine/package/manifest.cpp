#include "package/manifest.h"

#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace llmesh {
namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw std::runtime_error(fmt::format("package manifest: field '{}' {}", field, what));
}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

const Json& member(const Json& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) bad(where + key, "is missing");
  return *it;
}

int64_t int_field(const Json& obj, const std::string& key, int64_t lo, int64_t hi,
                  const std::string& where = "") {
  const Json& v = member(obj, key, where);
  if (!v.is_number_integer()) bad(where + key, fmt::format("must be an integer, got {}", v.type_name()));
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi) || static_cast<int64_t>(u) < lo)
      bad(where + key, fmt::format("= {} is out of range [{}, {}]", u, lo, hi));
    return static_cast<int64_t>(u);
  }
  int64_t i = v.get<int64_t>();
  if (i < lo || i > hi) bad(where + key, fmt::format("= {} is out of range [{}, {}]", i, lo, hi));
  return i;
}

uint64_t uint_field(const Json& obj, const std::string& key, uint64_t lo, uint64_t hi,
                    const std::string& where = "") {
  const Json& v = member(obj, key, where);
  if (!v.is_number_integer()) bad(where + key, fmt::format("must be an integer, got {}", v.type_name()));
  if (!v.is_number_unsigned()) bad(where + key, fmt::format("= {} must not be negative", v.get<int64_t>()));
  uint64_t u = v.get<uint64_t>();
  if (u < lo || u > hi) bad(where + key, fmt::format("= {} is out of range [{}, {}]", u, lo, hi));
  return u;
}

std::string string_field(const Json& obj, const std::string& key, size_t max_bytes,
                         const std::string& where = "") {
  const Json& v = member(obj, key, where);
  if (!v.is_string()) bad(where + key, fmt::format("must be a string, got {}", v.type_name()));
  std::string s = v.get<std::string>();
  if (s.empty() || s.size() > max_bytes)
    bad(where + key, fmt::format("must be 1..{} bytes, got {}", max_bytes, s.size()));
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) bad(where + key, "contains a control character");
  return s;
}

void only_keys(const Json& obj, std::initializer_list<const char*> keys, const std::string& where) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool known = false;
    for (const char* k : keys) known = known || it.key() == k;
    if (!known) bad(where + it.key(), "is not a known field");
  }
}

}  // namespace

bool is_safe_relative_path(std::string_view path) {
  if (path.empty() || path.size() > package_limits::kMaxPathBytes || path.front() == '/') return false;
  size_t components = 0, start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view c = path.substr(start, end - start);
    if (c.empty() || c == "." || c == "..") return false;
    for (char ch : c)
      if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '.' || ch == '_' || ch == '-'))
        return false;
    if (++components > package_limits::kMaxPathComponents) return false;
    start = end + 1;
  }
  return true;
}

std::vector<const Artifact*> PackageManifest::needed_for(int first, int last) const {
  return needed_for(first, last, {});
}

std::vector<const Artifact*> PackageManifest::needed_for(int first, int last,
                                                         const std::vector<std::vector<int>>& experts) const {
  if (last < 0) last = n_layer;
  if (first < 0 || (first >= last && !(first == 0 && last == 0)) || last > n_layer)
    throw std::invalid_argument(fmt::format("layer range [{}, {}) is invalid for a package with {} layers",
                                            first, last, n_layer));
  if (!experts.empty()) {
    if (static_cast<int>(experts.size()) != n_layer)
      throw std::invalid_argument(fmt::format("an expert shard lists experts for {} layers; the package has {}",
                                              experts.size(), n_layer));
    for (int il = first; il < last; ++il) {
      if (experts[il].empty())
        throw std::invalid_argument(fmt::format("an expert shard must hold at least one expert of layer {}", il));
      std::set<int> seen;
      for (int e : experts[il]) {
        if (e < 0 || (n_expert > 0 && e >= n_expert))
          throw std::invalid_argument(fmt::format("expert {} of layer {} does not exist (the package has {} experts)",
                                                  e, il, n_expert));
        if (!seen.insert(e).second)
          throw std::invalid_argument(fmt::format("expert {} of layer {} is listed twice", e, il));
      }
    }
  }
  // (layer, expert) -> artifact, built once: a big MoE package has thousands of experts.
  std::map<std::pair<int, int>, const Artifact*> by_expert;
  if (n_expert > 0)
    for (const Artifact& a : artifacts)
      if (a.kind == "expert") by_expert.emplace(std::make_pair(a.layer, a.expert), &a);
  std::vector<const Artifact*> out;
  auto need = [&](const char* kind, int layer) {
    const Artifact* a = find(kind, layer);
    if (!a) throw std::invalid_argument(fmt::format("package manifest has no {} artifact{}", kind,
                                                    layer >= 0 ? fmt::format(" for layer {}", layer) : ""));
    out.push_back(a);
  };
  need("metadata", -1);
  if (first == 0 || (last == n_layer && tied_embeddings)) need("embeddings", -1);
  for (int il = first; il < last; ++il) {
    need("layer", il);
    if (n_expert == 0) continue;
    std::vector<int> held;
    if (experts.empty()) {
      for (int e = 0; e < n_expert; ++e) held.push_back(e);
    } else {
      held = experts[il];
      std::sort(held.begin(), held.end());
    }
    for (int e : held) {
      auto it = by_expert.find({il, e});
      if (it == by_expert.end())
        throw std::invalid_argument(fmt::format("package manifest has no expert artifact for expert {} of layer {}", e, il));
      out.push_back(it->second);
    }
  }
  if (last == n_layer) need("output", -1);
  return out;
}

const Artifact* PackageManifest::find(std::string_view kind, int layer, int expert) const {
  for (const Artifact& a : artifacts)
    if (a.kind == kind && (kind != "layer" || a.layer == layer) &&
        (kind != "expert" || (a.layer == layer && a.expert == expert)))
      return &a;
  return nullptr;
}

uint64_t PackageManifest::total_bytes() const {
  uint64_t t = 0;
  for (const Artifact& a : artifacts) t += a.bytes;
  return t;
}

PackageManifest parse_manifest(std::string_view text) {
  if (text.size() > package_limits::kMaxManifestBytes)
    throw std::runtime_error(fmt::format("package manifest: {} bytes is more than the limit of {}",
                                         text.size(), package_limits::kMaxManifestBytes));
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw std::runtime_error("package manifest: not valid JSON");
  if (!j.is_object()) throw std::runtime_error("package manifest: not a JSON object");
  only_keys(j, {"format_version", "model_id", "architecture", "n_layer", "n_embd", "n_vocab",
                "tied_embeddings", "source_sha256", "source_bytes", "n_expert", "artifacts"}, "");
  PackageManifest m;
  m.format_version = static_cast<int>(int_field(j, "format_version", 0, 1 << 20));
  if (m.format_version != 1)
    bad("format_version", fmt::format("= {} is not supported (this llmesh reads version 1)", m.format_version));
  m.model_id = string_field(j, "model_id", package_limits::kMaxIdBytes);
  m.architecture = string_field(j, "architecture", package_limits::kMaxArchBytes);
  for (char c : m.architecture)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
      bad("architecture", "may only contain [a-z0-9_.-]");
  m.n_layer = static_cast<int>(int_field(j, "n_layer", 1, package_limits::kMaxLayers));
  m.n_embd = static_cast<int>(int_field(j, "n_embd", 1, package_limits::kMaxEmbd));
  m.n_vocab = static_cast<int>(int_field(j, "n_vocab", 1, package_limits::kMaxVocab));
  const Json& tied = member(j, "tied_embeddings", "");
  if (!tied.is_boolean()) bad("tied_embeddings", fmt::format("must be a boolean, got {}", tied.type_name()));
  m.tied_embeddings = tied.get<bool>();
  m.source_sha256 = string_field(j, "source_sha256", 64);
  if (!is_hex64(m.source_sha256)) bad("source_sha256", "must be 64 lowercase hex digits");
  m.source_bytes = uint_field(j, "source_bytes", 1, package_limits::kMaxArtifactBytes);
  // Optional (additive within format 1): packages without expert artifacts leave it out.
  if (j.contains("n_expert"))
    m.n_expert = static_cast<int>(int_field(j, "n_expert", 1, package_limits::kMaxExperts));

  const Json& arts = member(j, "artifacts", "");
  if (!arts.is_array()) bad("artifacts", fmt::format("must be an array, got {}", arts.type_name()));
  if (m.n_expert == 0)
    for (size_t k = 0; k < arts.size(); ++k)
      if (arts[k].is_object() && arts[k].contains("kind") && arts[k]["kind"] == "expert")
        bad(fmt::format("artifacts[{}].kind", k), "'expert' needs the manifest's n_expert");
  const size_t n_experts = static_cast<size_t>(m.n_layer) * static_cast<size_t>(m.n_expert);
  const size_t want = static_cast<size_t>(m.n_layer) + 3 + n_experts;
  if (arts.size() != want)
    bad("artifacts", m.n_expert > 0
                         ? fmt::format("has {} entries, expected {} (metadata, embeddings, output, {} layers and "
                                       "{} experts of each)", arts.size(), want, m.n_layer, m.n_expert)
                         : fmt::format("has {} entries, expected {} (metadata, embeddings, output and {} layers)",
                                       arts.size(), want, m.n_layer));
  std::vector<bool> seen_layer(m.n_layer, false);
  std::vector<bool> seen_expert(n_experts, false);
  std::set<std::string> seen_kind, seen_path;
  for (size_t k = 0; k < arts.size(); ++k) {
    const std::string where = fmt::format("artifacts[{}].", k);
    const Json& a = arts[k];
    if (!a.is_object()) bad(fmt::format("artifacts[{}]", k), fmt::format("must be an object, got {}", a.type_name()));
    Artifact art;
    art.kind = string_field(a, "kind", 16, where);
    if (art.kind == "layer") {
      only_keys(a, {"kind", "layer", "path", "bytes", "sha256"}, where);
      art.layer = static_cast<int>(int_field(a, "layer", 0, m.n_layer - 1, where));
      if (seen_layer[art.layer]) bad(where + "layer", fmt::format("= {} appears more than once", art.layer));
      seen_layer[art.layer] = true;
    } else if (art.kind == "expert") {
      if (m.n_expert == 0) bad(where + "kind", "'expert' needs the manifest's n_expert");
      only_keys(a, {"kind", "layer", "expert", "path", "bytes", "sha256"}, where);
      art.layer = static_cast<int>(int_field(a, "layer", 0, m.n_layer - 1, where));
      art.expert = static_cast<int>(int_field(a, "expert", 0, m.n_expert - 1, where));
      const size_t k = static_cast<size_t>(art.layer) * static_cast<size_t>(m.n_expert) + static_cast<size_t>(art.expert);
      if (seen_expert[k])
        bad(where + "expert", fmt::format("= {} of layer {} appears more than once", art.expert, art.layer));
      seen_expert[k] = true;
    } else if (art.kind == "metadata" || art.kind == "embeddings" || art.kind == "output") {
      only_keys(a, {"kind", "path", "bytes", "sha256"}, where);
      if (!seen_kind.insert(art.kind).second) bad(where + "kind", fmt::format("'{}' appears more than once", art.kind));
    } else {
      bad(where + "kind", fmt::format("'{}' is not one of metadata, embeddings, output, layer, expert", art.kind));
    }
    art.path = string_field(a, "path", package_limits::kMaxPathBytes, where);
    if (!is_safe_relative_path(art.path))
      bad(where + "path", fmt::format("'{}' is not a safe relative path ([A-Za-z0-9._-] components "
                                      "joined by '/', no '..', not absolute)", art.path));
    if (art.path == kPackageManifestName) bad(where + "path", "must not be the manifest itself");
    if (!seen_path.insert(art.path).second) bad(where + "path", fmt::format("'{}' appears more than once", art.path));
    art.bytes = uint_field(a, "bytes", 1, package_limits::kMaxArtifactBytes, where);
    art.sha256 = string_field(a, "sha256", 64, where);
    if (!is_hex64(art.sha256)) bad(where + "sha256", "must be 64 lowercase hex digits");
    m.artifacts.push_back(std::move(art));
  }
  // With the count fixed at n_layer + 3 (+ n_layer * n_expert), unique kinds, unique layers and
  // unique (layer, expert) pairs, every piece is present.
  for (int il = 0; il < m.n_layer; ++il)
    if (!seen_layer[il]) bad("artifacts", fmt::format("has no artifact for layer {}", il));
  for (size_t k = 0; k < n_experts; ++k)
    if (!seen_expert[k])
      bad("artifacts", fmt::format("has no artifact for expert {} of layer {}", k % m.n_expert, k / m.n_expert));
  for (const char* kind : {"metadata", "embeddings", "output"})
    if (!seen_kind.count(kind)) bad("artifacts", fmt::format("has no {} artifact", kind));
  return m;
}

std::string to_json(const PackageManifest& m) {
  OJson j;
  j["format_version"] = m.format_version;
  j["model_id"] = m.model_id;
  j["architecture"] = m.architecture;
  j["n_layer"] = m.n_layer;
  j["n_embd"] = m.n_embd;
  j["n_vocab"] = m.n_vocab;
  j["tied_embeddings"] = m.tied_embeddings;
  j["source_sha256"] = m.source_sha256;
  j["source_bytes"] = m.source_bytes;
  if (m.n_expert > 0) j["n_expert"] = m.n_expert;
  OJson arts = OJson::array();
  for (const Artifact& a : m.artifacts) {
    OJson x;
    x["kind"] = a.kind;
    if (a.kind == "layer" || a.kind == "expert") x["layer"] = a.layer;
    if (a.kind == "expert") x["expert"] = a.expert;
    x["path"] = a.path;
    x["bytes"] = a.bytes;
    x["sha256"] = a.sha256;
    arts.push_back(std::move(x));
  }
  j["artifacts"] = std::move(arts);
  return j.dump(2) + "\n";
}

PackageManifest read_manifest(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / kPackageManifestName).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open the package manifest", path));
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > package_limits::kMaxManifestBytes)
      throw std::runtime_error(fmt::format("{}: more than {} bytes, not a package manifest", path,
                                           package_limits::kMaxManifestBytes));
  }
  try {
    return parse_manifest(text);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("{}: {}", path, e.what()));
  }
}

bool is_package_dir(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) &&
         std::filesystem::is_regular_file(std::filesystem::path(path) / kPackageManifestName, ec);
}

namespace {
struct Sha256 {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  Sha256() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("SHA-256: OpenSSL EVP initialisation failed");
  }
  void update(const void* p, size_t n) {
    if (n && EVP_DigestUpdate(ctx.get(), p, n) != 1) throw std::runtime_error("SHA-256: update failed");
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) throw std::runtime_error("SHA-256: final failed");
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) {
      s += digits[md[i] >> 4];
      s += digits[md[i] & 15];
    }
    return s;
  }
};
}  // namespace

std::string sha256_hex(const void* data, size_t size) {
  Sha256 h;
  const auto* p = static_cast<const unsigned char*>(data);
  while (size > 0) {  // in chunks: EVP takes size_t, but keep the calls bounded
    size_t n = std::min<size_t>(size, 1u << 30);
    h.update(p, n);
    p += n;
    size -= n;
  }
  return h.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open", path));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0)
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  if (in.bad()) throw std::runtime_error(fmt::format("{}: read error", path));
  return h.hex();
}

}  // namespace llmesh
