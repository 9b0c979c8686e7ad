#include "moe/expert_profile.h"

#include "moe/json_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <stdexcept>

#include <fmt/format.h>

#include "model/forward.h"
#include "model/kv_cache.h"

namespace llmesh::moe {

ModelShape ModelShape::of(const Model& m, const std::string& fallback_name) {
  ModelShape s;
  s.name = !m.config().name.empty() ? m.config().name
           : !fallback_name.empty() ? fallback_name
                                    : std::filesystem::path(m.file().path()).stem().string();
  s.n_layer = m.config().n_layer;
  s.n_expert = m.config().n_expert;
  s.n_expert_used = m.config().n_expert_used;
  // FNV-1a over 8-byte words of each layer's router (the bytes are the same in every copy of
  // the model: a GGUF, its layer package, a sparse copy holding a shard).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t w) { h = (h ^ w) * 1099511628211ull; };
  for (int il = m.first_layer(); il < m.last_layer(); ++il) {
    const kernels::MatView& r = m.layer(il).router;
    if (!r.data) continue;
    const size_t n = r.row_bytes * static_cast<size_t>(r.rows);
    const uint8_t* p = r.data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      mix(w);
    }
    for (; i < n; ++i) mix(p[i]);
    mix(static_cast<uint64_t>(il) << 32 | n);
  }
  if (m.config().is_moe()) s.fingerprint = fmt::format("{:016x}", h);
  return s;
}

void ModelShape::check_matches(const ModelShape& o, const std::string& what) const {
  if (n_layer != o.n_layer || n_expert != o.n_expert || n_expert_used != o.n_expert_used)
    throw std::runtime_error(fmt::format(
        "{} is for a model with {} layers, {} experts, {} used per token ('{}'); this model has {}, {}, {} ('{}')",
        what, o.n_layer, o.n_expert, o.n_expert_used, o.name, n_layer, n_expert, n_expert_used, name));
  if (!fingerprint.empty() && !o.fingerprint.empty() && fingerprint != o.fingerprint)
    throw std::runtime_error(fmt::format(
        "{} is for another model of the same shape ('{}', router fingerprint {}); this model is '{}' ({}): its "
        "profile and quality figures do not apply", what, o.name, o.fingerprint, name, fingerprint));
}

std::vector<int> ExpertProfile::ranking(int layer) const {
  std::vector<int> order(model.n_expert);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (mass(layer, a) != mass(layer, b)) return mass(layer, a) > mass(layer, b);
    if (count(layer, a) != count(layer, b)) return count(layer, a) > count(layer, b);
    return a < b;
  });
  return order;
}

nlohmann::json ExpertProfile::to_json() const {
  nlohmann::json layers = nlohmann::json::array();
  for (int l = 0; l < model.n_layer; ++l) {
    nlohmann::json mass_row = nlohmann::json::array(), count_row = nlohmann::json::array();
    for (int e = 0; e < model.n_expert; ++e) {
      mass_row.push_back(std::round(mass(l, e) * 1e6) / 1e6);
      count_row.push_back(count(l, e));
    }
    layers.push_back({{"layer", l}, {"ranking", ranking(l)}, {"gate_mass", mass_row}, {"selected", count_row}});
  }
  return {{"format", "llmesh-moe-profile"},
          {"version", 1},
          {"model", {{"name", model.name}, {"fingerprint", model.fingerprint}, {"n_layer", model.n_layer},
                     {"n_expert", model.n_expert}, {"n_expert_used", model.n_expert_used}}},
          {"tokens", tokens},
          {"sequences", sequences},
          {"layers", layers}};
}

namespace {
[[noreturn]] void bad(const std::string& what) { throw std::runtime_error("expert profile: " + what); }

int bounded_int(const nlohmann::json& j, const char* key, int lo, int hi) {
  if (!j.contains(key) || !j[key].is_number_integer()) bad(fmt::format("'{}' must be an integer", key));
  int64_t v = j[key].get<int64_t>();
  if (v < lo || v > hi) bad(fmt::format("'{}' is {}, outside {}..{}", key, v, lo, hi));
  return static_cast<int>(v);
}
}  // namespace

ExpertProfile ExpertProfile::from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("format") || !j["format"].is_string() || j["format"] != "llmesh-moe-profile")
    bad("not a ranking file (\"format\" is not \"llmesh-moe-profile\")");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int64_t>() != 1)
    bad("unsupported \"version\" (this llmesh reads version 1)");
  if (!j.contains("model") || !j["model"].is_object()) bad("'model' must be an object");
  const auto& m = j["model"];
  ExpertProfile p;
  p.model.name = m.contains("name") && m["name"].is_string() ? m["name"].get<std::string>() : "";
  if (m.contains("fingerprint") && m["fingerprint"].is_string() && m["fingerprint"].get_ref<const std::string&>().size() <= 64)
    p.model.fingerprint = m["fingerprint"];
  p.model.n_layer = bounded_int(m, "n_layer", 1, 100000);
  p.model.n_expert = bounded_int(m, "n_expert", 1, 4096);
  p.model.n_expert_used = bounded_int(m, "n_expert_used", 1, p.model.n_expert);
  if (static_cast<int64_t>(p.model.n_layer) * p.model.n_expert > (1 << 22)) bad("too many layers x experts");
  if (j.contains("tokens") && j["tokens"].is_number_integer()) p.tokens = j["tokens"].get<int64_t>();
  if (j.contains("sequences") && j["sequences"].is_number_integer()) p.sequences = j["sequences"].get<int64_t>();
  if (!j.contains("layers") || !j["layers"].is_array() ||
      j["layers"].size() != static_cast<size_t>(p.model.n_layer))
    bad(fmt::format("'layers' must be an array of {} entries", p.model.n_layer));
  const size_t n = static_cast<size_t>(p.model.n_layer) * p.model.n_expert;
  p.gate_mass.assign(n, 0);
  p.selected.assign(n, 0);
  for (int l = 0; l < p.model.n_layer; ++l) {
    const auto& L = j["layers"][l];
    if (!L.is_object()) bad(fmt::format("layers[{}] must be an object", l));
    for (const char* key : {"gate_mass", "selected"})
      if (!L.contains(key) || !L[key].is_array() || L[key].size() != static_cast<size_t>(p.model.n_expert))
        bad(fmt::format("layers[{}].{} must be an array of {} numbers", l, key, p.model.n_expert));
    for (int e = 0; e < p.model.n_expert; ++e) {
      const auto& mv = L["gate_mass"][e];
      const auto& cv = L["selected"][e];
      if (!mv.is_number() || !std::isfinite(mv.get<double>()) || mv.get<double>() < 0)
        bad(fmt::format("layers[{}].gate_mass[{}] must be a finite number >= 0", l, e));
      if (!cv.is_number_unsigned() && !(cv.is_number_integer() && cv.get<int64_t>() >= 0))
        bad(fmt::format("layers[{}].selected[{}] must be an integer >= 0", l, e));
      p.gate_mass[static_cast<size_t>(l) * p.model.n_expert + e] = mv.get<double>();
      p.selected[static_cast<size_t>(l) * p.model.n_expert + e] = cv.get<uint64_t>();
    }
  }
  return p;
}

ExpertProfile ExpertProfile::read(const std::string& path) {
  return read_json_file(path, "the ranking file", [](const nlohmann::json& j) { return from_json(j); });
}

void ExpertProfile::write(const std::string& path) const { write_json_file(path, to_json()); }

ExpertProfile profile_experts(const Model& model, ThreadPool& pool, const std::vector<std::vector<int32_t>>& sequences,
                              int batch, const std::function<void(int64_t, int64_t)>& progress) {
  const ModelConfig& c = model.config();
  if (!c.is_moe()) throw std::runtime_error(fmt::format("{} is not a mixture-of-experts model", model.file().path()));
  if (!model.has_embedding() || !model.has_head() || !model.holds_all_experts())
    throw std::runtime_error("profiling needs the whole model (every layer and expert)");
  if (sequences.empty()) throw std::runtime_error("no calibration text to profile on");
  size_t longest = 0;
  int64_t total = 0;
  for (const auto& s : sequences) {
    longest = std::max(longest, s.size());
    total += static_cast<int64_t>(s.size());
  }
  KvCacheOptions kv;
  kv.n_ctx = static_cast<int>(longest);
  kv.n_seq = 1;
  KvCache cache(c, 0, c.n_layer, kv);
  Forward fwd(model, cache, pool);
  ExpertStats stats;
  stats.reset(c.n_layer, c.n_expert);
  fwd.collect_expert_stats(&stats);
  int64_t done = 0;
  Batch b;
  for (const auto& seq : sequences) {
    cache.clear(0);
    for (size_t at = 0; at < seq.size(); at += static_cast<size_t>(batch)) {
      b.clear();
      const size_t n = std::min(seq.size() - at, static_cast<size_t>(batch));
      for (size_t i = 0; i < n; ++i)
        b.add(seq[at + i], static_cast<int32_t>(at + i), 0, at + i + 1 == seq.size());
      fwd.run(b);
      done += static_cast<int64_t>(n);
      if (progress) progress(done, total);
    }
  }
  ExpertProfile p;
  p.model = ModelShape::of(model);
  p.tokens = total;
  p.sequences = static_cast<int64_t>(sequences.size());
  p.gate_mass = std::move(stats.gate_mass);
  p.selected = std::move(stats.selected);
  return p;
}

}  // namespace llmesh::moe
