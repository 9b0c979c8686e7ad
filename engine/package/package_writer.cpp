#include "package/package_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <algorithm>
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

// The part of an expert tensor name after "blk.N.": "ffn_gate_exps.weight" (merged, all
// experts) -> which = "gate", expert = -1; "ffn_gate.3.weight" (one expert) -> "gate", 3.
// False for any other tensor of the layer.
bool expert_tensor(std::string_view rest, std::string& which, int& expert) {
  for (const char* w : {"gate", "up", "down"}) {
    const std::string merged = fmt::format("ffn_{}_exps.weight", w);
    if (rest == merged) {
      which = w;
      expert = -1;
      return true;
    }
    const std::string pre = fmt::format("ffn_{}.", w);
    if (!starts_with(rest, pre) || !rest.ends_with(".weight")) continue;
    std::string_view num = rest.substr(pre.size(), rest.size() - pre.size() - 7);
    if (num.empty() || num.size() > 6) continue;
    int v = 0;
    bool digits = true;
    for (char c : num) {
      if (c < '0' || c > '9') digits = false;
      else v = v * 10 + (c - '0');
    }
    if (!digits) continue;
    which = w;
    expert = v;
    return true;
  }
  return false;
}

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

  // Every tensor of the source goes to exactly one file. A mixture-of-experts model's expert
  // weights go to one file per (layer, expert): layers/blk.N.expert.E.gguf, holding the 2-D
  // tensors blk.N.ffn_{gate,up,down}.E.weight (a merged [cols, rows, n_expert] tensor is cut
  // into its n_expert contiguous slices; per-expert tensors are copied as they are).
  struct ExpertPiece {
    std::string name;    // blk.N.ffn_gate.E.weight
    const GgufTensor* t;
    uint64_t offset;     // within t's data
    uint64_t nbytes;
    int64_t ne0, ne1;
  };
  const bool moe = cfg.is_moe();
  if (moe && cfg.n_expert > package_limits::kMaxExperts)
    throw std::runtime_error(fmt::format("{}: {} experts exceed the package limit of {}", gguf_path, cfg.n_expert,
                                         package_limits::kMaxExperts));
  std::vector<const GgufTensor*> global, embeddings, output;
  std::vector<std::vector<const GgufTensor*>> layers(cfg.n_layer);
  std::vector<std::vector<std::vector<ExpertPiece>>> experts(
      moe ? cfg.n_layer : 0, std::vector<std::vector<ExpertPiece>>(moe ? cfg.n_expert : 0));
  for (const GgufTensor& t : src->tensors()) {
    int il = block_index(t.name);
    if (il >= 0) {
      if (il >= cfg.n_layer)
        throw std::runtime_error(fmt::format("{}: tensor '{}' belongs to layer {} but the model has {} layers",
                                             gguf_path, t.name, il, cfg.n_layer));
      std::string which;
      int e = -1;
      const std::string_view rest = std::string_view(t.name).substr(t.name.find('.', 4) + 1);
      if (moe && expert_tensor(rest, which, e)) {
        const std::string prefix = fmt::format("blk.{}.ffn_{}.", il, which);
        if (e < 0) {  // merged: [cols, rows, n_expert], expert e = the e-th contiguous slice
          if (t.n_dims != 3 || t.ne[2] != cfg.n_expert || t.nbytes % static_cast<uint64_t>(cfg.n_expert) != 0)
            throw std::runtime_error(fmt::format("{}: tensor '{}' has shape {}, expected [cols, rows, {}]", gguf_path,
                                                 t.name, t.shape_string(), cfg.n_expert));
          const uint64_t slice = t.nbytes / static_cast<uint64_t>(cfg.n_expert);
          for (int x = 0; x < cfg.n_expert; ++x)
            experts[il][x].push_back({fmt::format("{}{}.weight", prefix, x), &t, slice * static_cast<uint64_t>(x),
                                      slice, t.ne[0], t.ne[1]});
        } else {
          if (e >= cfg.n_expert)
            throw std::runtime_error(fmt::format("{}: tensor '{}' names expert {}, but the model has {} experts",
                                                 gguf_path, t.name, e, cfg.n_expert));
          if (t.n_dims != 2)
            throw std::runtime_error(fmt::format("{}: tensor '{}' has shape {}, expected 2 dimensions", gguf_path,
                                                 t.name, t.shape_string()));
          experts[il][e].push_back({t.name, &t, 0, t.nbytes, t.ne[0], t.ne[1]});
        }
        continue;
      }
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
  // Experts go to files of their own only when every expert of every layer has all three
  // matrices; anything else (a model this writer cannot cut cleanly) is refused rather than
  // packaged half split.
  bool split_experts = false;
  if (moe) {
    size_t pieces = 0;
    for (const auto& l : experts)
      for (const auto& x : l) pieces += x.size();
    if (pieces > 0) {
      for (int il = 0; il < cfg.n_layer; ++il)
        for (int x = 0; x < cfg.n_expert; ++x) {
          auto& v = experts[il][x];
          std::sort(v.begin(), v.end(), [](const ExpertPiece& a, const ExpertPiece& b) { return a.name < b.name; });
          if (v.size() != 3 || v[0].name == v[1].name || v[1].name == v[2].name)
            throw std::runtime_error(fmt::format("{}: expert {} of layer {} has {} of its 3 matrices (gate, up, down)",
                                                 gguf_path, x, il, v.size()));
        }
      split_experts = true;
    }
  }
  m.n_expert = split_experts ? cfg.n_expert : 0;

  const int total = cfg.n_layer + 3 + cfg.n_layer * m.n_expert;
  auto emit = [&](const std::string& kind, int layer, const std::string& rel,
                  const std::vector<const GgufTensor*>& tensors, int expert = -1) {
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
      if (expert >= 0) w.set_u32("llmesh.package.expert", static_cast<uint32_t>(expert));
    }
    for (const GgufTensor* t : tensors) w.add_tensor(*t);
    if (expert >= 0)
      for (const ExpertPiece& p : experts[layer][expert]) {
        const int64_t shape[2] = {p.ne0, p.ne1};
        w.add_tensor(p.name, p.t->type, shape, p.t->data + p.offset, p.nbytes);
      }
    const fs::path path = dir / rel;
    w.write(path.string());
    Artifact a;
    a.kind = kind;
    a.layer = layer;
    a.expert = expert;
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
  for (int il = 0; il < cfg.n_layer; ++il) {
    emit("layer", il, fmt::format("layers/blk.{}.gguf", il), layers[il]);
    for (int x = 0; x < m.n_expert; ++x)
      emit("expert", il, fmt::format("layers/blk.{}.expert.{}.gguf", il, x), {}, x);
  }
  emit("output", -1, "output.gguf", output);

  // Check what we wrote reads back, then publish it.
  const std::string text = to_json(m);
  parse_manifest(text);
  write_file_atomic(dir / kPackageManifestName, text);
  return m;
}

}  // namespace llmesh
