// Nodes for the routing tests, all in one process on 127.0.0.1: a mesh transport each, and
// optionally a real API server on a scripted model (the "far" node that serves it) with a
// ForwardServer in front, or an API server without a model whose MeshRouter forwards (the
// "near" node a client talks to).
#pragma once
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/server/server_fixture.h"
#include "routing/forward_server.h"
#include "routing/mesh_router.h"
#include "routing/request_format.h"
#include "transport/transport.h"

namespace llmesh::test {

using namespace std::chrono_literals;
using mesh::NodeId;
using mesh::Stream;

inline mesh::TransportOptions fast_transport() {
  mesh::TransportOptions o;
  o.handshake_timeout = 2000ms;
  o.ping_interval = 250ms;
  o.max_missed_pings = 20;  // a loaded test machine must not look like a dead peer
  o.drain_timeout = 500ms;
  o.log = [](const std::string& line) {
    if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "transport: %s\n", line.c_str());
  };
  return o;
}

// The scripted model, slowed down on demand (a generation long enough to be cancelled).
class SlowBatchModel : public BatchModel {
 public:
  explicit SlowBatchModel(std::unique_ptr<BatchModel> inner) : inner_(std::move(inner)) {}
  int n_vocab() const override { return inner_->n_vocab(); }
  int n_ctx() const override { return inner_->n_ctx(); }
  int n_slots() const override { return inner_->n_slots(); }
  std::span<const float> run(const Batch& b) override {
    if (int d = delay_ms.load()) std::this_thread::sleep_for(std::chrono::milliseconds(d));
    return inner_->run(b);
  }
  void truncate(int slot, int n) override { inner_->truncate(slot, n); }
  std::atomic<int> delay_ms{0};

 private:
  std::unique_ptr<BatchModel> inner_;
};

inline std::string long_answer() {
  std::string s;
  // About 250 tokens. The scripted model re-encodes the rest of its answer at every step, so a
  // longer one costs CPU; slowness comes from SlowBatchModel's delay instead.
  for (int i = 0; i < 25; ++i) s += "and then the little robot walked a bit further ";
  return s;
}

inline std::vector<ScriptRule> routing_script() {
  return {{"long story", long_answer()}, {"", "Hello from the far node, friend."}};
}

// A real API server on the scripted model ("scripted", alias "scripted-alias").
class ScriptedApi {
 public:
  ScriptedApi() {
    file_ = GgufFile::open(model_path("qwen3-tiny-q8_0.gguf"));
    tok_ = Tokenizer::from_gguf(*file_);
    model_ = std::make_unique<SlowBatchModel>(std::make_unique<ScriptedBatchModel>(*tok_, routing_script(), 1024, 2));
    SchedulerOptions so;
    so.n_parallel = 2;
    so.max_queue = 8;
    sched_ = std::make_unique<Scheduler>(*model_, so);
    sm_.id = "scripted";
    sm_.aliases = {"scripted-alias"};
    sm_.tokenizer = tok_.get();
    sm_.scheduler = sched_.get();
    sm_.chat_template = api::ChatTemplate::parse(*file_->opt_string("tokenizer.chat_template"));
    sm_.describe_from_template();
    api::ServerOptions opt;
    opt.port = 0;
    opt.max_queue = 8;
    opt.keepalive = 50ms;
    opt.log_requests = false;
    opt.api_key = "far-secret";
    server_ = std::make_unique<api::ApiServer>(sm_, opt);
    server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~ScriptedApi() {
    server_->stop();
    thread_.join();
  }
  int port() const { return server_->port(); }
  Scheduler& scheduler() { return *sched_; }
  SlowBatchModel& model() { return *model_; }
  api::ApiServer& server() { return *server_; }
  static constexpr const char* kApiKey = "far-secret";

 private:
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<SlowBatchModel> model_;
  std::unique_ptr<Scheduler> sched_;
  api::ServedModel sm_;
  std::unique_ptr<api::ApiServer> server_;
  std::thread thread_;
};

// One mesh node: a transport, optionally a ForwardServer taking its "http" streams, optionally
// an API server without a model that forwards through a MeshRouter. Streams it does not
// forward are kept in `held` (hold_streams) or reset NO_HANDLER.
class MeshNode {
 public:
  struct Setup {
    std::optional<mesh::ForwardServerOptions> forward;  // serve forwarded requests
    bool router_api = false;                            // an API server with a MeshRouter, no model
    bool hold_streams = false;                          // keep other streams unanswered
    mesh::MeshRouterOptions router;
  };
  explicit MeshNode(Setup s) {
    hold_ = s.hold_streams;
    mesh::Transport::Callbacks cb;
    // Runs on the transport's I/O thread: hands the stream over and returns.
    cb.on_stream = [this](std::shared_ptr<Stream> st) {
      if (fwd && mesh::routing::stream_type(st->header()) == mesh::routing::kHttpStreamType) {
        fwd->accept(std::move(st));
      } else if (hold_) {
        std::lock_guard lk(m_);
        held.push_back(std::move(st));
      } else {
        st->reset(mesh::ResetCode::NO_HANDLER);
      }
    };
    transport = std::make_unique<mesh::Transport>(mesh::NodeIdentity::generate(), fast_transport(), cb);
    port = transport->bind("127.0.0.1", 0);
    if (s.router_api) {
      router = std::make_unique<mesh::MeshRouter>(*transport, [this] { return targets(); }, s.router);
      api::ServerOptions opt;
      opt.port = 0;
      opt.keepalive = 50ms;
      opt.log_requests = std::getenv("LLMESH_TEST_LOG") != nullptr;
      api_ = std::make_unique<api::ApiServer>(nullptr, opt, router.get());
      api_->bind();
      api_thread_ = std::thread([this] { api_->run(); });
    }
    // Set before any peer can connect (nobody has this node's port or id yet).
    if (s.forward) {
      auto o = *s.forward;
      if (o.port == 0 && api_) o.port = api_->port();  // its own API
      if (!o.log) o.log = [](const std::string& line) {
        if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "forward: %s\n", line.c_str());
      };
      fwd = std::make_unique<mesh::ForwardServer>(o);
    }
  }
  ~MeshNode() { shutdown(); }
  void shutdown() {
    if (api_) {
      api_->stop();
      api_thread_.join();
      api_.reset();
    }
    if (transport) transport->stop();
    if (fwd) fwd->stop();
  }

  const NodeId& id() const { return transport->id(); }
  void dial(MeshNode& other) {
    mesh::CloseReason why;
    auto info = transport->connect("127.0.0.1", other.port, other.id(), &why);
    ASSERT_TRUE(info) << why.describe();
  }
  // What the router sees (the test plays gossip).
  void set_targets(std::vector<mesh::RouteTarget> t) {
    std::lock_guard lk(m_);
    targets_ = std::move(t);
  }
  std::vector<mesh::RouteTarget> targets() {
    std::lock_guard lk(m_);
    return targets_;
  }
  int api_port() const { return api_->port(); }
  std::vector<std::shared_ptr<Stream>> held_streams() {
    std::lock_guard lk(m_);
    return held;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", api_->port());
    c.set_read_timeout(30);
    return c;
  }

  std::unique_ptr<mesh::ForwardServer> fwd;
  std::unique_ptr<mesh::Transport> transport;
  std::unique_ptr<mesh::MeshRouter> router;
  uint16_t port = 0;

 private:
  std::mutex m_;
  std::vector<std::shared_ptr<Stream>> held;
  bool hold_ = false;
  std::vector<mesh::RouteTarget> targets_;
  std::unique_ptr<api::ApiServer> api_;
  std::thread api_thread_;
};

// A gossip record of a node serving the scripted model whole.
inline mesh::RouteTarget serving(const NodeId& id, const std::string& model = "scripted", uint32_t active = 0,
                                 uint32_t queued = 0) {
  mesh::RouteTarget t;
  t.id = id;
  t.state.role = gossip::Role::server;
  gossip::ModelInfo m;
  m.name = model;
  m.total_layers = 4;
  m.loaded = {0, 4};
  m.context_length = 1024;
  m.created = 1700000000;
  if (model == "scripted") m.aliases = {"scripted-alias"};
  t.state.models = {m};
  t.state.load = {active, queued, 2, 0};
  t.rtt = std::chrono::microseconds(200);
  return t;
}

}  // namespace llmesh::test
