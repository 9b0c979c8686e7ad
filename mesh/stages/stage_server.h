// The serving side of a pipeline stage (docs/stages.md): a node that holds layers [first, last)
// of a model answers "stage" streams. Each stream is one entry node's session: it gets its own
// KV cache (the entry's slots x context, bounded), steps run one at a time per node (the CPU
// is the limit), and the KV is freed when the stream ends, breaks, or sits idle past the TTL.
//
//   StageServer stage(model, "stories260K", opts);
//   node.set_stream_handler([&](auto s) { if (is_stage_stream(s->header())) stage.accept(s); });
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "kernels/thread_pool.h"
#include "model/model.h"
#include "stages/stage_protocol.h"
#include "tensor/dtype.h"
#include "transport/stream.h"

namespace llmesh::mesh::stages {

struct StageServerOptions {
  int threads = 0;            // compute threads (0: all hardware threads)
  int max_streams = 16;       // concurrent entry sessions; more are reset kResetStageBusy
  int max_ctx = 8192;         // largest n_ctx a stream may ask for
  int max_seq = 64;           // largest n_seq a stream may ask for
  size_t max_kv_bytes = size_t{8} << 30;  // KV reserved by all streams together
  DType kv_type = DType::F16;
  std::chrono::milliseconds idle_ttl{std::chrono::minutes(10)};  // idle stream: reset, KV freed
  std::function<void(const std::string&)> log;
};

struct StageServerStats {
  int streams = 0;             // open now
  uint64_t streams_total = 0;
  uint64_t steps = 0;
  uint64_t tokens = 0;         // positions computed
  uint64_t bytes_in = 0, bytes_out = 0;  // step and reply messages
  uint64_t errors = 0;         // err replies and refused streams
  size_t kv_bytes = 0;         // reserved by open streams
};

bool is_stage_stream(std::span<const uint8_t> header);

class StageServer;

// The node's own entry reaching its own stage in process (no network, no message encoding):
// the same steps and replies as a stream session. Keeps the server alive; after the server
// stops, step() throws.
class LocalStageSession {
 public:
  ~LocalStageSession();
  StepReply step(StepRequest& req);

 private:
  friend class StageServer;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class StageServer : public std::enable_shared_from_this<StageServer> {
 public:
  StageServer(std::shared_ptr<const Model> model, std::string model_id, StageServerOptions opt = {});
  ~StageServer();  // stop()
  StageServer(const StageServer&) = delete;
  StageServer& operator=(const StageServer&) = delete;

  // Takes a stream whose OPEN header is a stage OPEN; serves it on a thread of its own.
  void accept(std::shared_ptr<Stream> stream);
  // An in-process session (see LocalStageSession). Throws std::runtime_error saying why when
  // the server would refuse the same OPEN from a stream. Needs the server in a shared_ptr.
  std::unique_ptr<LocalStageSession> open_local(const StageOpen& open);
  // Resets every stream (kResetStageStopping), waits for their threads; local sessions fail.
  void stop();
  bool stopping() const;

  StageServerStats stats() const;
  const Model& model() const { return *model_; }
  const std::string& model_id() const { return model_id_; }

 private:
  friend class LocalStageSession;
  struct Session;
  // Empty when the server takes the OPEN; else why not, with the reset code in `code`.
  std::string check_open(const StageOpen& o, uint32_t& code) const;
  // Allocates the session's KV within the budget; null (with code/why) when it does not fit.
  std::shared_ptr<Session> make_session(const StageOpen& o, uint32_t& code, std::string& why);
  void release(const std::shared_ptr<Session>& s);
  StepReply run_step(Session& s, StepRequest& step);
  void serve(const std::shared_ptr<Session>& s);
  void log(const std::string& line) const;

  std::shared_ptr<const Model> model_;
  std::string model_id_;
  StageServerOptions opt_;
  ThreadPool pool_;
  std::mutex compute_mu_;  // one forward pass at a time on this node

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<std::shared_ptr<Session>> sessions_;  // each served by a detached thread
  bool stopping_ = false;
  StageServerStats stats_;
};

}  // namespace llmesh::mesh::stages
