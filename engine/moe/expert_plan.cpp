#include "moe/expert_plan.h"

#include "moe/json_file.h"

#include <algorithm>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

namespace llmesh::moe {

Grouping deal_experts(const ExpertProfile& profile, int nodes, int overlap, int core) {
  const int NE = profile.model.n_expert, NL = profile.model.n_layer;
  if (nodes < 1) throw std::invalid_argument("a plan needs at least one node");
  if (overlap < 1 || overlap > nodes)
    throw std::invalid_argument(fmt::format("--overlap must be 1..{} (copies of each expert, at most one per node)",
                                            nodes));
  if (core < 0 || core > NE) throw std::invalid_argument(fmt::format("the core must be 0..{} experts", NE));
  Grouping g;
  g.core = core;
  g.shards.assign(nodes, ExpertSet(NL));
  for (int l = 0; l < NL; ++l) {
    const std::vector<int> rank = profile.ranking(l);
    for (int i = 0; i < core; ++i)
      for (auto& s : g.shards) s[l].push_back(rank[i]);
    // The rest, hottest first; each copy to the node holding the fewest dealt experts, then the
    // least gate mass, then the lowest index (deterministic).
    std::vector<int> count(nodes, 0);
    std::vector<double> mass(nodes, 0);
    for (int i = core; i < NE; ++i) {
      const int e = rank[i];
      std::vector<int> order(nodes);
      for (int n = 0; n < nodes; ++n) order[n] = n;
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        if (count[a] != count[b]) return count[a] < count[b];
        if (mass[a] != mass[b]) return mass[a] < mass[b];
        return a < b;
      });
      for (int k = 0; k < overlap; ++k) {
        const int n = order[k];
        g.shards[n][l].push_back(e);
        ++count[n];
        mass[n] += profile.mass(l, e);
      }
    }
    for (auto& s : g.shards) std::sort(s[l].begin(), s[l].end());
  }
  // A shard with no expert in some layer (more nodes than experts to deal, no core) cannot run.
  for (size_t n = 0; n < g.shards.size(); ++n)
    for (int l = 0; l < NL; ++l)
      if (g.shards[n][l].empty())
        throw std::invalid_argument(fmt::format(
            "with {} nodes, overlap {} and a core of {}, node {} would hold no expert of layer {}: use a larger core "
            "or overlap, or fewer nodes", nodes, overlap, core, n, l));
  return g;
}

double coverage(const ExpertSet& i, const ExpertSet& j) {
  size_t have = 0, want = 0;
  for (size_t l = 0; l < j.size() && l < i.size(); ++l) {
    want += j[l].size();
    for (int e : j[l])
      if (std::binary_search(i[l].begin(), i[l].end(), e)) ++have;
  }
  return want == 0 ? 1.0 : static_cast<double>(have) / static_cast<double>(want);
}

bool covers_all_without(const std::vector<ExpertSet>& shards, size_t lost, int n_expert) {
  if (shards.empty()) return false;
  const size_t NL = shards[0].size();
  for (size_t l = 0; l < NL; ++l) {
    std::vector<uint8_t> seen(n_expert, 0);
    for (size_t s = 0; s < shards.size(); ++s)
      if (s != lost)
        for (int e : shards[s][l]) seen[e] = 1;
    if (std::find(seen.begin(), seen.end(), 0) != seen.end()) return false;
  }
  return true;
}

std::string MoePlan::digest() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 over a canonical text of shape and shards
  auto mix = [&](const std::string& s) {
    for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  };
  mix(fmt::format("{}/{}/{}/{}|", model.n_layer, model.n_expert, model.n_expert_used, model.fingerprint));
  for (const auto& s : shards()) {
    for (const auto& layer : s) {
      for (int e : layer) mix(fmt::format("{},", e));
      mix(";");
    }
    mix("|");
  }
  return fmt::format("{:016x}", h);
}

namespace {
nlohmann::json expert_set_json(const ExpertSet& s) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& l : s) j.push_back(l);
  return j;
}

[[noreturn]] void bad(const std::string& what) { throw std::runtime_error("expert plan: " + what); }

ExpertSet expert_set_from_json(const nlohmann::json& j, const ModelShape& m, const std::string& where) {
  if (!j.is_array() || j.size() != static_cast<size_t>(m.n_layer))
    bad(fmt::format("{} must list the experts of each of the {} layers", where, m.n_layer));
  ExpertSet s(m.n_layer);
  for (int l = 0; l < m.n_layer; ++l) {
    const auto& L = j[l];
    if (!L.is_array() || L.empty() || L.size() > static_cast<size_t>(m.n_expert))
      bad(fmt::format("{}[{}] must be a non-empty array of at most {} experts", where, l, m.n_expert));
    std::set<int> seen;
    for (const auto& e : L) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= m.n_expert)
        bad(fmt::format("{}[{}] has {}, not an expert 0..{}", where, l, e.dump(), m.n_expert - 1));
      if (!seen.insert(e.get<int>()).second) bad(fmt::format("{}[{}] lists expert {} twice", where, l, e.get<int>()));
    }
    s[l].assign(seen.begin(), seen.end());
  }
  return s;
}

double number(const nlohmann::json& j, const char* key, double lo, double hi, const std::string& where) {
  if (!j.contains(key) || !j[key].is_number()) bad(fmt::format("{}.{} must be a number", where, key));
  double v = j[key].get<double>();
  if (!(v >= lo && v <= hi)) bad(fmt::format("{}.{} is {}, outside {}..{}", where, key, v, lo, hi));
  return v;
}
}  // namespace

nlohmann::json MoePlan::to_json() const {
  nlohmann::json tried_j = nlohmann::json::array();
  for (const auto& t : tried) {
    nlohmann::json q = nlohmann::json::array();
    for (const auto& sq : t.quality) q.push_back(sq.to_json(gate));
    std::vector<size_t> sizes;
    for (const auto& s : t.grouping.shards) {
      size_t n = 0;
      for (const auto& l : s) n += l.size();
      sizes.push_back(n);
    }
    tried_j.push_back({{"core", t.grouping.core}, {"passes", t.passes}, {"experts_per_shard", sizes}, {"shards", q}});
  }
  nlohmann::json shards_j = nlohmann::json::array();
  const auto& ch = chosen();
  for (size_t i = 0; i < ch.grouping.shards.size(); ++i) {
    nlohmann::json cov = nlohmann::json::array();
    for (size_t j = 0; j < ch.grouping.shards.size(); ++j)
      cov.push_back(std::round(coverage(ch.grouping.shards[i], ch.grouping.shards[j]) * 1e4) / 1e4);
    size_t n = 0;
    for (const auto& l : ch.grouping.shards[i]) n += l.size();
    nlohmann::json s = {{"index", i},
                        {"experts", expert_set_json(ch.grouping.shards[i])},
                        {"expert_count", n},
                        {"covers", cov},
                        {"bytes", i < shard_bytes.size() ? shard_bytes[i] : 0}};
    if (i < ch.quality.size()) s["quality"] = ch.quality[i].to_json(gate);
    shards_j.push_back(std::move(s));
  }
  bool keeps = ch.grouping.shards.size() > 1;
  for (size_t i = 0; i < ch.grouping.shards.size() && keeps; ++i)
    keeps = covers_all_without(ch.grouping.shards, i, model.n_expert);
  return {{"format", "llmesh-moe-plan"},
          {"version", 1},
          {"digest", digest()},
          {"model", {{"name", model.name}, {"fingerprint", model.fingerprint}, {"n_layer", model.n_layer},
                     {"n_expert", model.n_expert}, {"n_expert_used", model.n_expert_used}, {"bytes", model_bytes}}},
          {"nodes", nodes},
          {"overlap", overlap},
          {"core", ch.grouping.core},
          {"passes", passes()},
          {"coverage_after_losing_any_node", keeps},
          {"gate", gate.to_json()},
          {"calibration", {{"tokens", calibration_tokens}, {"sequences", calibration_sequences}}},
          {"tried", tried_j},
          {"shards", shards_j}};
}

MoePlan MoePlan::from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("format") || !j["format"].is_string() || j["format"] != "llmesh-moe-plan")
    bad("not a plan file (\"format\" is not \"llmesh-moe-plan\")");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int64_t>() != 1)
    bad("unsupported \"version\" (this llmesh reads version 1)");
  if (!j.contains("model") || !j["model"].is_object()) bad("'model' must be an object");
  const auto& m = j["model"];
  MoePlan p;
  p.model.name = m.contains("name") && m["name"].is_string() ? m["name"].get<std::string>() : "";
  if (m.contains("fingerprint") && m["fingerprint"].is_string() && m["fingerprint"].get_ref<const std::string&>().size() <= 64)
    p.model.fingerprint = m["fingerprint"];
  p.model.n_layer = static_cast<int>(number(m, "n_layer", 1, 100000, "model"));
  p.model.n_expert = static_cast<int>(number(m, "n_expert", 1, 4096, "model"));
  p.model.n_expert_used = static_cast<int>(number(m, "n_expert_used", 1, p.model.n_expert, "model"));
  if (m.contains("bytes") && m["bytes"].is_number_unsigned()) p.model_bytes = m["bytes"].get<uint64_t>();
  p.nodes = static_cast<int>(number(j, "nodes", 1, 4096, "plan"));
  p.overlap = static_cast<int>(number(j, "overlap", 1, p.nodes, "plan"));
  if (j.contains("gate") && j["gate"].is_object()) {
    p.gate.max_kl = number(j["gate"], "max_kl", 0, 1e9, "gate");
    p.gate.min_top1 = number(j["gate"], "min_top1", 0, 1, "gate");
    p.gate.max_ppl_increase = number(j["gate"], "max_ppl_increase", 0, 1e9, "gate");
  }
  if (!j.contains("shards") || !j["shards"].is_array() || j["shards"].size() != static_cast<size_t>(p.nodes))
    bad(fmt::format("'shards' must be an array of {} shards (one per node)", p.nodes));
  TriedGrouping t;
  t.grouping.core = static_cast<int>(number(j, "core", 0, p.model.n_expert, "plan"));
  t.passes = j.contains("passes") && j["passes"].is_boolean() && j["passes"].get<bool>();
  for (size_t i = 0; i < j["shards"].size(); ++i) {
    const auto& s = j["shards"][i];
    if (!s.is_object()) bad(fmt::format("shards[{}] must be an object", i));
    if (!s.contains("experts")) bad(fmt::format("shards[{}].experts is missing", i));
    t.grouping.shards.push_back(expert_set_from_json(s["experts"], p.model, fmt::format("shards[{}].experts", i)));
    p.shard_bytes.push_back(s.contains("bytes") && s["bytes"].is_number_unsigned() ? s["bytes"].get<uint64_t>() : 0);
    if (s.contains("quality") && s["quality"].is_object()) {
      ShardQuality q;
      const auto& qj = s["quality"];
      const std::string w = fmt::format("shards[{}].quality", i);
      q.kl = number(qj, "kl", 0, 1e9, w);
      q.kl_max = number(qj, "kl_max", 0, 1e9, w);
      q.top1 = number(qj, "top1", 0, 1, w);
      q.ppl = number(qj, "perplexity", 0, 1e300, w);
      q.ppl_full = number(qj, "perplexity_full", 0, 1e300, w);
      q.positions = static_cast<int64_t>(number(qj, "positions", 0, 1e15, w));
      t.quality.push_back(q);
    }
  }
  // "passes" is believed only when the figures stored for every shard pass the stored gate (or
  // every node holds every expert), so editing the verdict alone does not make a plan servable.
  if (t.passes && t.grouping.core < p.model.n_expert) {
    const bool figures = t.quality.size() == t.grouping.shards.size() &&
                         std::all_of(t.quality.begin(), t.quality.end(),
                                     [&](const ShardQuality& q) { return q.positions > 0 && q.passes(p.gate); });
    if (!figures) bad("\"passes\" is true but the shards' quality figures do not pass the gate");
  }
  p.tried.push_back(std::move(t));
  if (j.contains("digest") && j["digest"].is_string() && j["digest"].get<std::string>() != p.digest())
    bad("'digest' does not match the shards (the file was edited or damaged)");
  if (j.contains("calibration") && j["calibration"].is_object()) {
    p.calibration_tokens = static_cast<int64_t>(number(j["calibration"], "tokens", 0, 1e15, "calibration"));
    p.calibration_sequences = static_cast<int64_t>(number(j["calibration"], "sequences", 0, 1e15, "calibration"));
  }
  return p;
}

MoePlan MoePlan::read(const std::string& path) {
  return read_json_file(path, "the plan file", [](const nlohmann::json& j) { return from_json(j); });
}

void MoePlan::write(const std::string& path) const { write_json_file(path, to_json()); }

namespace {
uint64_t view_bytes(const kernels::MatView& v) { return static_cast<uint64_t>(v.row_bytes) * static_cast<uint64_t>(v.rows); }
}  // namespace

MoePlan plan_experts(const Model& model, ThreadPool& pool, const ExpertProfile& profile, const CalibrationSet& eval,
                     const PlanOptions& opt, const std::function<void(const std::string&)>& progress) {
  const ModelShape shape = ModelShape::of(model);
  shape.check_matches(profile.model, "the ranking file");
  MoePlan plan;
  plan.model = shape;
  plan.nodes = opt.nodes;
  plan.overlap = opt.overlap > 0 ? opt.overlap : std::min(2, opt.nodes);
  plan.gate = opt.gate;
  plan.calibration_tokens = eval.tokens();
  plan.calibration_sequences = static_cast<int64_t>(eval.sequences.size());
  const int NE = shape.n_expert;
  // Cores to try: the given one, or 0 upward (steps of NE/16 for many experts) to all of them.
  std::vector<int> cores;
  if (opt.core >= 0) {
    cores.push_back(opt.core);
  } else {
    const int step = std::max(1, NE / 16);
    for (int c = 0; c < NE; c += step) cores.push_back(c);
    cores.push_back(NE);
  }
  for (int core : cores) {
    TriedGrouping t;
    try {
      t.grouping = deal_experts(profile, plan.nodes, plan.overlap, core);
    } catch (const std::invalid_argument& e) {
      if (opt.core >= 0) throw;
      continue;  // this core leaves some node without an expert of a layer: a larger one may not
    }
    if (core == NE) {
      // Every node holds the whole model: identical to it.
      for (size_t i = 0; i < t.grouping.shards.size(); ++i) {
        ShardQuality q;
        t.quality.push_back(q);
      }
      t.passes = true;
    } else {
      t.quality = evaluate_shards(model, pool, eval, t.grouping.shards);
      t.passes = std::all_of(t.quality.begin(), t.quality.end(),
                             [&](const ShardQuality& q) { return q.passes(plan.gate); });
    }
    if (progress) {
      std::string worst;
      for (size_t i = 0; i < t.quality.size(); ++i)
        if (!t.quality[i].passes(plan.gate)) worst += fmt::format("; shard {}: {}", i, t.quality[i].failures(plan.gate));
      size_t n = 0;
      for (const auto& l : t.grouping.shards[0]) n += l.size();
      progress(fmt::format("core {} ({} of {} experts per layer on node 0): {}{}", core,
                           n / static_cast<size_t>(shape.n_layer), NE, t.passes ? "passes" : "fails", worst));
    }
    const bool pass = t.passes;
    plan.tried.push_back(std::move(t));
    if (pass) break;
  }
  if (plan.tried.empty()) throw std::runtime_error("no grouping could be made for these options");
  // Bytes each shard maps: every tensor of the file but the experts it does not hold.
  uint64_t total = 0;
  for (const auto& t : model.file().tensors()) total += t.nbytes;
  plan.model_bytes = total;
  for (const auto& s : plan.shards()) {
    uint64_t bytes = total;
    for (int l = 0; l < shape.n_layer; ++l) {
      const LayerWeights& w = model.layer(l);
      for (int e = 0; e < NE; ++e)
        if (!std::binary_search(s[l].begin(), s[l].end(), e))
          bytes -= view_bytes(w.experts[e].gate) + view_bytes(w.experts[e].up) + view_bytes(w.experts[e].down);
    }
    plan.shard_bytes.push_back(bytes);
  }
  return plan;
}

}  // namespace llmesh::moe
