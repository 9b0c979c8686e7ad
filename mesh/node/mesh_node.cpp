#include "node/mesh_node.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "identity/private_file.h"
#include "log/event_log.h"

namespace llmesh::mesh {

using nlohmann::json;
using gossip::Clock;
using gossip::MemberId;
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxQueuedPerDial = 32;
constexpr auto kDialRetry = std::chrono::milliseconds(1000);
constexpr size_t kRecentEvents = 100;
constexpr size_t kMaxSavedPeers = 64;

bool is_wildcard(const std::string& host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

// The admission layer's GOAWAY code for a reason (0x100 + reason), and back.
uint32_t refusal_code(invite::AdmissionReason r) {
  return static_cast<uint32_t>(GoAwayCode::NOT_ADMITTED) + static_cast<uint32_t>(r);
}

// The admission reason's name of a refusal code (0x101..0x1FF: "wrong_secret"), "" for another.
std::string admission_reason_of(uint32_t code) {
  if (code <= 0x100 || code >= 0x200) return "";
  auto r = invite::admission_reason_from_code(static_cast<uint8_t>(code - 0x100));
  return r ? std::string(invite::admission_reason_name(*r)) : std::string();
}

// The reason code of a refused or failed dial (docs/logging.md), as the transport names it.
std::string refusal_reason(const CloseReason& why) {
  AdmissionHooks names;
  names.reason_name = admission_reason_of;
  std::string code = close_reason_code(why, names);
  return code.empty() ? "not_admitted" : code;
}

std::string describe_refusal(const CloseReason& why) {
  if (why.code > 0x100 && why.code < 0x200) {
    auto r = invite::admission_reason_from_code(static_cast<uint8_t>(why.code - 0x100));
    if (r) {
      std::string s = std::string(why.by_peer ? "refused by the peer: " : "refused: ") +
                      invite::admission_reason_name(*r) + " (" + std::to_string(why.code) + "): " +
                      invite::admission_reason_text(*r);
      return s;
    }
  }
  return why.describe();
}

std::string seconds_text(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", std::chrono::duration<double>(d).count());
  return buf;
}

}  // namespace

std::optional<std::pair<std::string, uint16_t>> split_host_port(const std::string& address) {
  std::string host, port;
  if (!address.empty() && address[0] == '[') {
    auto close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') return std::nullopt;
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string::npos) return std::nullopt;  // IPv6 needs brackets
  }
  if (host.empty() || port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  int p = std::stoi(port);
  if (p < 1 || p > 65535) return std::nullopt;
  return std::make_pair(host, static_cast<uint16_t>(p));
}

std::string primary_ipv4() {
  ifaddrs* list = nullptr;
  std::string found = "127.0.0.1";
  if (::getifaddrs(&list) != 0) return found;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    if (!(a->ifa_flags & IFF_UP) || (a->ifa_flags & IFF_LOOPBACK)) continue;
    char buf[INET_ADDRSTRLEN];
    auto* sin = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
    if (::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf)) {
      found = buf;
      break;
    }
  }
  ::freeifaddrs(list);
  return found;
}

MeshNode::MeshNode(NodeIdentity identity, invite::MeshSecret secret, MeshNodeOptions opt, gossip::NodeState self)
    : id_(identity.id()), id_hex_(identity.id().hex()), opt_(std::move(opt)), secret_(secret) {
  TransportOptions t = opt_.transport;
  if (!t.log) t.log = [this](const std::string& line) { log(line); };
  t.admission.make = [this](const PeerInfo& p) { return make_admit(p); };
  t.admission.verify = [this](const PeerInfo& p, std::span<const uint8_t> admit) { return verify_admit(p, admit); };
  t.admission.reason_name = admission_reason_of;
  t.capabilities["role"] = gossip::role_name(self.role);
  Transport::Callbacks cb;
  cb.on_message = [this](const NodeId& from, uint16_t kind, std::vector<uint8_t> body) {
    on_message(from, kind, std::move(body));
  };
  cb.on_stream = [this](std::shared_ptr<Stream> s) {
    std::function<void(std::shared_ptr<Stream>)> h;
    {
      std::lock_guard lk(mu_);
      h = stream_handler_;
    }
    if (h)
      h(std::move(s));
    else
      s->reset(ResetCode::NO_HANDLER);
  };
  transport_ = std::make_unique<Transport>(std::move(identity), std::move(t), std::move(cb));
  uint64_t seed = opt_.seed ? opt_.seed : std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32);
  swim_ = std::make_unique<gossip::Swim>(id_hex_, std::move(self), opt_.swim, seed);
}

MeshNode::~MeshNode() { stop(); }

void MeshNode::log(const std::string& line) const {
  if (opt_.log)
    opt_.log(line);
  else
    logs::emit(logs::from_line("mesh", line));
}

std::vector<uint8_t> MeshNode::make_admit(const PeerInfo& peer) const {
  std::lock_guard lk(mu_);
  auto role = peer.outbound ? invite::AdmissionRole::initiator : invite::AdmissionRole::responder;
  auto m = invite::make_admit_message(secret_, peer.channel_binding, std::span<const uint8_t, 32>(id_.bytes), role,
                                      opt_.token_expires);
  auto bytes = invite::encode_admit_message(m);
  return {bytes.begin(), bytes.end()};
}

std::optional<std::pair<uint32_t, std::string>> MeshNode::verify_admit(const PeerInfo& peer,
                                                                       std::span<const uint8_t> admit) const {
  invite::MeshSecret ours;
  {
    std::lock_guard lk(mu_);
    ours = secret_;
  }
  auto own = peer.outbound ? invite::AdmissionRole::initiator : invite::AdmissionRole::responder;
  auto r = invite::verify_admission(ours, admit, peer.channel_binding, std::span<const uint8_t, 32>(peer.id.bytes),
                                    static_cast<uint8_t>(invite::peer_role(own)));
  if (r.ok()) return std::nullopt;
  std::string text = std::string(invite::admission_reason_name(r.reason)) + " (" +
                     std::to_string(refusal_code(r.reason)) + "): " + invite::admission_reason_text(r.reason);
  if (!r.detail.empty()) text += " [" + r.detail + "]";
  return std::make_pair(refusal_code(r.reason), text);
}

void MeshNode::start() {
  {
    std::lock_guard lk(clock_mu_);
    if (started_) return;
    started_ = true;
  }
  uint16_t port = transport_->bind(opt_.listen_host, opt_.listen_port);
  std::string adv = opt_.advertise;
  if (adv.empty()) {
    adv = (is_wildcard(opt_.listen_host) ? primary_ipv4() : opt_.listen_host) + ":" + std::to_string(port);
  } else if (!split_host_port(adv)) {
    adv += ":" + std::to_string(port);
  }
  if (!split_host_port(adv)) throw std::runtime_error("--advertise " + opt_.advertise + " is not host or host:port");
  {
    std::lock_guard lk(mu_);
    advertised_ = adv;
    started_at_ = Clock::now();
    gossip::NodeState s = swim_->self_state();
    s.mesh_address = adv;
    // Newer records win by version: a restarted node starts above its previous run's records.
    s.state_version = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    swim_->update_self(s, Clock::now());
  }
  clock_ = std::thread([this] { clock_loop(); });
}

std::string MeshNode::mesh_address() const {
  std::lock_guard lk(mu_);
  return advertised_;
}

uint16_t MeshNode::port() const { return transport_->port(); }

void MeshNode::clock_loop() {
  std::unique_lock lk(clock_mu_);
  while (!stopping_) {
    clock_cv_.wait_for(lk, opt_.tick, [&] { return stopping_; });
    if (stopping_) break;
    lk.unlock();
    {
      std::lock_guard g(mu_);
      auto now = Clock::now();
      swim_->tick(now);
      flush_locked(now);
      handle_events_locked(now);
      if (peers_dirty_ && now - peers_saved_at_ > std::chrono::seconds(2)) save_peers_locked();
    }
    lk.lock();
  }
}

void MeshNode::on_message(const NodeId& from, uint16_t kind, std::vector<uint8_t> body) {
  if (kind == kControlKind) {
    on_control(from, body);
    return;
  }
  if (kind != kGossipKind) return;  // a kind from a newer version: ignored
  std::lock_guard lk(mu_);
  auto now = Clock::now();
  swim_->on_message(from.hex(), body, now);
  flush_locked(now);
  handle_events_locked(now);
}

// Control messages: a MessagePack map {"t": type, ...}. Today one type, "secret": the mesh's
// new secret after a rotation, {"t":"secret","m":mesh id,"e":epoch,"s":secret}. Only admitted
// peers can send it (the connection is authenticated); it is taken only for our mesh and a
// newer epoch.
void MeshNode::on_control(const NodeId& from, const std::vector<uint8_t>& body) {
  if (body.size() > 4096) return;
  json j = json::from_msgpack(body, true, false);
  if (!j.is_object() || !j.contains("t") || !j["t"].is_string()) return;
  if (j["t"] != "secret") return;
  auto bin = [&](const char* k, size_t n) -> std::optional<std::vector<uint8_t>> {
    if (!j.contains(k) || !j[k].is_binary() || j[k].get_binary().size() != n) return std::nullopt;
    const auto& b = j[k].get_binary();
    return std::vector<uint8_t>(b.begin(), b.end());
  };
  auto mesh = bin("m", 16);
  auto secret = bin("s", 32);
  if (!mesh || !secret || !j.contains("e") || !j["e"].is_number_unsigned()) return;
  uint64_t epoch = j["e"].get<uint64_t>();
  std::lock_guard lk(mu_);
  if (!std::equal(mesh->begin(), mesh->end(), secret_.mesh_id.begin()) || epoch <= secret_.epoch ||
      epoch > 0xFFFFFFFFu)
    return;
  if (secret_.is_public()) {
    // Anyone may join a public mesh: a member that could rotate its secret could lock every
    // other node out, so public meshes never take a pushed secret.
    log("mesh: refused a secret rotation from node " + from.short_hex() +
        ": the mesh is public (reason public_mesh_no_rotation)");
    return;
  }
  std::copy(secret->begin(), secret->end(), secret_.secret.begin());
  secret_.epoch = static_cast<uint32_t>(epoch);
  log("mesh: node " + from.short_hex() + " rotated the mesh secret: now at epoch " + std::to_string(epoch) +
      " (fingerprint " + secret_.fingerprint() + "); older invite tokens no longer work");
  if (!opt_.secret_path.empty()) {
    try {
      invite::save_mesh_secret(secret_, opt_.secret_path);
    } catch (const std::exception& e) {
      log(std::string("mesh: cannot save the rotated secret: ") + e.what() + " (reason secret_save_failed)");
    }
  }
  push_secret_locked();  // pass it on: peers this node reaches but the rotating node does not
}

void MeshNode::push_secret_locked() {
  json j = {{"t", "secret"},
            {"m", json::binary(std::vector<uint8_t>(secret_.mesh_id.begin(), secret_.mesh_id.end()))},
            {"e", secret_.epoch},
            {"s", json::binary(std::vector<uint8_t>(secret_.secret.begin(), secret_.secret.end()))}};
  auto bytes = json::to_msgpack(j);
  for (const auto& p : transport_->peers()) transport_->send(p.id, kControlKind, bytes);
}

uint32_t MeshNode::rotate_secret() {
  std::lock_guard lk(mu_);
  secret_.rotate();  // throws for a public mesh
  if (!opt_.secret_path.empty()) invite::save_mesh_secret(secret_, opt_.secret_path);
  log("mesh: rotated the mesh secret: epoch " + std::to_string(secret_.epoch) + " (fingerprint " +
      secret_.fingerprint() + "); every older invite token stops working");
  push_secret_locked();
  return secret_.epoch;
}

void MeshNode::switch_mesh(const invite::MeshSecret& secret) {
  std::vector<NodeId> peers;
  {
    std::lock_guard lk(mu_);
    if (swim_->alive_count() > 1)
      throw std::logic_error("switch_mesh: this node already has members in mesh " +
                             secret_.mesh_id_hex().substr(0, 8));
    secret_ = secret;
    gossip::NodeState self = swim_->self_state();
    seed_addresses_.clear();
    dials_.clear();
    uint64_t seed = std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32);
    swim_ = std::make_unique<gossip::Swim>(id_hex_, std::move(self), opt_.swim, seed);
    for (const auto& p : transport_->peers()) peers.push_back(p.id);
  }
  // Connections admitted under the old secret belong to the old mesh.
  for (const auto& p : peers) transport_->disconnect(p);
  log("mesh: now in mesh " + secret.mesh_id_hex().substr(0, 8) + (secret.is_public() ? " (public)" : ""));
}

invite::MeshSecret MeshNode::secret() const {
  std::lock_guard lk(mu_);
  return secret_;
}

std::optional<std::string> MeshNode::address_of_locked(const MemberId& id) const {
  if (const gossip::Member* m = swim_->find(id); m && m->has_state && !m->state.mesh_address.empty())
    return m->state.mesh_address;
  auto it = seed_addresses_.find(id);
  if (it != seed_addresses_.end()) return it->second;
  return std::nullopt;
}

void MeshNode::flush_locked(gossip::TimePoint now) {
  for (auto& out : swim_->take_outgoing()) send_locked(out.to, std::move(out.bytes), now);
}

void MeshNode::send_locked(const MemberId& to, std::vector<uint8_t> bytes, gossip::TimePoint now) {
  auto peer = NodeId::from_hex(to);
  if (!peer) return;
  if (transport_->connected(*peer)) {
    transport_->send(*peer, kGossipKind, bytes);  // false: the queue is full; SWIM sees a loss
    return;
  }
  Dial& d = dials_[to];
  if (d.in_progress) {
    if (d.queued.size() < kMaxQueuedPerDial) d.queued.push_back(std::move(bytes));
    return;
  }
  if (now < d.retry_after) return;  // dialed it moments ago and failed: a loss, as SWIM expects
  auto address = address_of_locked(to);
  auto hp = address ? split_host_port(*address) : std::nullopt;
  if (!hp) return;
  d.in_progress = true;
  d.queued.push_back(std::move(bytes));
  transport_->connect_async(hp->first, hp->second, *peer, [this, to, peer = *peer](std::optional<PeerInfo> info,
                                                                                  CloseReason why) {
    std::lock_guard lk(mu_);
    Dial& dd = dials_[to];
    dd.in_progress = false;
    auto queued = std::move(dd.queued);
    dd.queued.clear();
    if (info) {
      dd.refusals = 0;
      for (auto& b : queued) transport_->send(peer, kGossipKind, b);
    } else if (why.code > 0x100 && why.code < 0x200) {
      // Refused: the secrets differ, and asking again every second will not change that (a
      // rotation reaching us would). Back off, and say so once per step.
      dd.refusals = std::min(dd.refusals + 1, 9);
      auto wait = std::min<std::chrono::seconds>(std::chrono::seconds(1 << dd.refusals), std::chrono::minutes(5));
      dd.retry_after = Clock::now() + wait;
      log("mesh: node " + peer.short_hex() + " " + describe_refusal(why) + "; next try in " +
          std::to_string(wait.count()) + " s (reason " + refusal_reason(why) + ")");
    } else {
      dd.retry_after = Clock::now() + kDialRetry;
    }
  });
}

void MeshNode::handle_events_locked(gossip::TimePoint now) {
  for (const auto& ev : swim_->take_events()) {
    const gossip::Member* m = swim_->find(ev.id);
    std::string who = ev.id.substr(0, 12);
    std::string what = gossip::event_kind_name(ev.kind);
    if (ev.kind != gossip::MemberEvent::Kind::updated) {
      std::string extra;
      if (m && m->has_state)
        extra = " (" + std::string(gossip::role_name(m->state.role)) +
                (m->state.mesh_address.empty() ? "" : ", " + m->state.mesh_address) + ")";
      // A node found dead or suspected is a failure: it carries a reason (docs/logging.md).
      const char* reason = ev.kind == gossip::MemberEvent::Kind::dead      ? " (reason member_dead)"
                           : ev.kind == gossip::MemberEvent::Kind::suspect ? " (reason member_suspect)"
                                                                           : "";
      log("mesh: node " + who + extra + " " + what + ", incarnation " + std::to_string(ev.incarnation) + "; " +
          std::to_string(swim_->alive_count()) + " alive" + reason);
      peers_dirty_ = true;
    }
    recent_events_.push_back({{"event", what},
                              {"node", ev.id},
                              {"incarnation", ev.incarnation},
                              {"uptime_s", std::chrono::duration<double>(now - started_at_).count()}});
    while (recent_events_.size() > kRecentEvents) recent_events_.pop_front();
  }
}

JoinResult MeshNode::join(const std::vector<invite::InviteNode>& seeds, std::chrono::milliseconds timeout) {
  auto t0 = Clock::now();
  auto deadline = t0 + timeout;
  JoinResult r;
  struct Attempt {
    NodeId id;
    std::string address;
    bool done = false;
    bool ok = false;
    std::string error;
  };
  auto attempts = std::make_shared<std::vector<Attempt>>();
  for (const auto& s : seeds) {
    NodeId id;
    id.bytes = s.node_id;
    if (id == id_) continue;
    attempts->push_back(Attempt{id, s.address, false, false, {}});
  }
  if (attempts->empty()) {
    r.error = "no seed node to join through (the only address is this node's own)";
    return r;
  }
  auto m = std::make_shared<std::mutex>();
  auto cv = std::make_shared<std::condition_variable>();
  {
    std::lock_guard lk(mu_);
    for (auto& a : *attempts) seed_addresses_[a.id.hex()] = a.address;
  }
  for (size_t i = 0; i < attempts->size(); ++i) {
    auto hp = split_host_port((*attempts)[i].address);
    if (!hp) {
      (*attempts)[i].done = true;
      (*attempts)[i].error = "bad address";
      continue;
    }
    transport_->connect_async(hp->first, hp->second, (*attempts)[i].id,
                              [attempts, m, cv, i](std::optional<PeerInfo> info, CloseReason why) {
                                std::lock_guard lk(*m);
                                auto& a = (*attempts)[i];
                                a.done = true;
                                a.ok = info.has_value();
                                if (!info) a.error = describe_refusal(why);
                                cv->notify_all();
                              });
  }
  {
    std::unique_lock lk(*m);
    cv->wait_until(lk, deadline, [&] {
      return std::all_of(attempts->begin(), attempts->end(), [](const Attempt& a) { return a.done; }) ||
             std::any_of(attempts->begin(), attempts->end(), [](const Attempt& a) { return a.ok; });
    });
  }
  std::vector<MemberId> reached;
  std::string errors;
  {
    std::lock_guard lk(*m);
    for (auto& a : *attempts) {
      if (a.ok)
        reached.push_back(a.id.hex());
      else if (a.done)
        errors += (errors.empty() ? "" : "; ") + a.id.short_hex() + " at " + a.address + ": " + a.error;
    }
  }
  if (reached.empty()) {
    // Dials still in flight may admit us later; gossip keeps retrying the seeds meanwhile.
    std::lock_guard lk(mu_);
    std::vector<MemberId> all;
    for (auto& a : *attempts) all.push_back(a.id.hex());
    swim_->join(all, Clock::now());
    r.error = errors.empty() ? "no seed answered within " + seconds_text(timeout) : errors;
    r.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    return r;
  }
  {
    std::lock_guard lk(mu_);
    swim_->join(reached, Clock::now());
    flush_locked(Clock::now());
  }
  r.reached = reached.size();
  // Joined when a seed's view has arrived (its push-pull reply brings every member it knows).
  while (Clock::now() < deadline) {
    {
      std::lock_guard lk(mu_);
      if (swim_->synced()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::lock_guard lk(mu_);
  r.ok = swim_->synced();
  r.members = swim_->members().size();
  r.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  if (!r.ok) r.error = "admitted by a seed but no view of the mesh arrived within " + seconds_text(timeout);
  peers_dirty_ = true;
  return r;
}

std::vector<invite::InviteNode> MeshNode::saved_peers() const {
  std::vector<invite::InviteNode> out;
  if (opt_.peers_path.empty()) return out;
  std::ifstream in(opt_.peers_path);
  if (!in) return out;
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (!j.is_object() || !j.contains("peers") || !j["peers"].is_array()) return out;
  std::string mesh_hex;
  {
    std::lock_guard lk(mu_);
    mesh_hex = secret_.mesh_id_hex();
  }
  if (!j.contains("mesh_id") || j["mesh_id"] != mesh_hex) return out;  // another mesh's peers
  for (const auto& p : j["peers"]) {
    if (!p.is_object() || !p.contains("id") || !p.contains("address") || !p["id"].is_string() ||
        !p["address"].is_string())
      continue;
    auto id = NodeId::from_hex(p["id"].get<std::string>());
    std::string addr = p["address"];
    if (!id || !invite::valid_address(addr) || *id == id_) continue;
    out.push_back({addr, id->bytes});
    if (out.size() >= kMaxSavedPeers) break;
  }
  return out;
}

void MeshNode::save_peers_locked() {
  peers_dirty_ = false;
  peers_saved_at_ = Clock::now();
  if (opt_.peers_path.empty()) return;
  json peers = json::array();
  for (const auto& m : swim_->members()) {
    if (m.id == id_hex_ || !m.has_state || m.state.mesh_address.empty()) continue;
    if (m.status != gossip::MemberStatus::alive && m.status != gossip::MemberStatus::suspect) continue;
    peers.push_back({{"id", m.id}, {"address", m.state.mesh_address}});
    if (peers.size() >= kMaxSavedPeers) break;
  }
  if (peers.empty()) return;  // keep the last useful list
  json j = {{"version", 1}, {"mesh_id", secret_.mesh_id_hex()}, {"peers", peers}};
  try {
    write_private_file(opt_.peers_path, j.dump(2) + "\n");
  } catch (const std::exception& e) {
    log(std::string("mesh: cannot save known peers: ") + e.what() + " (reason peers_save_failed)");
  }
}

void MeshNode::update_state(const std::function<void(gossip::NodeState&)>& edit) {
  std::lock_guard lk(mu_);
  gossip::NodeState s = swim_->self_state();
  gossip::NodeState before = s;
  edit(s);
  s.state_version = before.state_version;
  if (s == before) return;
  auto now = Clock::now();
  swim_->update_self(std::move(s), now);
  flush_locked(now);
}

gossip::NodeState MeshNode::state() const {
  std::lock_guard lk(mu_);
  return swim_->self_state();
}

void MeshNode::set_stream_handler(std::function<void(std::shared_ptr<Stream>)> handler) {
  std::lock_guard lk(mu_);
  stream_handler_ = std::move(handler);
}

std::vector<MemberView> MeshNode::members() const {
  std::vector<gossip::Member> ms;
  {
    std::lock_guard lk(mu_);
    ms = swim_->members();
  }
  std::vector<MemberView> out;
  for (auto& m : ms) {
    MemberView v;
    v.id = NodeId::from_hex(m.id);
    v.self = m.id == id_hex_;
    if (v.id && !v.self) {
      v.connected = transport_->connected(*v.id);
      v.rtt = transport_->rtt(*v.id);
    }
    v.member = std::move(m);
    out.push_back(std::move(v));
  }
  return out;
}

gossip::GossipStats MeshNode::gossip_stats() const {
  std::lock_guard lk(mu_);
  return swim_->stats();
}

json MeshNode::status_json() const {
  auto views = members();
  std::lock_guard lk(mu_);
  auto now = Clock::now();
  double uptime = std::chrono::duration<double>(now - started_at_).count();
  json members = json::array();
  size_t alive = 0;
  for (const auto& v : views) {
    const auto& m = v.member;
    json row = {{"id", m.id},
                {"self", v.self},
                {"status", gossip::status_name(m.status)},
                {"incarnation", m.incarnation},
                {"since_s", std::chrono::duration<double>(now - m.since).count()},
                {"connected", v.self || v.connected}};
    if (v.rtt) row["rtt_ms"] = static_cast<double>(v.rtt->count()) / 1000.0;
    if (m.has_state) row["state"] = gossip::to_json(m.state);
    if (m.status == gossip::MemberStatus::alive || m.status == gossip::MemberStatus::suspect) ++alive;
    members.push_back(std::move(row));
  }
  const auto& st = swim_->stats();
  uint64_t msgs_sent = 0, msgs_received = 0;
  for (const auto& k : st.by_kind) {
    msgs_sent += k.messages_sent;
    msgs_received += k.messages_received;
  }
  json events = json::array();
  for (const auto& e : recent_events_) events.push_back(e);
  return {{"node", {{"id", id_hex_}, {"mesh_address", advertised_}, {"uptime_s", uptime}}},
          {"mesh",
           {{"id", secret_.mesh_id_hex()},
            {"epoch", secret_.epoch},
            {"fingerprint", secret_.fingerprint()},
            {"alive", alive},
            {"members", views.size()}}},
          {"members", members},
          {"gossip",
           {{"bytes_sent", st.bytes_sent()},
            {"bytes_received", st.bytes_received()},
            {"messages_sent", msgs_sent},
            {"messages_received", msgs_received},
            // On the wire each message also costs a frame header (10 bytes), its kind (2) and
            // a TLS 1.3 record (22): bytes_sent counts SWIM's own bytes only.
            {"wire_bytes_sent_estimate", st.bytes_sent() + 34 * msgs_sent},
            {"bytes_sent_per_s", uptime > 0 ? static_cast<double>(st.bytes_sent()) / uptime : 0.0},
            {"decode_errors", st.decode_errors},
            {"refutations", st.refutations}}},
          {"events", events}};
}

std::string MeshNode::invite(int64_t expires, size_t max_nodes) const {
  std::lock_guard lk(mu_);
  invite::Invite inv;
  inv.mesh = secret_;
  inv.expires = expires;
  inv.issued = invite::unix_now();
  // This node first, then live servers (they accept connections; clients may be behind NAT).
  inv.nodes.push_back({advertised_, id_.bytes});
  for (const auto& m : swim_->members()) {
    if (inv.nodes.size() >= std::max<size_t>(1, max_nodes)) break;
    if (m.id == id_hex_ || m.status != gossip::MemberStatus::alive || !m.has_state) continue;
    if (m.state.role != gossip::Role::server || !invite::valid_address(m.state.mesh_address)) continue;
    auto id = NodeId::from_hex(m.id);
    if (id) inv.nodes.push_back({m.state.mesh_address, id->bytes});
  }
  return invite::encode_invite(inv);
}

void MeshNode::leave(std::chrono::milliseconds max) {
  begin_leave(max);
  stop();
}

void MeshNode::begin_leave(std::chrono::milliseconds max) {
  {
    std::lock_guard lk(clock_mu_);
    if (!started_ || stopped_) return;
  }
  auto deadline = Clock::now() + max;
  {
    std::lock_guard lk(mu_);
    swim_->leave(Clock::now());
    flush_locked(Clock::now());
  }
  while (Clock::now() < deadline) {
    {
      std::lock_guard lk(mu_);
      if (swim_->leave_done()) break;
    }
    std::this_thread::sleep_for(opt_.tick);
  }
}

void MeshNode::stop() {
  {
    std::lock_guard lk(clock_mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  clock_cv_.notify_all();
  if (clock_.joinable()) clock_.join();
  {
    std::lock_guard lk(mu_);
    if (peers_dirty_) save_peers_locked();
  }
  transport_->stop();
}

}  // namespace llmesh::mesh
