#include "node/mesh_view.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace llmesh::mesh {

using nlohmann::json;

namespace {

// Typed reads that tolerate anything: the view never throws on an odd member record.
const json& field(const json& j, const char* key) {
  static const json null_value;
  if (!j.is_object()) return null_value;
  auto it = j.find(key);
  return it == j.end() ? null_value : *it;
}
std::string text(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}
double number(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_number() ? v.get<double>() : 0.0;
}
uint64_t count(const json& j, const char* key) {
  const json& v = field(j, key);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) return static_cast<uint64_t>(std::max<int64_t>(0, v.get<int64_t>()));
  if (v.is_number_float()) return static_cast<uint64_t>(std::max(0.0, v.get<double>()));
  return 0;
}
bool flag(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_boolean() && v.get<bool>();
}

bool live(const json& member) {
  const std::string s = text(member, "status");
  return s == "alive" || s == "suspect";
}

// [first, last) from a [a, b] pair; nullopt-like {0, 0} when malformed or empty.
std::pair<uint64_t, uint64_t> range_of(const json& v) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_unsigned() || !v[1].is_number_unsigned()) return {0, 0};
  uint64_t a = v[0].get<uint64_t>(), b = v[1].get<uint64_t>();
  return b > a ? std::make_pair(a, b) : std::make_pair(uint64_t{0}, uint64_t{0});
}

std::string short_id(const std::string& id) { return id.substr(0, 12); }

}  // namespace

void add_mesh_view(json& status) {
  const json& members = field(status, "members");
  std::vector<const json*> alive;
  if (members.is_array())
    for (const json& m : members)
      if (m.is_object() && live(m) && !text(m, "id").empty()) alive.push_back(&m);
  std::sort(alive.begin(), alive.end(), [](const json* a, const json* b) { return text(*a, "id") < text(*b, "id"); });

  // Links: this node's own measurements plus what every live member gossips about itself.
  std::string self_id;
  std::map<std::string, std::string> by_prefix;  // 16-character id prefix -> id
  for (const json* m : alive) {
    const std::string id = text(*m, "id");
    if (flag(*m, "self")) self_id = id;
    by_prefix[id.substr(0, 16)] = id;
  }
  std::map<std::pair<std::string, std::string>, std::vector<double>> rtts;
  auto add_link = [&](const std::string& a, const std::string& b, double ms) {
    if (a.empty() || b.empty() || a == b || !(ms >= 0) || ms > 3.6e6) return;
    rtts[a < b ? std::make_pair(a, b) : std::make_pair(b, a)].push_back(ms);
  };
  for (const json* m : alive) {
    const std::string id = text(*m, "id");
    if (!self_id.empty() && id != self_id && field(*m, "rtt_ms").is_number()) add_link(self_id, id, number(*m, "rtt_ms"));
    const json& links = field(field(*m, "state"), "links");
    if (!links.is_array()) continue;
    for (const json& l : links) {
      auto peer = by_prefix.find(text(l, "peer"));
      if (peer != by_prefix.end() && field(l, "rtt_ms").is_number()) add_link(id, peer->second, number(l, "rtt_ms"));
    }
  }
  json links = json::array();
  for (const auto& [pair, v] : rtts) {
    double sum = 0;
    for (double x : v) sum += x;
    links.push_back({{"from", pair.first}, {"to", pair.second}, {"rtt_ms", std::round(sum / v.size() * 1000) / 1000}});
  }

  // Placement: per model name, the layer ranges and expert groups of the live members.
  struct ModelPlacement {
    uint64_t total_layers = 0;
    json ranges = json::array();
    json groups = json::array();
    std::vector<std::pair<uint64_t, uint64_t>> held;
  };
  std::map<std::string, ModelPlacement> models;
  json totals = {{"nodes", alive.size()}, {"servers", 0}, {"clients", 0}, {"tokens_per_second", 0.0},
                 {"active_requests", 0}, {"queued", 0}, {"parallel_slots", 0}, {"requests_total", 0},
                 {"generated_tokens_total", 0}};
  uint64_t servers = 0, clients = 0, active = 0, queued = 0, slots = 0, requests = 0, generated = 0;
  double tps = 0;
  for (const json* m : alive) {
    const std::string id = text(*m, "id");
    const json& st = field(*m, "state");
    if (!st.is_object()) continue;
    (text(st, "role") == "client" ? clients : servers)++;
    const json& load = field(st, "load");
    tps += number(load, "tokens_per_second");
    active += count(load, "active_requests");
    queued += count(load, "queued");
    slots += count(load, "parallel_slots");
    requests += count(load, "requests_total");
    generated += count(load, "generated_tokens_total");
    const json& mds = field(st, "models");
    if (!mds.is_array()) continue;
    for (const json& md : mds) {
      const std::string name = text(md, "name");
      if (name.empty()) continue;
      ModelPlacement& p = models[name];
      p.total_layers = std::max(p.total_layers, count(md, "total_layers"));
      auto [a, b] = range_of(field(md, "layers_loaded"));
      if (b > a) {
        p.ranges.push_back({{"node", id}, {"first", a}, {"last", b}, {"entry", flag(md, "entry")}});
        p.held.emplace_back(a, b);
      }
      const json& ex = field(md, "expert_shard");
      if (ex.is_object())
        p.groups.push_back({{"node", id}, {"index", count(ex, "index")}, {"count", count(ex, "count")},
                            {"plan", text(ex, "plan")}});
    }
  }
  json placement = json::array();
  for (auto& [name, p] : models) {
    // Layers of [0, total) nobody live holds: a split model cannot answer until they are.
    json missing = json::array();
    std::sort(p.held.begin(), p.held.end());
    uint64_t covered = 0;
    for (auto [a, b] : p.held) {
      if (a > covered && covered < p.total_layers) missing.push_back({covered, std::min(a, p.total_layers)});
      covered = std::max(covered, b);
    }
    if (covered < p.total_layers) missing.push_back({covered, p.total_layers});
    placement.push_back({{"model", name}, {"total_layers", p.total_layers}, {"ranges", std::move(p.ranges)},
                         {"expert_groups", std::move(p.groups)}, {"missing", std::move(missing)}});
  }
  totals["servers"] = servers;
  totals["clients"] = clients;
  totals["tokens_per_second"] = std::round(tps * 10) / 10;
  totals["active_requests"] = active;
  totals["queued"] = queued;
  totals["parallel_slots"] = slots;
  totals["requests_total"] = requests;
  totals["generated_tokens_total"] = generated;
  status["links"] = std::move(links);
  status["placement"] = std::move(placement);
  status["totals"] = std::move(totals);
}

std::string prometheus_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string mesh_metrics_text(const json& status) {
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  auto sample = [&](const char* name, const std::string& labels, double v) {
    out += labels.empty() ? fmt::format("{} {}\n", name, v) : fmt::format("{}{{{}}} {}\n", name, labels, v);
  };
  const json& members = field(status, "members");
  std::map<std::string, int> by_status = {{"alive", 0}, {"suspect", 0}, {"dead", 0}, {"left", 0}};
  std::vector<const json*> alive;
  if (members.is_array())
    for (const json& m : members) {
      if (!m.is_object()) continue;
      const std::string s = text(m, "status");
      if (by_status.count(s)) by_status[s]++;
      if (live(m) && !text(m, "id").empty()) alive.push_back(&m);
    }
  std::sort(alive.begin(), alive.end(), [](const json* a, const json* b) { return text(*a, "id") < text(*b, "id"); });
  family("llmesh_mesh_members", "gauge", "Members of the mesh as this node sees them, by SWIM status");
  for (const auto& [s, n] : by_status) sample("llmesh_mesh_members", fmt::format("status=\"{}\"", s), n);

  auto node_label = [](const json& m) { return fmt::format("node=\"{}\"", prometheus_label(short_id(text(m, "id")))); };
  family("llmesh_node_info", "gauge", "A live member (1), with its role, addresses and software version");
  for (const json* m : alive) {
    const json& st = field(*m, "state");
    sample("llmesh_node_info",
           fmt::format("{},id=\"{}\",role=\"{}\",self=\"{}\",status=\"{}\",api_address=\"{}\",version=\"{}\"",
                       node_label(*m), prometheus_label(text(*m, "id")), prometheus_label(text(st, "role")),
                       flag(*m, "self") ? "true" : "false", prometheus_label(text(*m, "status")),
                       prometheus_label(text(st, "api_address")), prometheus_label(text(st, "software_version"))),
           1);
  }
  struct LoadSeries {
    const char* name;
    const char* type;
    const char* key;
    const char* help;
  };
  static const LoadSeries kLoad[] = {
      {"llmesh_node_tokens_per_second", "gauge", "tokens_per_second", "Tokens a member generates per second (recent)"},
      {"llmesh_node_active_requests", "gauge", "active_requests", "Requests holding a slot on a member"},
      {"llmesh_node_queued_requests", "gauge", "queued", "Requests waiting for a slot on a member"},
      {"llmesh_node_parallel_slots", "gauge", "parallel_slots", "Requests a member generates at once"},
      {"llmesh_node_requests_total", "counter", "requests_total", "Requests a member's scheduler finished"},
      {"llmesh_node_generated_tokens_total", "counter", "generated_tokens_total", "Tokens a member generated"},
  };
  for (const auto& s : kLoad) {
    family(s.name, s.type, s.help);
    for (const json* m : alive)
      if (field(*m, "state").is_object()) sample(s.name, node_label(*m), number(field(field(*m, "state"), "load"), s.key));
  }
  family("llmesh_node_rtt_seconds", "gauge", "Round trip from this node to a member (last ping)");
  for (const json* m : alive)
    if (field(*m, "rtt_ms").is_number()) sample("llmesh_node_rtt_seconds", node_label(*m), number(*m, "rtt_ms") / 1000);
  std::string layers, shards;
  for (const json* m : alive) {
    const json& mds = field(field(*m, "state"), "models");
    if (!mds.is_array()) continue;
    for (const json& md : mds) {
      auto [a, b] = range_of(field(md, "layers_loaded"));
      const std::string model = prometheus_label(text(md, "name"));
      if (b > a)
        layers += fmt::format("llmesh_node_model_layers{{{},model=\"{}\",first=\"{}\",last=\"{}\"}} {}\n",
                              node_label(*m), model, a, b, b - a);
      const json& ex = field(md, "expert_shard");
      if (ex.is_object())
        shards += fmt::format("llmesh_node_expert_shard{{{},model=\"{}\",index=\"{}\",count=\"{}\"}} 1\n",
                              node_label(*m), model, count(ex, "index"), count(ex, "count"));
    }
  }
  family("llmesh_node_model_layers", "gauge", "Layers of a model a member holds, with the range [first, last)");
  out += layers;
  family("llmesh_node_expert_shard", "gauge", "A member holds shard index of count of a model's experts (1)");
  out += shards;
  family("llmesh_link_rtt_seconds", "gauge", "Round trip between two live members (mean of both sides' measurements)");
  const json& links = field(status, "links");
  if (links.is_array())
    for (const json& l : links)
      sample("llmesh_link_rtt_seconds",
             fmt::format("from=\"{}\",to=\"{}\"", prometheus_label(short_id(text(l, "from"))),
                         prometheus_label(short_id(text(l, "to")))),
             number(l, "rtt_ms") / 1000);
  family("llmesh_model_missing_layers", "gauge", "Layers of a model no live member holds (a split model needs 0)");
  const json& placement = field(status, "placement");
  if (placement.is_array())
    for (const json& p : placement) {
      uint64_t missing = 0;
      const json& gaps = field(p, "missing");
      if (gaps.is_array())
        for (const json& g : gaps) {
          auto [a, b] = range_of(g);
          missing += b - a;
        }
      sample("llmesh_model_missing_layers", fmt::format("model=\"{}\"", prometheus_label(text(p, "model"))),
             double(missing));
    }
  const json& totals = field(status, "totals");
  family("llmesh_mesh_tokens_per_second", "gauge", "Tokens the live members generate per second, together");
  sample("llmesh_mesh_tokens_per_second", "", number(totals, "tokens_per_second"));
  const json& g = field(status, "gossip");
  family("llmesh_gossip_sent_bytes_total", "counter", "Gossip bytes this node sent (SWIM payload)");
  sample("llmesh_gossip_sent_bytes_total", "", number(g, "bytes_sent"));
  family("llmesh_gossip_received_bytes_total", "counter", "Gossip bytes this node received (SWIM payload)");
  sample("llmesh_gossip_received_bytes_total", "", number(g, "bytes_received"));
  family("llmesh_gossip_decode_errors_total", "counter", "Gossip messages this node refused as malformed");
  sample("llmesh_gossip_decode_errors_total", "", number(g, "decode_errors"));
  return out;
}

}  // namespace llmesh::mesh
