#include "cli/lan_join.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include <fmt/format.h>

#include "log/event_log.h"

namespace llmesh::cli {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace discovery = mesh::discovery;

namespace {

constexpr auto kJoinTimeout = std::chrono::seconds(5);
constexpr auto kRecheck = std::chrono::seconds(1);     // rotation check, retries
constexpr auto kAfterJoin = std::chrono::seconds(10);  // a peer joined through is not dialled again sooner
constexpr int kMaxBackoffS = 60;

uint16_t saturate16(uint64_t v) { return static_cast<uint16_t>(std::min<uint64_t>(v, 65535)); }

}  // namespace

bool LanCliOptions::lan() const { return std::find(discovery.begin(), discovery.end(), "lan") != discovery.end(); }

void add_lan_options(CLI::App* sub, LanCliOptions& o) {
  auto known = [](std::string& v) -> std::string {
    if (std::find(kDiscoveryMethods.begin(), kDiscoveryMethods.end(), v) != kDiscoveryMethods.end()) return {};
    std::string list;
    for (const auto& m : kDiscoveryMethods) list += (list.empty() ? "" : ", ") + m;
    return "unknown discovery method '" + v + "' (known: " + list + ")";
  };
  sub->add_option("--discovery", o.discovery,
                  "Find the mesh without addresses: 'lan' announces this node by UDP multicast on the local "
                  "network and joins nodes of the same mesh heard there (docs/lan-discovery.md); repeatable or "
                  "comma separated")
      ->delimiter(',')
      ->check(CLI::Validator(known, "", "discovery method"))
      ->type_name("METHOD")
      ->group("Mesh");
  sub->add_option("--lan-port", o.lan_port, "UDP port of LAN discovery (group 239.255.77.77)")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str()
      ->group("Mesh");
  sub->add_option("--lan-interval", o.lan_interval_s, "Seconds between LAN announcements (jittered)")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str()
      ->group("Mesh");
}

LanJoin::LanJoin(mesh::MeshNode& node, const LanCliOptions& opt, bool quiet)
    : node_(node), opt_(opt), quiet_(quiet), secret_(node.secret()) {
  discovery::LanDiscoveryOptions o;
  o.port = static_cast<uint16_t>(opt_.lan_port);
  o.interval = std::chrono::milliseconds(static_cast<int64_t>(std::llround(opt_.lan_interval_s * 1000)));
  o.fingerprint = discovery::lan_fingerprint(secret_);
  o.describe = [this] { return describe(); };
  o.on_peer = [this](const discovery::LanPeer& p) { on_peer(p); };
  o.log = [this](const std::string& line) { log(line); };
  lan_ = std::make_unique<discovery::LanDiscovery>(o);
}

LanJoin::~LanJoin() {
  stop();
  if (worker_.joinable()) worker_.join();
}

// Quiet keeps the important lines and every refusal or failure (a " (reason code)" line).
void LanJoin::log(const std::string& line, bool important) const {
  logs::LogEvent e = logs::from_line("lan", line);
  if (!quiet_ || important || e.level >= logs::Level::warn) logs::emit(e);
}

void LanJoin::start(bool waiting) {
  {
    std::lock_guard lk(mu_);
    if (started_ || stopping_) return;
    started_ = true;
  }
  try {
    lan_->start();
  } catch (const std::exception& e) {
    log(std::string("llmesh: warning: --discovery lan is off: ") + e.what() + " (reason lan_unavailable)", true);
    return;
  }
  if (waiting)
    log("llmesh: no node to join through yet: waiting for nodes of mesh " + secret_.mesh_id_hex().substr(0, 8) +
            " on the LAN (--discovery lan)",
        true);
  worker_ = std::thread([this] { worker(); });
}

void LanJoin::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  lan_->stop();
}

// This node's announcement: its id and mesh port, and a summary of the mesh as it sees it.
discovery::LanAnnouncement LanJoin::describe() const {
  discovery::LanAnnouncement a;
  a.node_id = node_.id().bytes;
  auto hp = mesh::split_host_port(node_.mesh_address());
  a.mesh_port = hp ? hp->second : node_.port();
  uint64_t alive = 0, servers = 0, slots = 0, busy = 0;
  double tps = 0;
  std::set<std::string> models;
  for (const auto& v : node_.members()) {
    if (v.member.status != gossip::MemberStatus::alive) continue;
    ++alive;
    if (v.self) a.role = v.member.has_state ? v.member.state.role : node_.state().role;
    if (!v.member.has_state || v.member.state.role != gossip::Role::server) continue;
    const auto& s = v.member.state;
    ++servers;
    slots += s.load.parallel_slots;
    busy += std::min(s.load.active_requests, s.load.parallel_slots);
    tps += s.load.tokens_per_second;
    for (const auto& m : s.models) models.insert(m.name);
  }
  a.capacity.members_alive = saturate16(alive);
  a.capacity.servers = saturate16(servers);
  a.capacity.slots_total = saturate16(slots);
  a.capacity.slots_free = saturate16(slots - busy);
  a.capacity.models = saturate16(models.size());
  a.capacity.tokens_per_second_x10 = static_cast<uint32_t>(std::clamp(tps * 10, 0.0, 4e9));
  return a;
}

// On the LAN thread: only queue it.
void LanJoin::on_peer(const discovery::LanPeer& p) {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    pending_[p.node_id] = p;
  }
  cv_.notify_all();
}

bool LanJoin::is_alive_member(const invite::NodeId& id) const {
  for (const auto& v : node_.members())
    if (v.id && v.id->bytes == id) return v.self || v.member.status == gossip::MemberStatus::alive;
  return false;
}

// Joins through the peers heard, one at a time, each at most every few seconds (doubling after
// failures up to a minute), and follows secret rotations with the announced fingerprint.
void LanJoin::worker() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    cv_.wait_for(lk, kRecheck, [&] { return stopping_ || !pending_.empty(); });
    if (stopping_) break;
    auto heard = std::move(pending_);
    pending_.clear();
    lk.unlock();

    if (auto s = node_.secret(); !(s == secret_)) {
      secret_ = s;
      lan_->set_fingerprint(discovery::lan_fingerprint(s));
      log(fmt::format("lan: announcing the mesh secret of epoch {}", s.epoch));
    }
    for (const auto& [id, p] : heard) {
      if (is_alive_member(id)) continue;
      auto now = Clock::now();
      {
        std::lock_guard g(mu_);
        if (stopping_) break;
        if (backoff_[id].next > now) continue;
        ++joins_tried_;
      }
      mesh::NodeId nid;
      nid.bytes = id;
      log(fmt::format("lan: joining through node {} at {} (heard on {})", nid.short_hex(), p.address(),
                      p.interface.empty() ? "?" : p.interface));
      auto r = node_.join({invite::InviteNode{p.address(), id}}, kJoinTimeout);
      std::lock_guard g(mu_);
      auto& b = backoff_[id];
      if (r.ok) {
        ++joins_ok_;
        b = {0, Clock::now() + kAfterJoin};
        log(fmt::format("llmesh: joined the mesh through node {} found on the LAN in {} ms: {} members known",
                        nid.short_hex(), r.took.count(), r.members),
            true);
      } else {
        ++b.failures;
        int wait_s = std::min(kMaxBackoffS, 1 << std::min(b.failures, 6));
        b.next = Clock::now() + std::chrono::seconds(wait_s);
        log(fmt::format("lan: could not join through node {} at {}: {}; next try in {} s or later (reason lan_join_failed)",
                        nid.short_hex(), p.address(), r.error, wait_s),
            r.error.find("refused") != std::string::npos);
      }
    }
    lk.lock();
  }
}

json LanJoin::status_json() const {
  json j = lan_->status_json();
  std::lock_guard lk(mu_);
  j["enabled"] = started_ && !stopping_;
  j["joins"] = {{"tried", joins_tried_}, {"ok", joins_ok_}};
  return j;
}

}  // namespace llmesh::cli
