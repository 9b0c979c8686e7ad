// Per-peer limits on requests forwarded by other nodes. A public mesh admits anyone
// (docs/discovery.md), so each serving node bounds what one peer may ask of it: a token bucket
// of requests per minute (with a burst) and a cap on the requests a peer has running at once.
// A request over a limit is answered 429 with the reason code `peer_rate_limited` or
// `peer_concurrency_limited`, never queued. Pure logic over an injected clock.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "identity/node_identity.h"

namespace llmesh::mesh {

struct PeerLimitOptions {
  double requests_per_minute = 60;  // refill rate; 0: no rate limit
  double burst = 20;                // bucket size: requests a quiet peer may send at once
  uint32_t concurrent = 4;          // requests of one peer running at once; 0: no cap
  size_t max_peers = 4096;          // tracked peers; the longest idle are forgotten first
};

class PeerLimits {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PeerLimits(PeerLimitOptions o) : o_(o) {}

  // Held while a request runs; releases its concurrency slot when destroyed.
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept : owner_(other.owner_), peer_(other.peer_) { other.owner_ = nullptr; }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket();

   private:
    friend class PeerLimits;
    Ticket(PeerLimits* owner, const NodeId& peer) : owner_(owner), peer_(peer) {}
    PeerLimits* owner_;
    NodeId peer_;
  };

  struct Decision {
    std::optional<Ticket> ticket;  // admitted
    std::string reason;            // else: "peer_rate_limited" or "peer_concurrency_limited"
    std::string message;           // a sentence for the API error
    double retry_after_s = 0;
  };
  Decision admit(const NodeId& peer, Clock::time_point now = Clock::now());

  struct Stats {
    uint64_t admitted = 0;
    uint64_t rate_limited = 0;
    uint64_t concurrency_limited = 0;
  };
  Stats stats() const;
  const PeerLimitOptions& options() const { return o_; }

 private:
  struct Peer {
    double tokens = 0;
    Clock::time_point updated{};
    uint32_t running = 0;
  };
  void release(const NodeId& peer);

  const PeerLimitOptions o_;
  mutable std::mutex mu_;
  std::map<NodeId, Peer> peers_;
  Stats stats_;
};

}  // namespace llmesh::mesh
