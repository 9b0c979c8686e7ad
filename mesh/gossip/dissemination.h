// Piggybacked dissemination (SWIM section 4.1, memberlist's transmit-limited queue): each update
// is sent a bounded number of times, least-sent first, newest first among equals; a newer
// update about the same member (and the same slot: membership or state) replaces the older.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmesh::gossip {

class BroadcastQueue {
 public:
  enum Slot : int { membership = 0, state = 1 };

  // `urgent` updates (this node's own alive, refutation, state, leave) go before all others.
  void push(const std::string& id, Slot slot, nlohmann::json update, bool urgent = false);
  // Appends updates to `out` (a json array) within `budget` bytes of msgpack; with
  // `oversize_first`, one update larger than the budget may go alone. Alive and state updates
  // about `skip` (the recipient, who knows best about itself) stay queued; suspicions about it
  // are sent, so that it can refute them. Each chosen update counts one
  // transmission; updates sent `limit` times are dropped. Returns the bytes added.
  std::size_t fill(nlohmann::json& out, std::size_t budget, int limit, bool oversize_first,
                   const std::string& skip = {});
  void drop(const std::string& id);

  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }
  // Whether an update about `id` in `slot` is still queued.
  bool has(const std::string& id, Slot slot) const;

 private:
  struct Entry {
    std::string id;
    Slot slot;
    nlohmann::json update;
    std::size_t bytes;
    bool urgent;
    bool skippable;  // alive or state: pointless to send to the member it is about
    int transmits;
    std::uint64_t order;
  };
  std::vector<Entry> entries_;
  std::uint64_t counter_ = 0;
};

// memberlist's retransmit limit: mult * ceil(log10(n + 1)).
int retransmit_limit(int mult, std::size_t members);

}  // namespace llmesh::gossip
