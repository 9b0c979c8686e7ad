// The holding side of exact mode (docs/moe.md): a mixture-of-experts shard answers "experts"
// streams from the other shards of its plan, running the experts it holds on the rows they send.
// One thread per stream; computations run one at a time on the server's own thread pool.
//
//   ExpertServer experts(model, plan_digest, opts);
//   node.set_stream_handler([&](auto s) { if (is_experts_stream(s->header())) experts.accept(s); });
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernels/thread_pool.h"
#include "model/expert_ffn.h"
#include "model/model.h"
#include "transport/stream.h"

namespace llmesh::mesh::experts {

struct ExpertServerOptions {
  int threads = 1;
  int max_streams = 32;
  std::function<void(const std::string&)> log;
};

struct ExpertServerStats {
  int streams = 0;  // open now
  uint64_t streams_total = 0;
  uint64_t requests = 0;
  uint64_t rows = 0;
  uint64_t errors = 0;  // err replies and refused streams
};

class ExpertServer {
 public:
  ExpertServer(const Model& model, std::string plan_digest, ExpertServerOptions opt = {});
  ~ExpertServer();  // stop()
  ExpertServer(const ExpertServer&) = delete;
  ExpertServer& operator=(const ExpertServer&) = delete;

  void accept(std::shared_ptr<Stream> stream);
  void stop();
  ExpertServerStats stats() const;

 private:
  void serve(std::shared_ptr<Stream> stream);
  const Model& model_;
  std::string plan_;
  ExpertServerOptions opt_;
  ThreadPool pool_;
  ExpertFfn ffn_;
  std::mutex compute_mu_;
  mutable std::mutex mu_;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers_;  // finished ones are joined at the next accept
  std::vector<std::shared_ptr<Stream>> streams_;
  std::atomic<bool> stopping_{false};
  ExpertServerStats stats_;
};

}  // namespace llmesh::mesh::experts
