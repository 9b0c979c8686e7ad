#include "gossip/swim.h"

#include <algorithm>
#include <cmath>

namespace llmesh::gossip {

using nlohmann::json;

const char* event_kind_name(MemberEvent::Kind k) {
  switch (k) {
    case MemberEvent::Kind::joined: return "joined";
    case MemberEvent::Kind::updated: return "updated";
    case MemberEvent::Kind::suspect: return "suspect";
    case MemberEvent::Kind::alive: return "alive";
    case MemberEvent::Kind::dead: return "dead";
    case MemberEvent::Kind::left: return "left";
    case MemberEvent::Kind::reaped: return "reaped";
  }
  return "unknown";
}

std::uint64_t GossipStats::bytes_sent() const {
  std::uint64_t n = 0;
  for (const auto& k : by_kind) n += k.bytes_sent;
  return n;
}

std::uint64_t GossipStats::bytes_received() const {
  std::uint64_t n = 0;
  for (const auto& k : by_kind) n += k.bytes_received;
  return n;
}

namespace {

// A state record about a member we do not know yet is kept until its alive arrives; bounded so
// that hostile peers cannot grow it.
constexpr std::size_t kMaxPendingStates = 256;

Duration scale(Duration d, double f) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double, Duration::period>(
      static_cast<double>(d.count()) * f));
}

Message make(MsgKind kind, std::uint32_t seq = 0, MemberId target = {}) {
  Message m;
  m.kind = kind;
  m.seq = seq;
  m.target = std::move(target);
  return m;
}

}  // namespace

TimePoint Swim::Suspicion::deadline() const {
  // Lifeguard: start at max, shrink logarithmically with independent confirmations to min.
  auto c = static_cast<double>(confirmers.empty() ? 0 : confirmers.size() - 1);
  if (k < 1) return start + min;
  double frac = std::log(c + 1.0) / std::log(static_cast<double>(k) + 1.0);
  Duration t = max - scale(max - min, frac);
  return start + std::max(t, min);
}

Swim::Swim(MemberId self, NodeState self_state, SwimConfig config, std::uint64_t seed)
    : self_(std::move(self)), config_(config), rng_(seed) {
  Member me;
  me.id = self_;
  me.has_state = true;
  me.state = std::move(self_state);
  me.state.state_version = std::max<std::uint64_t>(me.state.state_version, 1);
  members_.emplace(self_, std::move(me));
}

Member& Swim::self_member() { return members_.at(self_); }
const Member& Swim::self_member() const { return members_.at(self_); }
std::uint64_t Swim::incarnation() const { return self_member().incarnation; }
const NodeState& Swim::self_state() const { return self_member().state; }

const Member* Swim::find(const MemberId& id) const {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : &it->second;
}

std::vector<Member> Swim::members() const {
  std::vector<Member> out;
  out.reserve(members_.size());
  for (const auto& [id, m] : members_) out.push_back(m);
  return out;
}

std::size_t Swim::alive_count() const {
  std::size_t n = 0;
  for (const auto& [id, m] : members_)
    if (m.status == MemberStatus::alive || m.status == MemberStatus::suspect) ++n;
  return n;
}

int Swim::transmit_limit() const {
  return std::max(1, retransmit_limit(config_.retransmit_mult, alive_count()));
}

std::vector<Outgoing> Swim::take_outgoing() { return std::exchange(outgoing_, {}); }
std::vector<MemberEvent> Swim::take_events() { return std::exchange(events_, {}); }

// ---- Lifecycle -------------------------------------------------------------------------------

void Swim::join(std::vector<MemberId> seeds, TimePoint now) {
  std::erase(seeds, self_);
  seeds_ = std::move(seeds);
  if (!started_) {
    started_ = true;
    std::uniform_int_distribution<Duration::rep> jitter(0, config_.probe_interval.count());
    next_probe_ = now + Duration(jitter(rng_));
    next_gossip_ = now + config_.gossip_interval;
    // A first anti-entropy round soon after joining catches what the join's gossip missed.
    next_push_pull_ = now + std::min<Duration>(config_.push_pull_interval, std::chrono::seconds(2));
    next_reconnect_ = now + config_.reconnect_interval;
  }
  broadcast_alive(self_member());
  broadcast_state(self_member());
  for (const auto& s : seeds_) push_pull(s);
  next_join_ = now + config_.join_retry_interval;
}

void Swim::leave(TimePoint now) {
  if (leaving_) return;
  Member& me = self_member();
  leaving_ = true;
  set_status(me, MemberStatus::left, now);
  broadcast({UpdateKind::left, self_, me.incarnation, self_, std::nullopt});
  for (const auto& to : random_members(2 * config_.gossip_fanout, {self_}, false, now))
    send(to, make(MsgKind::gossip));
}

bool Swim::leave_done() const { return leaving_ && !queue_.has(self_, BroadcastQueue::membership); }

void Swim::update_self(NodeState state, TimePoint now) {
  Member& me = self_member();
  state.state_version = me.state.state_version + 1;
  me.state = std::move(state);
  broadcast_state(me);
}

void Swim::tick(TimePoint now) {
  if (!started_) join({}, now);
  if (leaving_) {
    if (now >= next_gossip_) {
      gossip_round(now);
      next_gossip_ = now + config_.gossip_interval;
    }
    return;
  }
  check_probes(now);
  check_suspicions(now);
  if (now >= next_probe_) {
    start_probe(now);
    next_probe_ += config_.probe_interval;
    if (next_probe_ <= now) next_probe_ = now + config_.probe_interval;
  }
  if (now >= next_gossip_) {
    gossip_round(now);
    next_gossip_ = now + config_.gossip_interval;
  }
  if (now >= next_push_pull_) {
    auto peers = random_members(1, {self_}, false, now);
    if (!peers.empty()) push_pull(peers.front());
    // Like memberlist, exchange full state less often in big meshes.
    double n = static_cast<double>(alive_count());
    double mult = n > 32 ? 1.0 + std::log2(n / 32.0) : 1.0;
    next_push_pull_ = now + scale(config_.push_pull_interval, mult);
  }
  if (now >= next_reconnect_) {
    // Try a dead member: after a partition heals this is how the two sides find each other.
    std::vector<MemberId> dead;
    for (const auto& [id, m] : members_)
      if (m.status == MemberStatus::dead) dead.push_back(id);
    if (!dead.empty()) {
      std::uniform_int_distribution<std::size_t> pick(0, dead.size() - 1);
      push_pull(dead[pick(rng_)]);
    }
    next_reconnect_ = now + config_.reconnect_interval;
  }
  if (!seeds_.empty() && !synced_ && now >= next_join_) {
    for (const auto& s : seeds_) push_pull(s);
    next_join_ = now + config_.join_retry_interval;
  }
  std::erase_if(relays_, [&](const auto& r) { return now >= r.second.deadline; });
  reap(now);
}

// ---- Failure detection -----------------------------------------------------------------------

void Swim::start_probe(TimePoint now) {
  // Round-robin over a shuffled list (SWIM 4.3): every member is probed within n intervals.
  for (int attempts = 0; attempts < 2; ++attempts) {
    while (probe_index_ < probe_order_.size()) {
      const MemberId& id = probe_order_[probe_index_++];
      auto it = members_.find(id);
      if (it == members_.end() || id == self_) continue;
      if (it->second.status != MemberStatus::alive && it->second.status != MemberStatus::suspect)
        continue;
      probe(id, now);
      return;
    }
    probe_order_.clear();
    for (const auto& [id, m] : members_)
      if (id != self_ && (m.status == MemberStatus::alive || m.status == MemberStatus::suspect))
        probe_order_.push_back(id);
    std::shuffle(probe_order_.begin(), probe_order_.end(), rng_);
    probe_index_ = 0;
    if (probe_order_.empty()) return;
  }
}

void Swim::probe(const MemberId& id, TimePoint now) {
  std::uint32_t seq = next_seq_++;
  probes_[seq] = Probe{id, now + config_.probe_timeout,
                       now + config_.probe_timeout + config_.indirect_timeout, false, {}};
  send(id, make(MsgKind::ping, seq));
}

void Swim::check_probes(TimePoint now) {
  std::vector<MemberId> failed;
  for (auto it = probes_.begin(); it != probes_.end();) {
    Probe& p = it->second;
    if (now >= p.final_deadline) {
      failed.push_back(p.target);
      it = probes_.erase(it);
      continue;
    }
    if (!p.indirect_sent && now >= p.direct_deadline) {
      p.indirect_sent = true;
      p.helpers = random_members(static_cast<std::size_t>(config_.indirect_k), {self_, p.target},
                                 false, now);
      for (const auto& h : p.helpers)
        send(h, make(MsgKind::ping_req, it->first, p.target));
    }
    ++it;
  }
  for (const auto& id : failed) {
    auto m = members_.find(id);
    if (m == members_.end()) continue;
    if (m->second.status == MemberStatus::alive || m->second.status == MemberStatus::suspect)
      on_suspect(id, m->second.incarnation, self_, now);
  }
}

void Swim::check_suspicions(TimePoint now) {
  for (auto it = suspicions_.begin(); it != suspicions_.end();) {
    if (now < it->second.deadline()) {
      ++it;
      continue;
    }
    MemberId id = it->first;
    it = suspicions_.erase(it);
    auto m = members_.find(id);
    if (m == members_.end() || m->second.status != MemberStatus::suspect) continue;
    on_dead(id, m->second.incarnation, self_, now);
  }
}

// ---- Membership rules ------------------------------------------------------------------------

void Swim::set_status(Member& m, MemberStatus s, TimePoint now) {
  m.status = s;
  m.since = now;
}

void Swim::emit(MemberEvent::Kind kind, const Member& m, TimePoint now) {
  events_.push_back({kind, m.id, m.incarnation, now});
}

void Swim::refute(std::uint64_t seen, TimePoint now, bool declared_gone) {
  Member& me = self_member();
  // Someone knew a higher incarnation, or thought we were dead or gone: most likely this is a
  // restarted process, whose state record must supersede the previous life's.
  bool previous_life = seen > me.incarnation || declared_gone;
  me.incarnation = std::max(me.incarnation, seen) + 1;
  ++stats_.refutations;
  broadcast_alive(me);
  if (previous_life) {
    ++me.state.state_version;
    broadcast_state(me);
  }
}

void Swim::on_alive(const MemberId& id, std::uint64_t inc, TimePoint now, bool) {
  if (id == self_) {
    if (!leaving_ && inc > self_member().incarnation) refute(inc, now);
    return;
  }
  auto it = members_.find(id);
  if (it == members_.end()) {
    Member m;
    m.id = id;
    m.incarnation = inc;
    m.since = now;
    auto& added = members_.emplace(id, std::move(m)).first->second;
    emit(MemberEvent::Kind::joined, added, now);
    broadcast_alive(added);
    if (auto p = pending_states_.find(id); p != pending_states_.end()) {
      NodeState s = std::move(p->second);
      pending_states_.erase(p);
      on_state(id, s, now);
    }
    return;
  }
  Member& m = it->second;
  if (inc <= m.incarnation) return;
  MemberStatus old = m.status;
  m.incarnation = inc;
  suspicions_.erase(id);
  if (old != MemberStatus::alive) {
    set_status(m, MemberStatus::alive, now);
    emit(old == MemberStatus::suspect ? MemberEvent::Kind::alive : MemberEvent::Kind::joined, m, now);
  }
  broadcast_alive(m);
}

void Swim::on_suspect(const MemberId& id, std::uint64_t inc, const MemberId& from, TimePoint now) {
  if (id == self_) {
    if (!leaving_ && inc >= self_member().incarnation) {
      refute(inc, now);
      // The suspecter's timer runs out first: answer it directly (the alive rides along).
      if (from != self_ && members_.count(from)) send(from, make(MsgKind::gossip));
    }
    return;
  }
  auto it = members_.find(id);
  if (it == members_.end()) return;
  Member& m = it->second;
  if (inc < m.incarnation || m.status == MemberStatus::dead || m.status == MemberStatus::left) return;
  if (m.status == MemberStatus::suspect) {
    m.incarnation = inc;
    auto s = suspicions_.find(id);
    if (s != suspicions_.end() && s->second.confirmers.insert(from).second)
      broadcast({UpdateKind::suspect, id, inc, from, std::nullopt});
    return;
  }
  m.incarnation = inc;
  set_status(m, MemberStatus::suspect, now);
  emit(MemberEvent::Kind::suspect, m, now);
  auto n = static_cast<double>(alive_count());
  Suspicion s;
  s.start = now;
  s.min = scale(config_.probe_interval, config_.suspicion_mult * std::max(1.0, std::log10(std::max(1.0, n))));
  s.max = scale(s.min, std::max(1.0, config_.suspicion_max_mult));
  s.k = n - 2 < config_.suspicion_confirmations ? 0 : config_.suspicion_confirmations;
  s.confirmers.insert(from);
  suspicions_[id] = std::move(s);
  Update u{UpdateKind::suspect, id, inc, from, std::nullopt};
  broadcast(u);
  // Check for ourselves at once: if it is dead, our failed probe is an independent confirmation
  // that shortens everyone's suspicion timeout (Lifeguard); if it is alive, the probe succeeds.
  if (from != self_ && config_.probe_on_suspect) {
    bool probing = std::any_of(probes_.begin(), probes_.end(),
                               [&](const auto& p) { return p.second.target == id; });
    if (!probing) probe(id, now);
  }
  // Tell the suspect at once, so that a live one refutes before anyone's timer runs out.
  if (from == self_) {
    Message direct = make(MsgKind::gossip);
    direct.updates.push_back(u);
    send(id, std::move(direct), false);
  }
}

void Swim::on_dead(const MemberId& id, std::uint64_t inc, const MemberId& from, TimePoint now) {
  if (id == self_) {
    if (!leaving_ && inc >= self_member().incarnation) refute(inc, now, true);
    return;
  }
  auto it = members_.find(id);
  if (it == members_.end()) return;
  Member& m = it->second;
  if (inc < m.incarnation || m.status == MemberStatus::dead || m.status == MemberStatus::left) return;
  m.incarnation = inc;
  suspicions_.erase(id);
  set_status(m, MemberStatus::dead, now);
  emit(MemberEvent::Kind::dead, m, now);
  broadcast({UpdateKind::dead, id, inc, from, std::nullopt});
}

void Swim::on_left(const MemberId& id, std::uint64_t inc, TimePoint now) {
  if (id == self_) {
    if (!leaving_ && inc >= self_member().incarnation) refute(inc, now, true);
    return;
  }
  auto it = members_.find(id);
  if (it == members_.end()) return;
  Member& m = it->second;
  if (inc < m.incarnation || m.status == MemberStatus::left) return;
  m.incarnation = inc;
  suspicions_.erase(id);
  set_status(m, MemberStatus::left, now);
  emit(MemberEvent::Kind::left, m, now);
  broadcast({UpdateKind::left, id, inc, id, std::nullopt});
}

void Swim::on_state(const MemberId& id, const NodeState& state, TimePoint now) {
  if (id == self_) {
    Member& me = self_member();
    if (state.state_version >= me.state.state_version && !(state == me.state)) {
      // A record from a previous life of this node: supersede it.
      me.state.state_version = state.state_version + 1;
      broadcast_state(me);
    }
    return;
  }
  auto it = members_.find(id);
  if (it == members_.end()) {
    if (pending_states_.size() < kMaxPendingStates || pending_states_.count(id)) {
      auto& slot = pending_states_[id];
      if (state.state_version >= slot.state_version) slot = state;
    }
    return;
  }
  Member& m = it->second;
  if (m.has_state && state.state_version <= m.state.state_version) return;
  m.state = state;
  m.has_state = true;
  emit(MemberEvent::Kind::updated, m, now);
  broadcast_state(m);
}

void Swim::reap(TimePoint now) {
  for (auto it = members_.begin(); it != members_.end();) {
    Member& m = it->second;
    if (it->first != self_ && (m.status == MemberStatus::dead || m.status == MemberStatus::left) &&
        now - m.since >= config_.dead_reap_after) {
      emit(MemberEvent::Kind::reaped, m, now);
      suspicions_.erase(m.id);
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---- Dissemination ---------------------------------------------------------------------------

void Swim::broadcast(const Update& u) {
  queue_.push(u.id, u.kind == UpdateKind::state ? BroadcastQueue::state : BroadcastQueue::membership,
              update_to_wire(u), u.id == self_);
}

void Swim::broadcast_alive(const Member& m) {
  broadcast({UpdateKind::alive, m.id, m.incarnation, m.id, std::nullopt});
}

void Swim::broadcast_state(const Member& m) {
  if (m.has_state) broadcast({UpdateKind::state, m.id, 0, m.id, m.state});
}

void Swim::gossip_round(TimePoint now) {
  if (queue_.empty()) return;
  for (const auto& to : random_members(static_cast<std::size_t>(config_.gossip_fanout), {self_}, true, now)) {
    if (queue_.empty()) break;
    send(to, make(MsgKind::gossip));
  }
}

std::vector<MemberId> Swim::random_members(std::size_t k, const std::set<MemberId>& exclude,
                                           bool include_recent_dead, TimePoint now) {
  std::vector<MemberId> pool;
  for (const auto& [id, m] : members_) {
    if (exclude.count(id)) continue;
    bool live = m.status == MemberStatus::alive || m.status == MemberStatus::suspect;
    bool recent_dead = include_recent_dead && m.status == MemberStatus::dead &&
                       now - m.since < config_.gossip_to_dead;
    if (live || recent_dead) pool.push_back(id);
  }
  // Partial Fisher-Yates: the first k are a uniform sample.
  std::size_t take = std::min(k, pool.size());
  for (std::size_t i = 0; i < take; ++i) {
    std::uniform_int_distribution<std::size_t> pick(i, pool.size() - 1);
    std::swap(pool[i], pool[pick(rng_)]);
  }
  pool.resize(take);
  return pool;
}

void Swim::send(const MemberId& to, Message msg, bool piggyback) {
  json j = message_to_wire(msg);
  if (piggyback) {
    json g = j.contains("g") ? j["g"] : json::array();
    std::size_t before = g.size();
    queue_.fill(g, config_.piggyback_bytes, transmit_limit(), msg.kind == MsgKind::gossip, to);
    stats_.updates_sent += g.size() - before;
    if (!g.empty()) j["g"] = std::move(g);
  }
  if (msg.kind == MsgKind::gossip && !j.contains("g")) return;
  auto bytes = json::to_msgpack(j);
  auto& k = stats_.by_kind[static_cast<std::size_t>(msg.kind)];
  ++k.messages_sent;
  k.bytes_sent += bytes.size();
  outgoing_.push_back({to, std::move(bytes)});
}

// ---- Push-pull (anti-entropy) ----------------------------------------------------------------

std::vector<SyncEntry> Swim::digest() const {
  std::vector<SyncEntry> out;
  out.reserve(members_.size());
  for (const auto& [id, m] : members_) {
    SyncEntry e{id, m.incarnation, m.status, m.has_state ? m.state.state_version : 0, std::nullopt};
    if (id == self_) e.state = m.state;
    out.push_back(std::move(e));
  }
  return out;
}

void Swim::push_pull(const MemberId& to) { Message m = make(MsgKind::sync);
  m.entries = digest();
  send(to, std::move(m)); }

void Swim::merge(const MemberId& from, const std::vector<SyncEntry>& entries, TimePoint now) {
  for (const auto& e : entries) {
    if (e.id == self_ && e.status == MemberStatus::dead) {
      on_dead(e.id, e.incarnation, from, now);
      continue;
    }
    switch (e.status) {
      case MemberStatus::alive: on_alive(e.id, e.incarnation, now, false); break;
      // Like memberlist, a peer's "dead" only makes us suspect: we check for ourselves.
      case MemberStatus::suspect:
      case MemberStatus::dead: on_suspect(e.id, e.incarnation, from, now); break;
      case MemberStatus::left: on_left(e.id, e.incarnation, now); break;
    }
    if (e.state) on_state(e.id, *e.state, now);
  }
}

// ---- Messages --------------------------------------------------------------------------------

void Swim::on_message(const MemberId& from, std::span<const std::uint8_t> bytes, TimePoint now) {
  Message msg;
  try {
    msg = decode_message(bytes, config_.max_message_bytes);
  } catch (const WireError& e) {
    ++stats_.decode_errors;
    stats_.last_decode_error = e.what();
    return;
  }
  auto& k = stats_.by_kind[static_cast<std::size_t>(msg.kind)];
  ++k.messages_received;
  k.bytes_received += bytes.size();
  if (!started_) join({}, now);
  handle(from, msg, now);
}

void Swim::handle(const MemberId& from, const Message& msg, TimePoint now) {
  stats_.updates_received += msg.updates.size();
  for (const auto& u : msg.updates) {
    switch (u.kind) {
      case UpdateKind::alive: on_alive(u.id, u.incarnation, now, true); break;
      case UpdateKind::suspect: on_suspect(u.id, u.incarnation, u.from, now); break;
      case UpdateKind::dead: on_dead(u.id, u.incarnation, u.from, now); break;
      case UpdateKind::left: on_left(u.id, u.incarnation, now); break;
      case UpdateKind::state:
        if (u.state) on_state(u.id, *u.state, now);
        break;
    }
  }
  switch (msg.kind) {
    case MsgKind::ping: send(from, make(MsgKind::ack, msg.seq)); break;
    case MsgKind::ack: {
      if (auto p = probes_.find(msg.seq); p != probes_.end()) {
        const Probe& pr = p->second;
        if (from == pr.target || std::find(pr.helpers.begin(), pr.helpers.end(), from) != pr.helpers.end())
          probes_.erase(p);
      } else if (auto r = relays_.find(msg.seq); r != relays_.end()) {
        Relay relay = r->second;
        relays_.erase(r);
        send(relay.requester, make(MsgKind::ack, relay.requester_seq));
      }
      break;
    }
    case MsgKind::ping_req: {
      if (msg.target == self_) {
        send(from, make(MsgKind::ack, msg.seq));
        break;
      }
      std::uint32_t seq = next_seq_++;
      relays_[seq] = Relay{from, msg.seq, now + config_.probe_timeout + config_.indirect_timeout};
      send(msg.target, make(MsgKind::ping, seq));
      break;
    }
    case MsgKind::gossip: break;
    case MsgKind::sync: {
      // Remember what the requester had before merging, to send only what it lacks.
      std::map<MemberId, std::uint64_t> theirs;
      const NodeState* their_own = nullptr;
      for (const auto& e : msg.entries) {
        theirs[e.id] = e.state_version;
        if (e.id == from && e.state) their_own = &*e.state;
      }
      merge(from, msg.entries, now);
      Message reply = make(MsgKind::sync_reply);
      for (auto e : digest()) {
        const Member& m = members_.at(e.id);
        auto t = theirs.find(e.id);
        bool live = m.status == MemberStatus::alive || m.status == MemberStatus::suspect;
        bool needs = live && m.has_state && (t == theirs.end() || t->second < m.state.state_version);
        // The requester's own record differs from ours at the same version (a restarted process
        // reusing a version): show it ours, so that it supersedes it.
        if (e.id == from && m.has_state && their_own && !(*their_own == m.state) &&
            their_own->state_version <= m.state.state_version)
          needs = true;
        e.state = needs ? std::optional<NodeState>(m.state) : std::nullopt;
        reply.entries.push_back(std::move(e));
      }
      send(from, std::move(reply));
      break;
    }
    case MsgKind::sync_reply: {
      synced_ = true;
      std::map<MemberId, std::uint64_t> theirs;
      for (const auto& e : msg.entries) theirs[e.id] = e.state_version;
      merge(from, msg.entries, now);
      Message push = make(MsgKind::sync_push);
      for (const auto& [id, m] : members_) {
        if (!m.has_state || m.status == MemberStatus::dead || m.status == MemberStatus::left) continue;
        auto t = theirs.find(id);
        if (t != theirs.end() && t->second >= m.state.state_version) continue;
        push.entries.push_back({id, m.incarnation, m.status, m.state.state_version, m.state});
      }
      if (!push.entries.empty()) send(from, std::move(push));
      break;
    }
    case MsgKind::sync_push: merge(from, msg.entries, now); break;
  }
}

}  // namespace llmesh::gossip
