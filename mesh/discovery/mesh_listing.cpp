#include "discovery/mesh_listing.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>

#include <boost/asio.hpp>
#include <fmt/format.h>

namespace llmesh::mesh::discovery {

using nlohmann::json;
namespace asio = boost::asio;

namespace {

// Reads content fields, naming the one that is wrong.
struct Fields {
  const json& j;
  std::string where;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ListingError(fmt::format("{}{}: {}", where, key, what));
  }
  const json* get(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  std::string text(const char* key, size_t max_chars, bool required = false) const {
    const json* v = get(key);
    if (!v) {
      if (required) fail(key, "missing");
      return {};
    }
    if (!v->is_string()) fail(key, "must be a string");
    const auto& s = v->get_ref<const std::string&>();
    if (s.size() > max_chars) fail(key, fmt::format("longer than {} characters", max_chars));
    return s;
  }
  uint32_t count(const char* key, uint32_t max = 1u << 24) const {
    const json* v = get(key);
    if (!v) return 0;
    if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > max)
      fail(key, fmt::format("must be an integer in 0..{}", max));
    return static_cast<uint32_t>(v->get<int64_t>());
  }
  double number(const char* key, double max) const {
    const json* v = get(key);
    if (!v) return 0;
    if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() < 0 || v->get<double>() > max)
      fail(key, fmt::format("must be a number in 0..{}", max));
    return v->get<double>();
  }
  const json& array(const char* key, size_t max_items) const {
    static const json empty = json::array();
    const json* v = get(key);
    if (!v) return empty;
    if (!v->is_array()) fail(key, "must be an array");
    if (v->size() > max_items) fail(key, fmt::format("more than {} entries", max_items));
    return *v;
  }
  const json& object(const char* key) const {
    static const json empty = json::object();
    const json* v = get(key);
    if (!v) return empty;
    if (!v->is_object()) fail(key, "must be an object");
    return *v;
  }
};

void check_text(const std::string& s, size_t max, const char* what) {
  if (s.size() > max) throw ListingError(fmt::format("{} is longer than {} characters", what, max));
}

}  // namespace

bool MeshListing::serves(std::string_view model) const {
  return std::any_of(models.begin(), models.end(), [&](const ListingModel& m) { return m.name == model; });
}

bool MeshListing::wants(std::string_view model) const {
  return std::find(wanted.begin(), wanted.end(), model) != wanted.end();
}

json MeshListing::to_content() const {
  check_text(name, kMaxMeshNameChars, "the mesh name");
  check_text(region, kMaxRegionChars, "the region");
  if (nodes.size() > kMaxListingNodes) throw ListingError("more than 16 nodes in a listing");
  if (models.size() > kMaxListingModels || wanted.size() > kMaxListingModels)
    throw ListingError("more than 64 models in a listing");
  json ns = json::array();
  for (const auto& n : nodes) {
    if (!invite::valid_address(n.address)) throw ListingError("not a host:port address: " + n.address);
    ns.push_back({{"address", n.address}, {"node_id", invite::to_hex(n.node_id)}});
  }
  json ms = json::array();
  for (const auto& m : models) {
    check_text(m.name, kMaxModelNameChars, "a model name");
    ms.push_back({{"name", m.name}, {"nodes", m.nodes}, {"context_length", m.context_length}});
  }
  for (const auto& w : wanted) check_text(w, kMaxModelNameChars, "a wanted model name");
  json j = {{"v", kListingVersion},
            {"mesh_id", mesh_id_hex()},
            {"public", is_public},
            {"nodes", ns},
            {"models", ms},
            {"wanted", wanted},
            {"capacity",
             {{"nodes", capacity.nodes},
              {"servers", capacity.servers},
              {"clients", capacity.clients},
              {"slots", capacity.slots},
              {"free_slots", capacity.free_slots},
              {"tokens_per_second", std::round(capacity.tokens_per_second * 10) / 10}}},
            {"limits", {{"requests_per_minute", requests_per_minute}, {"concurrent", concurrent}}}};
  if (!name.empty()) j["name"] = name;
  if (!region.empty()) j["region"] = region;
  if (!software.empty()) j["software"] = software;
  return j;
}

MeshListing MeshListing::from_content(const json& j) {
  if (!j.is_object()) throw ListingError("the content is not a JSON object");
  Fields f{j, ""};
  const json* v = f.get("v");
  if (!v || !v->is_number_integer()) f.fail("v", "missing or not a version number");
  if (v->get<int64_t>() != kListingVersion)
    f.fail("v", fmt::format("version {} is not read by this llmesh (it reads {})", v->get<int64_t>(), kListingVersion));
  MeshListing l;
  if (!invite::from_hex(f.text("mesh_id", 32, true), l.mesh_id)) f.fail("mesh_id", "must be 32 hex digits");
  l.name = f.text("name", kMaxMeshNameChars);
  l.region = f.text("region", kMaxRegionChars);
  l.software = f.text("software", 64);
  const json* pub = f.get("public");
  if (pub && !pub->is_boolean()) f.fail("public", "must be true or false");
  l.is_public = pub && pub->get<bool>();
  const json& ns = f.array("nodes", kMaxListingNodes);
  for (size_t i = 0; i < ns.size(); ++i) {
    if (!ns[i].is_object()) f.fail(fmt::format("nodes[{}]", i).c_str(), "must be an object");
    Fields n{ns[i], fmt::format("nodes[{}].", i)};
    invite::InviteNode node;
    node.address = n.text("address", invite::kMaxAddressChars, true);
    if (!invite::valid_address(node.address)) n.fail("address", "not a host:port address");
    if (!invite::from_hex(n.text("node_id", 64, true), node.node_id)) n.fail("node_id", "must be 64 hex digits");
    l.nodes.push_back(std::move(node));
  }
  const json& ms = f.array("models", kMaxListingModels);
  for (size_t i = 0; i < ms.size(); ++i) {
    if (!ms[i].is_object()) f.fail(fmt::format("models[{}]", i).c_str(), "must be an object");
    Fields m{ms[i], fmt::format("models[{}].", i)};
    ListingModel model;
    model.name = m.text("name", kMaxModelNameChars, true);
    model.nodes = m.count("nodes");
    model.context_length = m.count("context_length");
    l.models.push_back(std::move(model));
  }
  const json& ws = f.array("wanted", kMaxListingModels);
  for (size_t i = 0; i < ws.size(); ++i) {
    if (!ws[i].is_string() || ws[i].get_ref<const std::string&>().size() > kMaxModelNameChars)
      f.fail(fmt::format("wanted[{}]", i).c_str(), "must be a model name");
    l.wanted.push_back(ws[i].get<std::string>());
  }
  Fields c{f.object("capacity"), "capacity."};
  l.capacity.nodes = c.count("nodes");
  l.capacity.servers = c.count("servers");
  l.capacity.clients = c.count("clients");
  l.capacity.slots = c.count("slots");
  l.capacity.free_slots = c.count("free_slots");
  l.capacity.tokens_per_second = c.number("tokens_per_second", 1e9);
  Fields lim{f.object("limits"), "limits."};
  l.requests_per_minute = lim.count("requests_per_minute");
  l.concurrent = lim.count("concurrent");
  return l;
}

NostrEvent make_listing_event(const MeshListing& l, int64_t now, int64_t ttl_s) {
  NostrEvent e;
  e.kind = kListingKind;
  e.created_at = now;
  e.tags = {{"d", std::string(kListingDPrefix) + l.mesh_id_hex()},
            {"t", std::string(kListingTopic)},
            {"expiration", std::to_string(now + ttl_s)}};
  e.content = l.to_content().dump();
  return e;
}

ListingRead listing_from_event(const NostrEvent& e, int64_t now) {
  ListingRead r;
  auto refuse = [&](const char* reason, std::string error) {
    r.reason = reason;
    r.error = std::move(error);
    return r;
  };
  if (e.kind != kListingKind || e.tag_value("t") != std::string(kListingTopic))
    return refuse("not_a_listing", fmt::format("event {} is not an llmesh listing", e.id.substr(0, 8)));
  auto exp = e.tag_value("expiration");
  int64_t expires = 0;
  try {
    size_t used = 0;
    if (exp) expires = std::stoll(*exp, &used);
    if (exp && used != exp->size()) expires = 0;
  } catch (const std::exception&) {
    expires = 0;
  }
  if (expires <= 0)
    return refuse("expired", fmt::format("listing {} has no valid expiration tag", e.id.substr(0, 8)));
  if (expires <= now)
    return refuse("expired", fmt::format("listing {} expired {} s ago", e.id.substr(0, 8), now - expires));
  if (e.created_at > now + kMaxClockSkewS)
    return refuse("from_future", fmt::format("listing {} is dated {} s ahead", e.id.substr(0, 8), e.created_at - now));
  json content = json::parse(e.content, nullptr, false);
  try {
    MeshListing l = MeshListing::from_content(content);
    if (e.tag_value("d") != std::string(kListingDPrefix) + l.mesh_id_hex())
      return refuse("mismatched_mesh",
                    fmt::format("listing {}: its \"d\" tag does not name its mesh {}", e.id.substr(0, 8),
                                l.mesh_id_hex().substr(0, 8)));
    l.publisher = e.pubkey;
    l.event_id = e.id;
    l.created_at = e.created_at;
    l.expires = expires;
    r.listing = std::move(l);
  } catch (const ListingError& err) {
    return refuse("bad_content", fmt::format("listing {}: {}", e.id.substr(0, 8), err.what()));
  }
  return r;
}

json listing_filter(size_t limit) {
  return {{"kinds", {kListingKind}}, {"#t", {std::string(kListingTopic)}}, {"limit", limit}};
}

std::vector<FoundMesh> merge_listings(const std::vector<std::pair<MeshListing, std::string>>& in) {
  // Newest listing per (mesh, publisher), remembering every relay it came from.
  std::map<std::pair<std::string, std::string>, std::pair<MeshListing, std::set<std::string>>> latest;
  for (const auto& [l, relay] : in) {
    auto key = std::make_pair(l.mesh_id_hex(), l.publisher);
    auto it = latest.find(key);
    if (it == latest.end()) {
      latest.emplace(key, std::make_pair(l, std::set<std::string>{relay}));
      continue;
    }
    it->second.second.insert(relay);
    if (l.created_at > it->second.first.created_at) it->second.first = l;
  }
  std::map<std::string, std::vector<const std::pair<MeshListing, std::set<std::string>>*>> by_mesh;
  for (const auto& [key, v] : latest) by_mesh[key.first].push_back(&v);
  std::vector<FoundMesh> out;
  for (auto& [mesh, ls] : by_mesh) {
    std::sort(ls.begin(), ls.end(), [](auto* a, auto* b) {
      if (a->first.created_at != b->first.created_at) return a->first.created_at > b->first.created_at;
      return a->first.publisher < b->first.publisher;
    });
    FoundMesh f;
    f.listing = ls.front()->first;
    std::set<std::string> relays;
    std::set<invite::NodeId> seen;
    for (auto* l : ls) {
      f.publishers.push_back(l->first.publisher);
      relays.insert(l->second.begin(), l->second.end());
      for (const auto& n : l->first.nodes)
        if (f.nodes.size() < kMaxListingNodes && seen.insert(n.node_id).second) f.nodes.push_back(n);
    }
    f.relays.assign(relays.begin(), relays.end());
    out.push_back(std::move(f));
  }
  return out;
}

void measure_latency(std::vector<FoundMesh>& meshes, std::chrono::milliseconds timeout) {
  asio::io_context io;
  struct Probe {
    FoundMesh* mesh;
    asio::ip::tcp::socket socket;
    asio::ip::tcp::resolver resolver;
    std::chrono::steady_clock::time_point start;
    Probe(FoundMesh* m, asio::io_context& io) : mesh(m), socket(io), resolver(io) {}
  };
  std::vector<std::shared_ptr<Probe>> probes;
  for (auto& m : meshes) {
    m.probed = true;
    m.reachable = 0;
    m.rtt_ms.reset();
    for (const auto& n : m.nodes) {
      auto colon = n.address.rfind(':');
      if (colon == std::string::npos) continue;
      std::string host = n.address.substr(0, colon);
      if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
      auto p = std::make_shared<Probe>(&m, io);
      p->start = std::chrono::steady_clock::now();
      probes.push_back(p);
      p->resolver.async_resolve(host, n.address.substr(colon + 1), [p](auto ec, auto results) {
        if (ec) return;
        asio::async_connect(p->socket, results, [p](auto ec2, const auto&) {
          if (ec2) return;
          double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - p->start).count();
          p->mesh->reachable++;
          if (!p->mesh->rtt_ms || ms < *p->mesh->rtt_ms) p->mesh->rtt_ms = ms;
          boost::system::error_code ignored;
          p->socket.close(ignored);
        });
      });
    }
  }
  asio::steady_timer deadline(io, timeout);
  deadline.async_wait([&](auto ec) {
    if (ec) return;
    for (auto& p : probes) {
      p->resolver.cancel();
      boost::system::error_code ignored;
      p->socket.close(ignored);
    }
  });
  // The deadline timer would keep run() going until it fires: stop as soon as every probe is
  // done (a probe's handlers hold a reference while it is in flight).
  auto all_done = [&] {
    return std::all_of(probes.begin(), probes.end(), [](const auto& p) { return p.use_count() == 1; });
  };
  while (!all_done() && io.run_one()) {
  }
}

void rank_meshes(std::vector<FoundMesh>& meshes, const MeshPreferences& p) {
  for (auto& m : meshes) {
    const MeshListing& l = m.listing;
    m.reasons.clear();
    m.score = 0;
    m.joinable = l.is_public && !m.nodes.empty() && (!m.probed || m.reachable > 0) &&
                 l.mesh_id_hex() != p.exclude_mesh;
    if (!l.is_public) m.reasons.push_back("private: ask a member for an invite");
    if (m.nodes.empty()) m.reasons.push_back("lists no node to connect to");
    if (m.probed && m.reachable == 0 && !m.nodes.empty()) m.reasons.push_back("no listed node answered");
    if (!p.exclude_mesh.empty() && l.mesh_id_hex() == p.exclude_mesh) m.reasons.push_back("this node's own mesh");
    if (!p.model.empty()) {
      if (p.server && l.wants(p.model)) {
        m.score += 1000;
        m.reasons.push_back("wants " + p.model);
      } else if (l.serves(p.model)) {
        m.score += p.server ? 500 : 1000;
        m.reasons.push_back("serves " + p.model);
      }
    } else if (!p.server && !l.models.empty()) {
      m.score += 500;
      m.reasons.push_back("serves a model");
    }
    if (!p.region.empty() && l.region == p.region) {
      m.score += 200;
      m.reasons.push_back("region " + l.region);
    }
    if (!p.server && l.capacity.free_slots > 0) {
      m.score += 100;
      m.reasons.push_back(fmt::format("{} free slots", l.capacity.free_slots));
    }
    m.score += 10 * std::log2(1 + std::max(0.0, l.capacity.tokens_per_second));
    m.score += 10 * std::log2(1 + static_cast<double>(l.capacity.nodes));
    if (m.rtt_ms) {
      m.score -= std::min(1000.0, *m.rtt_ms);
      m.reasons.push_back(fmt::format("{:.1f} ms away", *m.rtt_ms));
    }
  }
  std::stable_sort(meshes.begin(), meshes.end(), [](const FoundMesh& a, const FoundMesh& b) {
    if (a.joinable != b.joinable) return a.joinable;
    if (a.score != b.score) return a.score > b.score;
    return a.listing.mesh_id_hex() < b.listing.mesh_id_hex();
  });
}

json found_mesh_json(const FoundMesh& m) {
  json j = m.listing.to_content();
  j.erase("v");
  json nodes = json::array();
  for (const auto& n : m.nodes) nodes.push_back({{"address", n.address}, {"node_id", invite::to_hex(n.node_id)}});
  j["nodes"] = nodes;
  j["publishers"] = m.publishers;
  j["relays"] = m.relays;
  j["updated"] = m.listing.created_at;
  j["expires"] = m.listing.expires;
  j["rtt_ms"] = m.rtt_ms ? json(std::round(*m.rtt_ms * 10) / 10) : json(nullptr);
  j["reachable_nodes"] = m.reachable;
  j["joinable"] = m.joinable;
  j["score"] = std::round(m.score * 10) / 10;
  j["reasons"] = m.reasons;
  return j;
}

}  // namespace llmesh::mesh::discovery
