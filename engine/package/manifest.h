// Layer packages: a model pre-split into per-layer GGUF files plus a hashed manifest, so a
// pipeline-stage node fetches only the layers it runs. Format: docs/layer-packages.md.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmesh {

inline constexpr const char* kPackageManifestName = "manifest.json";

// Bounds parse_manifest enforces on untrusted manifests.
namespace package_limits {
inline constexpr size_t kMaxManifestBytes = 16u << 20;     // the manifest.json text
inline constexpr int kMaxLayers = 4096;
inline constexpr int kMaxEmbd = 1 << 20;
inline constexpr int kMaxVocab = 1 << 24;
inline constexpr uint64_t kMaxArtifactBytes = 1ull << 44;  // 16 TiB per file
inline constexpr size_t kMaxPathBytes = 255;
inline constexpr size_t kMaxPathComponents = 8;
inline constexpr size_t kMaxIdBytes = 256;                 // model_id
inline constexpr size_t kMaxArchBytes = 64;
inline constexpr int kMaxExperts = 4096;                   // n_expert of an MoE package
}  // namespace package_limits

struct Artifact {
  std::string kind;     // "metadata", "embeddings", "output", "layer", "expert"
  int layer = -1;       // the block index for kinds "layer" and "expert", else -1
  int expert = -1;      // the expert index for kind "expert", else -1
  std::string path;     // relative to the package directory, '/'-separated, no '..', not absolute
  uint64_t bytes = 0;   // exact file size
  std::string sha256;   // 64 lowercase hex digits of the file's SHA-256
};

struct PackageManifest {
  int format_version = 1;
  std::string model_id;
  std::string architecture;
  int n_layer = 0;
  int n_embd = 0;
  int n_vocab = 0;
  // No output.weight: the head is token_embd.weight, so the last stage needs embeddings.gguf.
  bool tied_embeddings = false;
  std::string source_sha256;  // of the original GGUF file
  uint64_t source_bytes = 0;
  // A mixture-of-experts package whose experts are artifacts of their own (kind "expert", one
  // per layer and expert: layers/blk.N.expert.E.gguf): the experts per layer. 0: no expert
  // artifacts (a dense model, or an older MoE package with the merged expert tensors in the
  // layer files). Written to the JSON only when > 0.
  int n_expert = 0;
  std::vector<Artifact> artifacts;

  // The artifacts a stage running layers [first, last) needs: metadata; embeddings when
  // first == 0 (or when last == n_layer with tied embeddings); each layer in order, followed
  // by its expert artifacts (every expert, ascending); output when last == n_layer.
  // last = -1 means n_layer. Throws std::invalid_argument on a bad range.
  std::vector<const Artifact*> needed_for(int first, int last) const;
  // The same for an expert shard (docs/moe.md): `experts` is, per absolute layer (n_layer
  // lists), the experts held; only those expert artifacts are listed (ascending). Empty: every
  // expert. Throws std::invalid_argument for a list of the wrong length, an empty list for a
  // layer of the range, an expert out of range or listed twice. A package without expert
  // artifacts (n_expert == 0) has the experts inside the layer files: the lists are checked
  // for length and duplicates only (Model::load checks the rest).
  std::vector<const Artifact*> needed_for(int first, int last, const std::vector<std::vector<int>>& experts) const;
  // kind "layer": `layer` selects; kind "expert": `layer` and `expert` select.
  const Artifact* find(std::string_view kind, int layer = -1, int expert = -1) const;
  uint64_t total_bytes() const;
};

// Parses and validates a manifest (untrusted input): every field present with the right JSON
// type, no unknown fields, bounded numbers, safe relative paths, lowercase hex digests, exactly
// one metadata/embeddings/output artifact, each layer 0..n_layer-1 exactly once and, with
// n_expert, each (layer, expert) pair exactly once.
// Throws std::runtime_error naming the offending field.
PackageManifest parse_manifest(std::string_view json);
// Pretty-printed JSON (2-space indent, fields in the documented order); parse_manifest reads it back.
std::string to_json(const PackageManifest& m);

// Reads DIR/manifest.json (bounded) and parses it. Errors name the file.
PackageManifest read_manifest(const std::string& dir);
// True when `path` is a directory containing manifest.json.
bool is_package_dir(const std::string& path);

// True for a path parse_manifest accepts: 1..255 bytes of [A-Za-z0-9._-] components joined by
// '/', at most 8 components, none empty, "." or "..", not starting with '/'.
bool is_safe_relative_path(std::string_view path);

// Lowercase hex SHA-256 (OpenSSL EVP) of a buffer / of a whole file.
std::string sha256_hex(const void* data, size_t size);
std::string sha256_file(const std::string& path);

}  // namespace llmesh
