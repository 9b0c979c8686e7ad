#include "routing/peer_limits.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace llmesh::mesh {

PeerLimits::Ticket::~Ticket() {
  if (owner_) owner_->release(peer_);
}

PeerLimits::Decision PeerLimits::admit(const NodeId& peer, Clock::time_point now) {
  std::lock_guard lk(mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) {
    if (peers_.size() >= o_.max_peers) {
      // Forget the peer idle longest (none of its requests running): bounded memory however
      // many node ids a public mesh sees.
      auto oldest = peers_.end();
      for (auto p = peers_.begin(); p != peers_.end(); ++p)
        if (p->second.running == 0 && (oldest == peers_.end() || p->second.updated < oldest->second.updated))
          oldest = p;
      if (oldest != peers_.end()) peers_.erase(oldest);
    }
    it = peers_.emplace(peer, Peer{o_.burst, now, 0}).first;
  }
  Peer& p = it->second;
  Decision d;
  if (o_.requests_per_minute > 0) {
    double elapsed_s = std::max(0.0, std::chrono::duration<double>(now - p.updated).count());
    p.tokens = std::min(std::max(o_.burst, 1.0), p.tokens + elapsed_s * o_.requests_per_minute / 60.0);
    p.updated = now;
    if (p.tokens < 1) {
      stats_.rate_limited++;
      d.reason = "peer_rate_limited";
      d.retry_after_s = std::ceil((1 - p.tokens) * 60.0 / o_.requests_per_minute);
      d.message = fmt::format(
          "This node takes at most {:g} requests per minute from one peer of a public mesh (burst {:g}); "
          "retry in {:g} s",
          o_.requests_per_minute, o_.burst, d.retry_after_s);
      return d;
    }
  } else {
    p.updated = now;
  }
  if (o_.concurrent > 0 && p.running >= o_.concurrent) {
    stats_.concurrency_limited++;
    d.reason = "peer_concurrency_limited";
    d.retry_after_s = 1;
    d.message = fmt::format("This node runs at most {} requests at once for one peer of a public mesh", o_.concurrent);
    return d;
  }
  if (o_.requests_per_minute > 0) p.tokens -= 1;
  p.running++;
  stats_.admitted++;
  d.ticket.emplace(Ticket(this, peer));
  return d;
}

void PeerLimits::release(const NodeId& peer) {
  std::lock_guard lk(mu_);
  auto it = peers_.find(peer);
  if (it != peers_.end() && it->second.running > 0) it->second.running--;
}

PeerLimits::Stats PeerLimits::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace llmesh::mesh
