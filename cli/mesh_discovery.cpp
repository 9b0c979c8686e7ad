#include "cli/mesh_discovery.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "nostr_relay/nostr_relay.h"
#include "invite/invite_token.h"

namespace llmesh::cli {

using nlohmann::json;
namespace dsc = mesh::discovery;

namespace {

int64_t unix_now() { return invite::unix_now(); }

// Publishing again early is worth it when what a joiner ranks by has changed.
bool same_offer(const dsc::MeshListing& a, const dsc::MeshListing& b) {
  return a.models == b.models && a.wanted == b.wanted && a.nodes == b.nodes &&
         a.capacity.servers == b.capacity.servers && a.capacity.nodes == b.capacity.nodes;
}

}  // namespace

void add_discovery_options(CLI::App* sub, DiscoveryCliOptions& o, bool client) {
  const char* g = "Discovery (nostr)";
  sub->add_flag("--auto", o.auto_join,
                client ? "Join the best public mesh found on the relays (serving the --model wanted, nearby, with "
                         "free capacity), falling back to the next one when a join fails"
                       : "Join the best public mesh found on the relays (one that wants or serves this model, "
                         "nearby, quick to reach), falling back to the next; none found: start a new public mesh")
      ->group(g);
  sub->add_option("--relay", o.relays,
                  "Nostr relay (ws:// or wss://, repeatable) to publish to and discover from; also LLMESH_RELAYS "
                  "(comma separated). Default: " +
                      fmt::format("{}", fmt::join(kDefaultRelays, ", ")))
      ->group(g);
  sub->add_option("--region", o.region, "This node's region (e.g. eu-west), listed and preferred by --auto")
      ->check([](const std::string& r) {
        return r.size() > dsc::kMaxRegionChars ? std::string("at most 32 characters") : std::string();
      })
      ->group(g);
  sub->add_option("--want", o.wants,
                  "A model this node's users want (repeatable, at most 16): gossiped, and listed by public meshes so "
                  "servers that have it choose them")
      ->check([](const std::string& m) {
        return m.empty() || m.size() > dsc::kMaxModelNameChars ? std::string("a model name of 1 to 200 characters")
                                                               : std::string();
      })
      ->group(g);
  sub->add_option("--discover-timeout", o.discover_timeout_ms, "Milliseconds to wait for each relay")
      ->check(CLI::Range(100, 60000))
      ->capture_default_str()
      ->group(g);
  if (client) {
    sub->add_option("--model", o.auto_model, "With --auto: the model to find a mesh for (default: the first --want)")
        ->group(g);
    return;
  }
  sub->add_flag("--publish", o.publish,
                "Make this node's mesh public and publish a signed listing of it on the relays (how to connect, "
                "models served and wanted, capacity, region); a private mesh is never published")
      ->group(g);
  sub->add_option("--mesh-name", o.mesh_name, "A name for the published mesh (at most 64 characters)")
      ->check([](const std::string& s) {
        return s.size() > dsc::kMaxMeshNameChars ? std::string("at most 64 characters") : std::string();
      })
      ->group(g);
  sub->add_option("--publish-interval", o.publish_interval_s,
                  "Seconds between refreshes of the listing; it expires after three")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str()
      ->group(g);
  sub->add_option("--peer-rate", o.peer_rate,
                  "Requests per minute one peer may forward to this node (public meshes: 60; 0: no limit)")
      ->check(CLI::Range(0.0, 1e6))
      ->group(g);
  sub->add_option("--peer-burst", o.peer_burst, "Requests a quiet peer may send at once (public meshes: 20)")
      ->check(CLI::Range(1.0, 1e6))
      ->group(g);
  sub->add_option("--peer-concurrency", o.peer_concurrency,
                  "Requests of one peer running here at once (public meshes: 4; 0: no limit)")
      ->check(CLI::Range(0, 100000))
      ->group(g);
}

std::vector<std::string> resolve_relays(const std::vector<std::string>& given) {
  std::vector<std::string> relays = given;
  if (relays.empty())
    if (const char* env = std::getenv("LLMESH_RELAYS"); env && *env) {
      std::stringstream ss(env);
      std::string r;
      while (std::getline(ss, r, ','))
        if (!r.empty()) relays.push_back(r);
    }
  if (relays.empty()) relays = kDefaultRelays;
  std::vector<std::string> out;
  for (const auto& r : relays) {
    std::string error;
    if (!dsc::parse_relay_url(r, &error))
      throw std::invalid_argument("--relay: " + (error.empty() ? "'" + r + "' is not a ws:// or wss:// URL" : error));
    if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  }
  return out;
}

std::optional<mesh::PeerLimitOptions> peer_limit_options(const DiscoveryCliOptions& o, bool public_mesh) {
  bool asked = o.peer_rate >= 0 || o.peer_burst >= 0 || o.peer_concurrency >= 0;
  if (!public_mesh && !asked) return std::nullopt;
  mesh::PeerLimitOptions l;
  if (!public_mesh) {  // a private mesh limits only what was asked for
    l.requests_per_minute = 0;
    l.concurrent = 0;
  }
  if (o.peer_rate >= 0) l.requests_per_minute = o.peer_rate;
  if (o.peer_burst >= 0) l.burst = o.peer_burst;
  if (o.peer_concurrency >= 0) l.concurrent = static_cast<uint32_t>(o.peer_concurrency);
  if (l.requests_per_minute == 0 && l.concurrent == 0) return std::nullopt;
  return l;
}

size_t DiscoveryResult::joinable() const {
  return static_cast<size_t>(std::count_if(meshes.begin(), meshes.end(), [](const auto& m) { return m.joinable; }));
}

DiscoveryResult discover_meshes(const std::vector<std::string>& relays, const dsc::MeshPreferences& prefs,
                                std::chrono::milliseconds timeout, bool probe) {
  DiscoveryResult out;
  dsc::RelayOptions ro;
  ro.timeout = timeout;
  if (const char* ca = std::getenv("LLMESH_RELAY_CA")) ro.ca_file = ca;
  auto results = dsc::query_relays(relays, dsc::listing_filter(), ro);
  const int64_t now = unix_now();
  std::vector<std::pair<dsc::MeshListing, std::string>> listings;
  for (const auto& r : results) {
    json rj = {{"url", r.relay},
               {"ok", r.ok},
               {"events", r.events.size()},
               {"rejected", r.rejected},
               {"took_ms", r.took.count()}};
    if (!r.ok) rj["error"] = r.error;
    if (!r.rejections.empty()) rj["rejections"] = r.rejections;
    out.relays.push_back(rj);
    for (const auto& e : r.events) {
      auto read = dsc::listing_from_event(e, now);
      if (!read.listing) {
        out.refused.push_back({{"event", e.id}, {"relay", r.relay}, {"reason", read.reason}, {"error", read.error}});
        continue;
      }
      listings.emplace_back(std::move(*read.listing), r.relay);
    }
  }
  out.meshes = dsc::merge_listings(listings);
  if (probe) dsc::measure_latency(out.meshes, std::min(timeout, std::chrono::milliseconds(3000)));
  dsc::rank_meshes(out.meshes, prefs);
  return out;
}

dsc::MeshListing describe_mesh(const mesh::MeshNode& node, const DiscoveryCliOptions& o,
                               const std::optional<mesh::PeerLimitOptions>& limits) {
  dsc::MeshListing l;
  auto secret = node.secret();
  l.mesh_id = secret.mesh_id;
  l.is_public = secret.is_public();
  l.name = o.mesh_name;
  l.region = o.region;
  l.software = std::string("llmesh/") + LLMESH_VERSION;
  if (limits) {
    l.requests_per_minute = static_cast<uint32_t>(limits->requests_per_minute);
    l.concurrent = limits->concurrent;
  }
  std::map<std::string, dsc::ListingModel> models;
  std::set<std::string> wanted;
  auto members = node.members();
  // This node first, then the others in a stable order.
  std::stable_sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.self > b.self; });
  for (const auto& v : members) {
    if (!v.member.has_state || v.member.status != gossip::MemberStatus::alive) continue;
    const auto& st = v.member.state;
    l.capacity.nodes++;
    for (const auto& w : st.wanted) wanted.insert(w);
    if (st.role != gossip::Role::server) {
      l.capacity.clients++;
      continue;
    }
    l.capacity.servers++;
    l.capacity.slots += st.load.parallel_slots;
    l.capacity.free_slots += st.load.parallel_slots > st.load.active_requests
                                 ? st.load.parallel_slots - st.load.active_requests
                                 : 0;
    l.capacity.tokens_per_second += st.load.tokens_per_second;
    for (const auto& m : st.models) {
      auto& lm = models[m.name];
      lm.name = m.name;
      lm.nodes++;
      lm.context_length = std::max(lm.context_length, m.context_length);
    }
    if (v.id && !st.mesh_address.empty() && invite::valid_address(st.mesh_address) && l.nodes.size() < 8)
      l.nodes.push_back({st.mesh_address, v.id->bytes});
  }
  for (auto& [name, m] : models) {
    if (l.models.size() >= dsc::kMaxListingModels) break;
    if (name.size() <= dsc::kMaxModelNameChars) l.models.push_back(m);
  }
  for (const auto& w : wanted)
    if (!models.count(w) && l.wanted.size() < dsc::kMaxListingModels && w.size() <= dsc::kMaxModelNameChars)
      l.wanted.push_back(w);
  return l;
}

ListingPublisher::ListingPublisher(const DiscoveryCliOptions& o, std::vector<std::string> relays,
                                   mesh::MeshNode& node, const std::filesystem::path& home,
                                   std::optional<mesh::PeerLimitOptions> limits,
                                   std::function<void(const std::string&)> log)
    : o_(o),
      relays_(std::move(relays)),
      node_(node),
      key_(dsc::NostrKey::load_or_create(home / "nostr.key")),
      pubkey_(key_.public_hex()),
      limits_(limits),
      log_(std::move(log)) {}

ListingPublisher::~ListingPublisher() { stop(); }

void ListingPublisher::start() { thread_ = std::thread([this] { loop(); }); }

void ListingPublisher::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ListingPublisher::loop() {
  const auto interval = std::chrono::seconds(o_.publish_interval_s);
  const auto min_gap = std::min<std::chrono::steady_clock::duration>(interval, std::chrono::seconds(5));
  std::optional<dsc::MeshListing> last;
  auto last_at = std::chrono::steady_clock::time_point{};
  for (;;) {
    {
      std::unique_lock lk(mu_);
      if (stopping_) return;
    }
    auto now = std::chrono::steady_clock::now();
    dsc::MeshListing l = describe_mesh(node_, o_, limits_);
    bool due = !last || now - last_at >= interval || (!same_offer(*last, l) && now - last_at >= min_gap);
    if (due) {
      publish_once(l);
      last = l;
      last_at = std::chrono::steady_clock::now();
    }
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stopping_; });
    if (stopping_) return;
  }
}

void ListingPublisher::publish_once(const dsc::MeshListing& l) {
  const int64_t now = unix_now();
  const int64_t ttl = 3 * static_cast<int64_t>(o_.publish_interval_s);
  dsc::NostrEvent e;
  try {
    e = dsc::make_listing_event(l, now, ttl);
    key_.sign(e);
  } catch (const std::exception& err) {
    log_(std::string("publish: cannot make the listing: ") + err.what() + " (reason listing_failed)");
    return;
  }
  dsc::RelayOptions ro;
  ro.timeout = std::chrono::milliseconds(o_.discover_timeout_ms);
  if (const char* ca = std::getenv("LLMESH_RELAY_CA")) ro.ca_file = ca;
  auto results = dsc::publish_event(relays_, e, ro);
  size_t accepted = 0;
  json rs = json::array();
  std::vector<std::string> lines;
  {
    std::lock_guard lk(mu_);
    for (const auto& r : results) {
      json rj = {{"url", r.relay}, {"ok", r.ok}, {"took_ms", r.took.count()}};
      std::string why = r.ok ? "" : (r.error.empty() ? r.message : r.error);
      if (!r.ok) rj["error"] = why;
      rs.push_back(rj);
      if (r.ok) accepted++;
      // A line when a relay's state changes, not every round.
      auto it = relay_errors_.find(r.relay);
      if (it == relay_errors_.end() || it->second != why) {
        if (r.ok)
          lines.push_back(fmt::format("publish: listing of mesh {} on {} (event {}, expires in {} s)",
                                      l.mesh_id_hex().substr(0, 8), r.relay, e.id.substr(0, 8), ttl));
        else
          lines.push_back(fmt::format("publish: relay {} refused or failed: {} (reason relay_failed)", r.relay, why));
        relay_errors_[r.relay] = why;
      }
    }
    rounds_++;
    last_ = {{"event", e.id},
             {"published", now},
             {"expires", now + ttl},
             {"accepted", accepted},
             {"relays", rs},
             {"listing", l.to_content()}};
  }
  for (const auto& line : lines) log_(line);
  if (accepted == 0 && !relays_.empty())
    log_(fmt::format("publish: no relay took the listing of mesh {} ({} tried); retrying in {} s (reason publish_failed)",
                     l.mesh_id_hex().substr(0, 8), relays_.size(), o_.publish_interval_s));
}

json ListingPublisher::status() const {
  std::lock_guard lk(mu_);
  json j = last_;
  j["pubkey"] = pubkey_;
  j["rounds"] = rounds_;
  j["interval_s"] = o_.publish_interval_s;
  j["relay_urls"] = relays_;
  return j;
}

}  // namespace llmesh::cli
