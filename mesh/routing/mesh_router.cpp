#include "routing/mesh_router.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace llmesh::mesh {
namespace routing {

bool serves_whole(const gossip::ModelInfo& m) {
  if (m.entry) return true;  // through a pipeline of stages
  if (m.total_layers == 0) return true;
  return m.loaded.first == 0 && m.loaded.last >= m.total_layers;
}

bool answers_to(const gossip::ModelInfo& m, const std::string& name) {
  if (m.name == name) return true;
  return std::find(m.aliases.begin(), m.aliases.end(), name) != m.aliases.end();
}

double load_ratio(const gossip::Load& l) {
  return (static_cast<double>(l.active_requests) + static_cast<double>(l.queued)) /
         std::max<double>(1.0, static_cast<double>(l.parallel_slots));
}

bool overloaded(const gossip::Load& l, const MeshRouterOptions& opt) {
  return l.queued > 0 && load_ratio(l) >= opt.overload_ratio;
}

uint64_t rendezvous_weight(const std::string& key, const NodeId& node) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  auto mix = [&](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
  for (unsigned char c : key) mix(c);
  mix(0);
  for (uint8_t b : node.bytes) mix(b);
  // splitmix64 finalizer: FNV's low bits alone are poorly spread.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

namespace {
bool eligible(const RouteTarget& t, const std::optional<NodeId>& self) {
  return t.state.role == gossip::Role::server && !(self && t.id == *self);
}
}  // namespace

std::vector<RouteTarget> order_targets(std::vector<RouteTarget> targets, const std::string& model,
                                       const std::string& session_key, const MeshRouterOptions& opt,
                                       const std::optional<NodeId>& self) {
  std::vector<RouteTarget> serving;
  for (auto& t : targets) {
    if (!eligible(t, self)) continue;
    if (std::any_of(serving.begin(), serving.end(), [&](const RouteTarget& s) { return s.id == t.id; })) continue;
    for (const auto& m : t.state.models)
      if (answers_to(m, model) && serves_whole(m)) {
        serving.push_back(std::move(t));
        break;
      }
  }
  if (serving.empty()) return serving;
  for (const auto& t : serving)
    for (const auto& m : t.state.models)
      if (answers_to(m, model) && !m.experts.plan.empty()) return order_shards(std::move(serving), model, session_key, opt);

  struct Ranked {
    size_t index;
    bool over;
    double score;
    uint64_t weight;
  };
  std::vector<Ranked> ranked;
  for (size_t i = 0; i < serving.size(); ++i) {
    const auto& t = serving[i];
    const auto rtt = t.rtt.value_or(opt.unknown_rtt);
    const double latency = static_cast<double>(rtt.count()) / static_cast<double>(std::max<int64_t>(1, opt.latency_unit.count()));
    ranked.push_back({i, overloaded(t.state.load, opt), load_ratio(t.state.load) + latency,
                      rendezvous_weight(session_key, t.id)});
  }
  // The sticky node: the highest weight among the nodes not overloaded.
  auto sticky = ranked.end();
  for (auto it = ranked.begin(); it != ranked.end(); ++it)
    if (!it->over && (sticky == ranked.end() || it->weight > sticky->weight ||
                      (it->weight == sticky->weight && serving[it->index].id < serving[sticky->index].id)))
      sticky = it;
  if (sticky != ranked.end()) std::iter_swap(ranked.begin(), sticky);
  auto rest = sticky != ranked.end() ? ranked.begin() + 1 : ranked.begin();
  std::sort(rest, ranked.end(), [&](const Ranked& a, const Ranked& b) {
    if (a.over != b.over) return !a.over;
    if (a.score != b.score) return a.score < b.score;
    if (a.weight != b.weight) return a.weight > b.weight;
    return serving[a.index].id < serving[b.index].id;
  });
  std::vector<RouteTarget> out;
  out.reserve(ranked.size());
  for (const auto& r : ranked) out.push_back(std::move(serving[r.index]));
  return out;
}

uint32_t home_shard(const std::string& session_key, const std::string& plan, uint32_t count) {
  uint32_t best = 0;
  uint64_t best_w = 0;
  for (uint32_t i = 0; i < count; ++i) {
    // The shard (plan digest and index) is the rendezvous item, in place of a node id.
    const uint64_t w = rendezvous_weight(session_key + "|" + plan + "#" + std::to_string(i), NodeId{});
    if (i == 0 || w > best_w) {
      best = i;
      best_w = w;
    }
  }
  return best;
}

std::vector<RouteTarget> order_shards(std::vector<RouteTarget> serving, const std::string& model,
                                      const std::string& session_key, const MeshRouterOptions& opt) {
  auto info = [&](const RouteTarget& t) -> const gossip::ModelInfo* {
    for (const auto& m : t.state.models)
      if (answers_to(m, model) && serves_whole(m)) return &m;
    return nullptr;
  };
  // The plan most nodes follow (ties: the smaller digest), and the shard count most of its nodes
  // report (a digest covers its shards, so one node claiming another count is wrong or lying).
  std::map<std::string, std::map<uint32_t, int>> plans;  // digest -> shard count -> nodes
  for (const auto& t : serving)
    if (const auto* m = info(t); m && !m->experts.plan.empty()) ++plans[m->experts.plan][m->experts.count];
  std::string plan;
  uint32_t count = 0;
  int most = 0;
  for (const auto& [digest, counts] : plans) {
    int nodes = 0, best = 0;
    uint32_t c = 0;
    for (const auto& [n, k] : counts) {
      nodes += k;
      if (k > best) {
        best = k;
        c = n;
      }
    }
    if (nodes > most) {
      most = nodes;
      plan = digest;
      count = c;
    }
  }
  const uint32_t home = count > 0 ? home_shard(session_key, plan, count) : 0;
  struct Ranked {
    size_t index;
    bool over;
    int klass;      // 0 home shard, 1 whole model, 2 other shard of the plan, 3 another plan
    int covers;     // per-mille of the home shard's experts held
    uint64_t weight;  // rendezvous weight of (session, node): the same order from every entry
  };
  std::vector<Ranked> ranked;
  for (size_t i = 0; i < serving.size(); ++i) {
    const auto& t = serving[i];
    const auto* m = info(t);
    Ranked r{i, overloaded(t.state.load, opt), 3, 0, rendezvous_weight(session_key, t.id)};
    if (m && m->experts.plan.empty()) {
      r.klass = 1;
      r.covers = 1000;
    } else if (m && m->experts.plan == plan) {
      r.klass = m->experts.index == home ? 0 : 2;
      r.covers = m->experts.index == home ? 1000 : home < m->experts.covers.size() ? m->experts.covers[home] : 0;
    }
    ranked.push_back(r);
  }
  std::sort(ranked.begin(), ranked.end(), [&](const Ranked& a, const Ranked& b) {
    if (a.over != b.over) return !a.over;
    if (a.klass != b.klass) return a.klass < b.klass;
    if (a.covers != b.covers) return a.covers > b.covers;
    if (a.weight != b.weight) return a.weight > b.weight;
    return serving[a.index].id < serving[b.index].id;
  });
  std::vector<RouteTarget> out;
  out.reserve(ranked.size());
  for (const auto& r : ranked) out.push_back(std::move(serving[r.index]));
  return out;
}

std::vector<api::RemoteModel> mesh_models(const std::vector<RouteTarget>& targets, const std::optional<NodeId>& self) {
  struct Acc {
    api::RemoteModel m;
    std::vector<NodeId> nodes;
  };
  std::map<std::string, Acc> by_name;
  for (const auto& t : targets) {
    if (!eligible(t, self)) continue;
    for (const auto& mi : t.state.models) {
      if (!serves_whole(mi)) continue;
      std::vector<std::string> names{mi.name};
      names.insert(names.end(), mi.aliases.begin(), mi.aliases.end());
      for (const auto& n : names) {
        if (n.empty()) continue;
        Acc& a = by_name[n];
        a.m.id = n;
        if (std::find(a.nodes.begin(), a.nodes.end(), t.id) != a.nodes.end()) continue;
        a.nodes.push_back(t.id);
        if (mi.context_length > 0 && (a.m.context_length == 0 || static_cast<int>(mi.context_length) < a.m.context_length))
          a.m.context_length = static_cast<int>(std::min<uint32_t>(mi.context_length, INT32_MAX));
        if (mi.created > 0 && (a.m.created == 0 || mi.created < a.m.created)) a.m.created = mi.created;
      }
    }
  }
  std::vector<api::RemoteModel> out;
  for (auto& [name, a] : by_name) {
    a.m.nodes = static_cast<int>(a.nodes.size());
    out.push_back(a.m);
  }
  return out;
}

}  // namespace routing

MeshRouter::MeshRouter(Transport& transport, Snapshot snapshot, MeshRouterOptions opt)
    : transport_(transport), snapshot_(std::move(snapshot)), opt_(opt) {}

std::vector<api::RemoteModel> MeshRouter::models() { return routing::mesh_models(snapshot_(), transport_.id()); }

std::shared_ptr<api::Upstream> MeshRouter::upstream_to(const RouteTarget& t) {
  std::string where = t.state.api_address.empty() ? t.state.mesh_address : t.state.api_address;
  std::string describe = where.empty() ? fmt::format("node {}", t.id.short_hex())
                                       : fmt::format("node {} at {}", t.id.short_hex(), where);
  return std::make_shared<StreamUpstream>(transport_, t.id, std::move(describe), opt_.upstream);
}

std::vector<std::shared_ptr<api::Upstream>> MeshRouter::candidates(const std::string& model,
                                                                   const std::string& session_key) {
  std::vector<std::shared_ptr<api::Upstream>> out;
  for (auto& t : routing::order_targets(snapshot_(), model, session_key, opt_, transport_.id()))
    out.push_back(upstream_to(t));
  return out;
}

std::vector<std::shared_ptr<api::Upstream>> MeshRouter::shard_candidates(const std::string& model,
                                                                         const std::string& session_key) {
  if (!self_) return {nullptr};
  std::vector<RouteTarget> targets = snapshot_();
  const NodeId me = transport_.id();
  std::erase_if(targets, [&](const RouteTarget& t) { return t.id == me; });
  RouteTarget self{me, self_(), std::chrono::microseconds(0)};
  self.state.role = gossip::Role::server;
  targets.push_back(std::move(self));
  std::vector<std::shared_ptr<api::Upstream>> out;
  bool has_self = false;
  for (auto& t : routing::order_targets(std::move(targets), model, session_key, opt_)) {
    if (t.id == me) {
      out.push_back(nullptr);
      has_self = true;
    } else {
      out.push_back(upstream_to(t));
    }
  }
  if (!has_self) out.push_back(nullptr);  // never lose a request: this node answers last
  return out;
}

}  // namespace llmesh::mesh
