// The serving side of forwarded requests: each "http" stream a peer opens (request format:
// routing/request_format.h, docs/protocol.md "Routing") is performed against this node's own
// HTTP API over loopback, with `X-Llmesh-Forwarded: <caller id>` so the API never forwards it
// again, and the answer is streamed back as it arrives. A caller that resets the stream (its
// client went away) aborts the local request, and the local server cancels the generation.
//
//   ForwardServer fwd({.host = "127.0.0.1", .port = api_port, .api_key = key});
//   callbacks.on_stream = [&](std::shared_ptr<Stream> s) {
//     if (routing::stream_type(s->header()) == "http") fwd.accept(std::move(s));
//     else s->reset(ResetCode::NO_HANDLER);
//   };
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

#include "routing/peer_limits.h"
#include "transport/stream.h"

namespace llmesh::mesh {

struct ForwardServerOptions {
  std::string host = "127.0.0.1";  // this node's own API (a loopback address)
  int port = 9337;
  std::string api_key;             // sent as "Authorization: Bearer KEY" when set
  size_t max_concurrent = 256;     // streams served at once; more are reset REFUSED
  uint64_t max_body_bytes = 32u << 20;  // larger announced bodies are refused (0x100)
  uint64_t max_total_body_bytes = 256u << 20;  // announced bodies held at once; beyond: REFUSED
  std::chrono::milliseconds body_timeout{30000};       // longest wait for each body message
  std::chrono::milliseconds interim_interval{5000};    // "still working" heads before the real one
  std::chrono::milliseconds write_stall_timeout{60000};  // caller not reading for this long: reset
  std::chrono::seconds local_read_timeout{600};        // the local API's silence limit
  std::chrono::milliseconds poll_interval{50};         // how often caller resets are looked for
  // Per-peer limits (a public mesh); null: none.
  std::shared_ptr<PeerLimits> peer_limits;
  // One line per refused or failed stream. Default: stderr.
  std::function<void(const std::string&)> log;
};

class ForwardServer {
 public:
  explicit ForwardServer(ForwardServerOptions opt);
  ~ForwardServer();  // stop()
  ForwardServer(const ForwardServer&) = delete;
  ForwardServer& operator=(const ForwardServer&) = delete;

  // Takes a stream a peer opened. Safe on the transport's I/O thread: returns at once (the
  // exchange runs on its own worker thread). false: refused (too many, or stopping) and the
  // stream was reset REFUSED.
  bool accept(std::shared_ptr<Stream> stream);

  // Refuses new streams, aborts the running ones (REFUSED before their head, CANCEL after) and
  // waits for every worker.
  void stop();

  struct Stats {
    uint64_t accepted = 0;     // streams taken
    uint64_t refused = 0;      // reset REFUSED (limit or stopping)
    uint64_t bad_request = 0;  // reset 0x100: the header or body broke the format
    uint64_t completed = 0;    // answered to the end
    uint64_t cancelled = 0;    // the caller reset the stream (or stop())
    uint64_t failed = 0;       // the local API failed
    uint64_t rate_limited = 0;  // answered 429: over the peer's limits
    size_t active = 0;
    uint64_t body_bytes = 0;   // announced bodies of the running exchanges
  };
  Stats stats() const;

 private:
  struct Exchange;
  void run(Exchange& ex);
  void monitor();
  void log(const std::string& line) const;

  ForwardServerOptions opt_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::list<std::shared_ptr<Exchange>> exchanges_;
  bool stopping_ = false;
  uint64_t body_bytes_ = 0;  // announced bodies of the running exchanges
  bool monitor_exit_ = false;
  Stats stats_;
  std::thread monitor_;
};

}  // namespace llmesh::mesh
