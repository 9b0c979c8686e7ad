// The asking side of exact mode (docs/moe.md): a mixture-of-experts shard routes each token over
// every expert of the model, and runs those it lacks on the shards that hold them, over
// "experts" streams. A holder counts only while it is connected, its round trip is within
// max_rtt ("when latency allows"), and it has not failed within the backoff; a failed request
// makes the forward pass route that layer among the shard's own experts instead.
#pragma once
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "model/forward.h"
#include "transport/transport.h"

namespace llmesh::mesh::experts {

// A node serving a shard of the same plan (from gossip).
struct ExpertHolder {
  NodeId id;
  uint32_t shard = 0;
};

struct RemoteExpertOptions {
  std::chrono::microseconds max_rtt{std::chrono::milliseconds(20)};  // slower holders are not asked
  std::chrono::milliseconds timeout{std::chrono::seconds(5)};        // one request's answer
  std::chrono::milliseconds backoff{std::chrono::seconds(10)};       // a failed holder is skipped this long
  std::chrono::milliseconds refresh{std::chrono::milliseconds(250)}; // holders re-read at most this often
  std::function<void(const std::string&)> log;
};

struct RemoteExpertClientStats {
  uint64_t requests = 0;  // requests answered
  uint64_t rows = 0;      // token rows computed elsewhere
  uint64_t failures = 0;  // compute() calls that failed (the layer fell back to the held experts)
  double seconds = 0;     // inside compute()
};

class RemoteExpertClient : public RemoteExperts {
 public:
  // shards[i][layer]: the sorted experts of shard i of the plan; `self` is this node's shard.
  RemoteExpertClient(Transport& transport, std::string plan_digest, std::vector<std::vector<std::vector<int>>> shards,
                     int self, int n_embd, std::function<std::vector<ExpertHolder>()> holders,
                     RemoteExpertOptions opt = {});
  ~RemoteExpertClient() override;

  void available(int layer, std::vector<uint8_t>& available) override;
  void compute(int layer, const std::vector<Call>& calls) override;
  RemoteExpertClientStats stats() const;  // thread-safe
  // From any thread: waits for a computation in progress, then offers nothing more (the forward
  // pass routes among the held experts). Call before the transport goes away.
  void disable();

 private:
  struct Usable {
    NodeId id;
    uint32_t shard;
    std::chrono::microseconds rtt;
  };
  void refresh();
  const Usable* holder_of(int layer, int expert) const;
  void run_on(const Usable& h, int layer, const std::vector<const Call*>& calls);

  Transport& transport_;
  std::string plan_;
  std::vector<std::vector<std::vector<int>>> shards_;
  int self_;
  int n_embd_;
  std::function<std::vector<ExpertHolder>()> holders_;
  RemoteExpertOptions opt_;
  std::vector<Usable> usable_;  // best first
  std::chrono::steady_clock::time_point refreshed_{};
  std::map<NodeId, std::chrono::steady_clock::time_point> failed_;
  std::map<NodeId, std::shared_ptr<Stream>> streams_;
  uint64_t next_id_ = 1;
  std::mutex use_mu_;  // held by available() and compute(); disable() takes it
  bool disabled_ = false;
  mutable std::mutex stats_mu_;
  RemoteExpertClientStats stats_;
};

}  // namespace llmesh::mesh::experts
