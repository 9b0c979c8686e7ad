#include "package/package_model.h"

#include <filesystem>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace llmesh {
namespace fs = std::filesystem;
namespace {

// What follows "blk.N." in an expert weight: ffn_{gate,up,down}_exps.weight (merged) or
// ffn_{gate,up,down}.E.weight (one expert). In a package with expert artifacts these belong to
// the expert files only.
bool is_expert_tensor(std::string_view rest) {
  for (std::string_view w : {"ffn_gate", "ffn_up", "ffn_down"}) {
    if (!rest.starts_with(w)) continue;
    std::string_view r = rest.substr(w.size());
    if (r == "_exps.weight") return true;
    if (r.size() > 8 && r.front() == '.' && r.ends_with(".weight")) {
      std::string_view num = r.substr(1, r.size() - 8);
      bool digits = !num.empty();
      for (char c : num) digits = digits && c >= '0' && c <= '9';
      if (digits) return true;
    }
  }
  return false;
}

}  // namespace

std::unique_ptr<Model> load_package_model(const std::string& dir, const PackageLoadOptions& opt) {
  return load_package_model(dir, read_manifest(dir), opt);
}

std::unique_ptr<Model> load_package_model(const std::string& dir, const PackageManifest& man,
                                          const PackageLoadOptions& opt) {
  auto fail = [&](const std::string& what) -> std::runtime_error {
    return std::runtime_error(fmt::format("package {}: {}", dir, what));
  };
  const int first = opt.layers.first;
  const int last = opt.layers.last < 0 ? man.n_layer : opt.layers.last;
  std::vector<const Artifact*> needed;
  try {
    needed = man.needed_for(first, last, opt.experts);
  } catch (const std::invalid_argument& e) {
    throw fail(e.what());
  }

  std::vector<std::shared_ptr<const GgufFile>> parts;
  for (const Artifact* a : needed) {
    const fs::path path = fs::path(dir) / a->path;
    std::error_code ec;
    auto st = fs::symlink_status(path, ec);
    if (ec || !fs::exists(st))
      throw fail(a->kind == "expert"
                     ? fmt::format("artifact {} is missing (expert {} of layer {}, needed for layers [{}, {}))",
                                   a->path, a->expert, a->layer, first, last)
                     : fmt::format("artifact {} is missing (needed for layers [{}, {}))", a->path, first, last));
    if (!fs::is_regular_file(st)) throw fail(fmt::format("artifact {} is not a regular file", a->path));
    uint64_t size = fs::file_size(path, ec);
    if (ec || size != a->bytes)
      throw fail(fmt::format("artifact {} has {} bytes, the manifest says {} (truncated or corrupted)",
                             a->path, ec ? 0 : size, a->bytes));
    std::shared_ptr<const GgufFile> f;
    try {
      f = GgufFile::open(path.string());
    } catch (const std::exception& e) {
      throw fail(fmt::format("artifact {} is not a valid GGUF file: {}", a->path, e.what()));
    }
    // Checked again on the mapping itself: that is what the weights are read from.
    if (f->file_size() != a->bytes)
      throw fail(fmt::format("artifact {} changed size while opening ({} bytes, the manifest says {})",
                             a->path, f->file_size(), a->bytes));
    if (opt.verify_sha256) {
      std::string got = sha256_hex(f->base(), f->file_size());
      if (got != a->sha256)
        throw fail(fmt::format("artifact {} has SHA-256 {}, the manifest says {} (corrupted)", a->path, got,
                               a->sha256));
    }
    // A file holds only its own tensors, so no artifact can stand in for another's weights.
    for (const GgufTensor& t : f->tensors()) {
      bool ok;
      if (a->kind == "layer")
        ok = t.name.starts_with(fmt::format("blk.{}.", a->layer)) &&
             !(man.n_expert > 0 && is_expert_tensor(t.name.substr(fmt::format("blk.{}.", a->layer).size())));
      else if (a->kind == "expert")
        ok = t.name == fmt::format("blk.{}.ffn_gate.{}.weight", a->layer, a->expert) ||
             t.name == fmt::format("blk.{}.ffn_up.{}.weight", a->layer, a->expert) ||
             t.name == fmt::format("blk.{}.ffn_down.{}.weight", a->layer, a->expert);
      else if (a->kind == "embeddings") ok = t.name.starts_with("token_embd.");
      else if (a->kind == "output") ok = t.name.starts_with("output.") || t.name.starts_with("output_norm.");
      else ok = !t.name.starts_with("blk.") && !t.name.starts_with("token_embd.") &&
                !t.name.starts_with("output.") && !t.name.starts_with("output_norm.");
      if (!ok) throw fail(fmt::format("artifact {} ({}) holds tensor '{}', which does not belong there",
                                      a->path, a->kind, t.name));
    }
    parts.push_back(std::move(f));
  }

  ModelOptions mo;
  mo.layers = {first, last};
  mo.experts = opt.experts;
  std::unique_ptr<Model> model;
  try {
    model = Model::load(std::move(parts), mo);
  } catch (const std::exception& e) {
    throw fail(e.what());
  }
  const ModelConfig& c = model->config();
  if (man.n_expert > 0 && c.n_expert != man.n_expert)
    throw fail(fmt::format("metadata.gguf describes {} experts per layer; the manifest says {}", c.n_expert,
                           man.n_expert));
  if (c.arch_name != man.architecture || c.n_layer != man.n_layer || c.n_embd != man.n_embd ||
      c.n_vocab != man.n_vocab)
    throw fail(fmt::format("metadata.gguf describes {} with {} layers, {} embedding, {} vocabulary; the "
                           "manifest says {} with {}, {}, {}",
                           c.arch_name, c.n_layer, c.n_embd, c.n_vocab, man.architecture, man.n_layer,
                           man.n_embd, man.n_vocab));
  return model;
}

}  // namespace llmesh
