#include "package/package_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>

#include "gguf/gguf_writer.h"
#include "model/config.h"

namespace llmesh {
namespace fs = std::filesystem;
namespace {

// "blk.12.attn_q.weight" -> 12; -1 for any other name.
int block_index(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  size_t i = 4, n = 0;
  int v = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && n < 7) {
    v = v * 10 + (name[i] - '0');
    ++i;
    ++n;
  }
  if (n == 0 || i >= name.size() || name[i] != '.') return -1;
  return v;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

void write_file_atomic(const fs::path& path, const std::string& text) {
  const std::string tmp = path.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot create: {}", tmp, std::strerror(errno)));
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(fmt::format("{}: write failed: {}", tmp, std::strerror(e)));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: cannot flush: {}", tmp, std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: cannot rename into place: {}", path.string(), std::strerror(e)));
  }
}

}  // namespace

PackageManifest write_package(const std::string& gguf_path, const std::string& out_dir,
                              const PackageProgressFn& progress, const std::string& model_id) {
  std::shared_ptr<const GgufFile> src = GgufFile::open(gguf_path);
  const ModelConfig cfg = ModelConfig::from_gguf(*src);
  const GgufTensor* emb = src->find_tensor("token_embd.weight");
  if (!emb) throw std::runtime_error(gguf_path + ": missing tensor 'token_embd.weight'");
  if (cfg.n_layer > package_limits::kMaxLayers || cfg.n_embd > package_limits::kMaxEmbd ||
      cfg.n_vocab > package_limits::kMaxVocab)
    throw std::runtime_error(fmt::format("{}: {} layers / {} embedding / {} vocabulary exceed the package limits",
                                         gguf_path, cfg.n_layer, cfg.n_embd, cfg.n_vocab));

  PackageManifest m;
  m.model_id = model_id.empty() ? fs::path(gguf_path).filename().string() : model_id;
  if (model_id.empty() && m.model_id.size() > 5 && m.model_id.ends_with(".gguf"))
    m.model_id.resize(m.model_id.size() - 5);
  if (m.model_id.size() > package_limits::kMaxIdBytes) m.model_id.resize(package_limits::kMaxIdBytes);
  m.architecture = cfg.arch_name;
  m.n_layer = cfg.n_layer;
  m.n_embd = cfg.n_embd;
  m.n_vocab = cfg.n_vocab;
  m.tied_embeddings = src->find_tensor("output.weight") == nullptr;
  m.source_sha256 = sha256_hex(src->base(), src->file_size());
  m.source_bytes = src->file_size();

  // Every tensor of the source goes to exactly one file.
  std::vector<const GgufTensor*> global, embeddings, output;
  std::vector<std::vector<const GgufTensor*>> layers(cfg.n_layer);
  for (const GgufTensor& t : src->tensors()) {
    int il = block_index(t.name);
    if (il >= 0) {
      if (il >= cfg.n_layer)
        throw std::runtime_error(fmt::format("{}: tensor '{}' belongs to layer {} but the model has {} layers",
                                             gguf_path, t.name, il, cfg.n_layer));
      layers[il].push_back(&t);
    } else if (starts_with(t.name, "token_embd.")) {
      embeddings.push_back(&t);
    } else if (starts_with(t.name, "output.") || starts_with(t.name, "output_norm.")) {
      output.push_back(&t);
    } else {
      global.push_back(&t);  // rope_freqs.weight and anything else every stage may need
    }
  }

  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir / "layers", ec);
  if (ec) throw std::runtime_error(fmt::format("{}: cannot create: {}", (dir / "layers").string(), ec.message()));
  fs::remove(dir / kPackageManifestName, ec);
  if (ec) throw std::runtime_error(fmt::format("{}: cannot remove the old manifest: {}",
                                               (dir / kPackageManifestName).string(), ec.message()));

  const std::string arch_key = cfg.arch_name + ".vocab_size";
  if (auto v = src->find(arch_key); v && (!v->is_integer() || v->u != static_cast<uint64_t>(cfg.n_vocab)))
    throw std::runtime_error(fmt::format("{}: {} disagrees with token_embd.weight ({} rows)", gguf_path,
                                         arch_key, cfg.n_vocab));
  const int total = cfg.n_layer + 3;
  auto emit = [&](const std::string& kind, int layer, const std::string& rel,
                  const std::vector<const GgufTensor*>& tensors) {
    GgufWriter w;
    if (kind == "metadata") {
      w.copy_metadata(*src);
      // Middle stages have no embedding table to read the vocabulary size from.
      if (!w.has(arch_key)) w.set_u32(arch_key, static_cast<uint32_t>(cfg.n_vocab));
    } else {
      if (auto a = src->find("general.alignment")) w.set("general.alignment", GgufMetaValue::from(*a));
      w.set_string("general.architecture", cfg.arch_name);
      w.set_string("llmesh.package.kind", kind);
      if (layer >= 0) w.set_u32("llmesh.package.layer", static_cast<uint32_t>(layer));
    }
    for (const GgufTensor* t : tensors) w.add_tensor(*t);
    const fs::path path = dir / rel;
    w.write(path.string());
    Artifact a;
    a.kind = kind;
    a.layer = layer;
    a.path = rel;
    a.bytes = fs::file_size(path);
    a.sha256 = sha256_file(path.string());
    m.artifacts.push_back(std::move(a));
    if (progress) {
      PackageProgress p;
      p.artifact = &m.artifacts.back();
      p.index = static_cast<int>(m.artifacts.size());
      p.total = total;
      progress(p);
    }
  };
  m.artifacts.reserve(total);
  emit("metadata", -1, "metadata.gguf", global);
  emit("embeddings", -1, "embeddings.gguf", embeddings);
  for (int il = 0; il < cfg.n_layer; ++il) emit("layer", il, fmt::format("layers/blk.{}.gguf", il), layers[il]);
  emit("output", -1, "output.gguf", output);

  // Check what we wrote reads back, then publish it.
  const std::string text = to_json(m);
  parse_manifest(text);
  write_file_atomic(dir / kPackageManifestName, text);
  return m;
}

}  // namespace llmesh
