#include "gossip/dissemination.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace llmesh::gossip {

void BroadcastQueue::push(const std::string& id, Slot slot, nlohmann::json update, bool urgent) {
  std::erase_if(entries_, [&](const Entry& e) { return e.id == id && e.slot == slot; });
  std::size_t bytes = nlohmann::json::to_msgpack(update).size();
  bool skippable = slot == state || update.value("k", 0) == 1;
  entries_.push_back({id, slot, std::move(update), bytes, urgent, skippable, 0, ++counter_});
}

std::size_t BroadcastQueue::fill(nlohmann::json& out, std::size_t budget, int limit,
                                 bool oversize_first, const std::string& skip) {
  if (entries_.empty()) return 0;
  std::vector<std::size_t> order(entries_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (entries_[a].urgent != entries_[b].urgent) return entries_[a].urgent;
    if (entries_[a].transmits != entries_[b].transmits)
      return entries_[a].transmits < entries_[b].transmits;
    return entries_[a].order > entries_[b].order;
  });
  std::size_t used = 0;
  bool any = false;
  for (std::size_t i : order) {
    Entry& e = entries_[i];
    if (e.skippable && !skip.empty() && e.id == skip) continue;
    bool fits = used + e.bytes <= budget;
    if (!fits && !(oversize_first && !any)) continue;
    out.push_back(e.update);
    used += e.bytes;
    ++e.transmits;
    any = true;
    if (!fits) break;  // the oversize update travels alone
  }
  std::erase_if(entries_, [&](const Entry& e) { return e.transmits >= limit; });
  return used;
}

void BroadcastQueue::drop(const std::string& id) {
  std::erase_if(entries_, [&](const Entry& e) { return e.id == id; });
}

bool BroadcastQueue::has(const std::string& id, Slot slot) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const Entry& e) { return e.id == id && e.slot == slot; });
}

int retransmit_limit(int mult, std::size_t members) {
  return mult * static_cast<int>(std::ceil(std::log10(static_cast<double>(members) + 1.0)));
}

}  // namespace llmesh::gossip
