// A simulated network for the gossip state machine: virtual time, per-link latency with jitter,
// message loss, partitions and killed nodes. Everything is deterministic for a given seed, and
// minutes of mesh life run in milliseconds.
#pragma once

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gossip/swim.h"

namespace llmesh::gossip::sim {

struct LinkProfile {
  Duration min_latency = milliseconds(1);
  Duration max_latency = milliseconds(5);
  double loss = 0.0;
};

// 64 hex digits, like a real node id, so messages have realistic sizes.
inline MemberId node_id(int i) {
  std::mt19937_64 rng(0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(i));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(64, '0');
  for (auto& c : id) c = kHex[rng() & 15];
  return id;
}

inline NodeState sample_state(int i) {
  NodeState s;
  s.role = i % 4 == 3 ? Role::client : Role::server;
  s.api_address = "10.0.0." + std::to_string(i) + ":8080";
  s.mesh_address = "10.0.0." + std::to_string(i) + ":7946";
  s.software_version = "0.1.0";
  s.hardware = {16, 64ull << 30, 40ull << 30, 850.5, i % 2 ? "" : "NVIDIA H100"};
  if (s.role == Role::server)
    s.models.push_back({"Qwen3-8B-Q4_K_M", "", 36, {0, 36}, {{0, 36}}});
  s.load = {1, 0, 4, 42.0};
  return s;
}

class SimNetwork {
 public:
  explicit SimNetwork(std::uint64_t seed, LinkProfile profile = {}) : rng_(seed), profile_(profile) {}

  TimePoint now() const { return now_; }
  Duration elapsed() const { return now_ - TimePoint{}; }

  Swim& add(const MemberId& id, NodeState state, SwimConfig config = {}) {
    nodes_[id] = std::make_unique<Swim>(id, std::move(state), config, rng_());
    killed_.erase(id);
    return *nodes_[id];
  }
  Swim& node(const MemberId& id) { return *nodes_.at(id); }
  bool live(const MemberId& id) const { return nodes_.count(id) && !killed_.count(id); }
  std::vector<MemberId> live_ids() const {
    std::vector<MemberId> out;
    for (const auto& [id, n] : nodes_)
      if (!killed_.count(id)) out.push_back(id);
    return out;
  }

  // kill -9: the node stops ticking and answering; its in-flight messages still arrive.
  void kill(const MemberId& id) { killed_.insert(id); }
  // A node that left stops too (after its leave had time to spread).
  void stop(const MemberId& id) { killed_.insert(id); }

  // Messages between the two groups are dropped until heal().
  void partition(const std::set<MemberId>& a, const std::set<MemberId>& b) {
    for (const auto& x : a)
      for (const auto& y : b) cut_.insert({std::min(x, y), std::max(x, y)});
  }
  void heal() { cut_.clear(); }
  // Drop everything to and from `id` (a node whose network stalls) while true.
  void isolate(const MemberId& id, bool on) {
    if (on)
      isolated_.insert(id);
    else
      isolated_.erase(id);
  }

  void set_profile(LinkProfile p) { profile_ = p; }

  // Every event any node reported: (observer, event).
  std::vector<std::pair<MemberId, MemberEvent>> events;
  std::function<void(const MemberId&, const MemberEvent&)> on_event;

  void step(Duration dt = milliseconds(5)) {
    TimePoint until = now_ + dt;
    while (!in_flight_.empty() && in_flight_.top().at <= until) {
      Packet p = in_flight_.top();
      in_flight_.pop();
      now_ = std::max(now_, p.at);
      if (!live(p.to) || blocked(p.from, p.to)) continue;
      node(p.to).on_message(p.from, p.bytes, now_);
      collect(p.to);
    }
    now_ = until;
    for (auto& [id, n] : nodes_) {
      if (killed_.count(id)) continue;
      n->tick(now_);
      collect(id);
    }
  }
  void run_for(Duration d) {
    TimePoint end = now_ + d;
    while (now_ < end) step();
  }
  // Runs until pred() holds or `limit` passes; returns the time it took, or nullopt.
  std::optional<Duration> run_until(const std::function<bool()>& pred, Duration limit) {
    TimePoint start = now_, end = now_ + limit;
    while (now_ < end) {
      if (pred()) return now_ - start;
      step();
    }
    if (pred()) return now_ - start;
    return std::nullopt;
  }

  // Does every live node other than `id` see `id` with this status?
  bool all_see(const MemberId& id, MemberStatus status) {
    for (const auto& [oid, n] : nodes_) {
      if (oid == id || killed_.count(oid)) continue;
      const Member* m = n->find(id);
      if (!m || m->status != status) return false;
    }
    return true;
  }
  // Does every live node know every live node as alive, with its current state record?
  bool converged() {
    for (const auto& [oid, n] : nodes_) {
      if (killed_.count(oid)) continue;
      for (const auto& [id, other] : nodes_) {
        if (killed_.count(id) || id == oid) continue;
        const Member* m = n->find(id);
        if (!m || m->status != MemberStatus::alive || !m->has_state ||
            m->state.state_version != other->self_state().state_version)
          return false;
      }
    }
    return true;
  }

  std::uint64_t total_bytes_sent() const {
    std::uint64_t b = 0;
    for (const auto& [id, n] : nodes_) b += n->stats().bytes_sent();
    return b;
  }

 private:
  struct Packet {
    TimePoint at;
    std::uint64_t order;
    MemberId from, to;
    std::vector<std::uint8_t> bytes;
    bool operator>(const Packet& o) const { return at != o.at ? at > o.at : order > o.order; }
  };

  bool blocked(const MemberId& a, const MemberId& b) const {
    if (isolated_.count(a) || isolated_.count(b)) return true;
    return cut_.count({std::min(a, b), std::max(a, b)}) > 0;
  }

  void collect(const MemberId& id) {
    Swim& n = node(id);
    for (auto& e : n.take_events()) {
      if (on_event) on_event(id, e);
      events.emplace_back(id, std::move(e));
    }
    for (auto& out : n.take_outgoing()) {
      if (blocked(id, out.to)) continue;
      if (std::uniform_real_distribution<double>(0, 1)(rng_) < profile_.loss) continue;
      auto span = (profile_.max_latency - profile_.min_latency).count();
      Duration lat = profile_.min_latency +
                     Duration(span > 0 ? std::uniform_int_distribution<Duration::rep>(0, span)(rng_) : 0);
      in_flight_.push({now_ + lat, order_++, id, out.to, std::move(out.bytes)});
    }
  }

  std::mt19937_64 rng_;
  LinkProfile profile_;
  TimePoint now_{};
  std::uint64_t order_ = 0;
  std::map<MemberId, std::unique_ptr<Swim>> nodes_;
  std::set<MemberId> killed_, isolated_;
  std::set<std::pair<MemberId, MemberId>> cut_;
  std::priority_queue<Packet, std::vector<Packet>, std::greater<>> in_flight_;
};

// Builds n nodes (ids node_id(0..n-1)); all join through node 0.
inline std::vector<MemberId> start_mesh(SimNetwork& net, int n, SwimConfig config = {}) {
  std::vector<MemberId> ids;
  for (int i = 0; i < n; ++i) {
    ids.push_back(node_id(i));
    net.add(ids.back(), sample_state(i), config);
  }
  for (int i = 0; i < n; ++i) net.node(ids[i]).join(i == 0 ? std::vector<MemberId>{} : std::vector<MemberId>{ids[0]}, net.now());
  return ids;
}

inline double seconds_of(Duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace llmesh::gossip::sim
