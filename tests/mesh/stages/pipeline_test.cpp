// A split model in one process: stage servers on their own transports (loopback TLS), the
// entry's PipelineBatchModel under the real scheduler. Greedy output must equal one node's
// (GOLDEN.txt), F32 hidden states must give bit-identical logits, and a stage that dies in the
// middle of a generation must not change the answer.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>

#include "engine/scheduler/fake_model.h"
#include "identity/node_identity.h"
#include "model/forward.h"
#include "scheduler/scheduler.h"
#include "speculative/model_draft.h"
#include "speculative/ngram_draft.h"
#include "stages/pipeline.h"
#include "stages/stage_server.h"
#include "test_paths.h"
#include "transport/transport.h"

namespace llmesh {
namespace {

using namespace std::chrono_literals;
using namespace mesh::stages;
using mesh::NodeId;
using test::RecordingSink;

const std::vector<int32_t> kGolden = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317,
                                      426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282,
                                      295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352};

mesh::TransportOptions transport_options() {
  mesh::TransportOptions o;
  o.handshake_timeout = 2000ms;
  o.ping_interval = 250ms;
  o.max_missed_pings = 20;
  o.drain_timeout = 200ms;
  o.log = [](const std::string& line) {
    if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "transport: %s\n", line.c_str());
  };
  return o;
}

std::string model_file() { return test::model_path("stories260K-f32.gguf"); }

// A node running layers [first, last) as a stage server.
struct StageNode {
  std::shared_ptr<StageServer> server;
  std::unique_ptr<mesh::Transport> transport;
  uint16_t port = 0;

  StageNode(int first, int last, std::string model_id = "stories", StageServerOptions so = {}) {
    ModelOptions mo;
    mo.layers = {first, last};
    std::shared_ptr<const Model> model = Model::load(model_file(), mo);
    so.threads = 1;
    server = std::make_shared<StageServer>(model, model_id, so);
    mesh::Transport::Callbacks cb;
    cb.on_stream = [this](std::shared_ptr<mesh::Stream> s) {
      if (is_stage_stream(s->header()))
        server->accept(std::move(s));
      else
        s->reset(mesh::ResetCode::NO_HANDLER);
    };
    transport = std::make_unique<mesh::Transport>(mesh::NodeIdentity::generate(), transport_options(), cb);
    port = transport->bind("127.0.0.1", 0);
  }
  ~StageNode() { kill(); }
  // Like kill -9 as far as the entry can tell: connections drop, streams die.
  void kill() {
    if (transport) transport->stop();
    if (server) server->stop();
  }
  NodeId id() const { return transport->id(); }
};

// The entry: layers [0, k) locally, a pipeline over the stage nodes.
struct Entry {
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  ThreadPool pool{1};
  std::unique_ptr<Forward> fwd;
  mesh::Transport transport{mesh::NodeIdentity::generate(), transport_options()};
  std::mutex mu;
  std::vector<StageCandidate> cands;
  std::unique_ptr<PipelineBatchModel> pipe;
  std::vector<std::string> log;

  std::shared_ptr<StageServer> own_stage;  // the entry's own stage, reached in process

  Entry(int k, int n_seq, HiddenFormat f = HiddenFormat::F16) {
    ModelOptions mo;
    mo.layers = {0, k};
    model = Model::load(model_file(), mo);
    KvCacheOptions kv;
    kv.n_ctx = 256;
    kv.n_seq = n_seq;
    cache = std::make_unique<KvCache>(model->config(), 0, k, kv);
    fwd = std::make_unique<Forward>(*model, *cache, pool);
    PipelineOptions po;
    po.model_id = "stories";
    po.format = f;
    po.poll = 50ms;
    po.route_wait = 2s;
    po.recovery_timeout = 10s;
    po.open_local = [this](const StageOpen& o) -> std::unique_ptr<LocalStageSession> {
      return own_stage ? own_stage->open_local(o) : nullptr;
    };
    po.log = [this](const std::string& l) {
      std::lock_guard lk(mu);
      log.push_back(l);
      if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "%s\n", l.c_str());
    };
    pipe = std::make_unique<PipelineBatchModel>(
        *fwd, transport,
        [this] {
          std::lock_guard lk(mu);
          return cands;
        },
        [this](const NodeId& id) { return transport.connected(id); }, po);
  }
  void add(StageNode& n, int first, int last, double rtt = 0) {
    ASSERT_TRUE(transport.connect("127.0.0.1", n.port, n.id()).has_value());
    std::lock_guard lk(mu);
    cands.push_back({n.id(), first, last, rtt});
  }
  // Runs layers [first, last) itself as a stage (the route passes through this node).
  void hold(int first, int last) {
    ModelOptions mo;
    mo.layers = {first, last};
    StageServerOptions so;
    so.threads = 1;
    own_stage = std::make_shared<StageServer>(std::shared_ptr<const Model>(Model::load(model_file(), mo)), "stories", so);
    std::lock_guard lk(mu);
    cands.push_back({transport.id(), first, last, 0});
  }
  void remove(const NodeId& id) {
    std::lock_guard lk(mu);
    std::erase_if(cands, [&](const StageCandidate& c) { return c.node == id; });
  }
};

struct Single {
  std::unique_ptr<Model> model = Model::load(model_file());
  std::unique_ptr<KvCache> cache;
  ThreadPool pool{1};
  std::unique_ptr<Forward> fwd;
  std::unique_ptr<LocalBatchModel> bm;
  Single() {
    KvCacheOptions kv;
    kv.n_ctx = 256;
    cache = std::make_unique<KvCache>(model->config(), 0, model->config().n_layer, kv);
    fwd = std::make_unique<Forward>(*model, *cache, pool);
    bm = std::make_unique<LocalBatchModel>(*fwd);
  }
};

GenerationRequest greedy(std::vector<int32_t> prompt, int n) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = n;
  r.sampling.temperature = 0;
  return r;
}

std::vector<int32_t> generate(BatchModel& m, std::vector<int32_t> prompt, int n,
                              std::function<void(int)> on_token = {}, DraftSource* draft = nullptr) {
  SchedulerOptions so;
  so.n_parallel = 1;
  so.draft = draft;
  // A fixed window: every step drafts, so trip counts do not depend on the machine's timing
  // (the adaptive policy may find drafting not worth it for a model this small).
  so.window.adaptive = false;
  Scheduler s(m, so);
  auto sink = std::make_shared<RecordingSink>();
  if (on_token) {
    struct Hook : GenerationSink {
      std::shared_ptr<RecordingSink> inner;
      std::function<void(int)> fn;
      int n = 0;
      bool on_token(const TokenEvent& ev) override {
        fn(++n);
        return inner->on_token(ev);
      }
      void on_done(const GenerationResult& r) override { inner->on_done(r); }
    };
    auto h = std::make_shared<Hook>();
    h->inner = sink;
    h->fn = on_token;
    s.submit(greedy(std::move(prompt), n), h);
  } else {
    s.submit(greedy(std::move(prompt), n), sink);
  }
  EXPECT_TRUE(sink->wait(60s));
  EXPECT_EQ(sink->result().finish, FinishReason::Length) << sink->result().error;
  return sink->tokens();
}

TEST(Pipeline, TwoStagesGiveTheGoldenGreedyOutput) {
  StageNode b(2, 5);
  Entry e(2, 1);
  e.add(b, 2, 5);
  EXPECT_EQ(generate(*e.pipe, {1}, 40), kGolden);
  auto st = e.pipe->stats();
  ASSERT_EQ(st.route.size(), 1u);
  EXPECT_EQ(st.route[0].node, b.id());
  EXPECT_EQ(st.recoveries, 0u);
  // Greedy needs one candidate per token: a few dozen bytes back per step, not the vocabulary.
  EXPECT_LT(st.bytes_received / st.steps, 64u);
  EXPECT_EQ(b.server->stats().streams, 1);
}

TEST(Pipeline, ThreeStagesInEveryHiddenFormat) {
  StageNode b(1, 3), c(3, 5);
  for (HiddenFormat f : {HiddenFormat::F32, HiddenFormat::F16}) {
    Entry e(1, 1, f);
    e.add(b, 1, 3);
    e.add(c, 3, 5);
    EXPECT_EQ(generate(*e.pipe, {1}, 40), kGolden) << hidden_format_name(f);
    EXPECT_EQ(e.pipe->stats().route.size(), 2u);
  }
  // 8-bit hidden states are approximate: the story starts the same.
  Entry e(1, 1, HiddenFormat::Q8);
  e.add(b, 1, 3);
  e.add(c, 3, 5);
  auto q8 = generate(*e.pipe, {1}, 40);
  ASSERT_EQ(q8.size(), 40u);
  EXPECT_EQ(std::vector<int32_t>(q8.begin(), q8.begin() + 8), std::vector<int32_t>(kGolden.begin(), kGolden.begin() + 8));
}

TEST(Pipeline, AnEntryWithOnlyTheEmbeddingsRunsItsOwnStageInProcess) {
  // The usual split: the entry holds [0, 2) as a stage of its own and embeds the tokens; its
  // hop runs in process, only the hop to [2, 5) crosses the network.
  StageNode b(2, 5);
  Entry e(0, 1);
  e.hold(0, 2);
  e.add(b, 2, 5);
  EXPECT_EQ(generate(*e.pipe, {1}, 40), kGolden);
  auto st = e.pipe->stats();
  ASSERT_EQ(st.route.size(), 2u);
  EXPECT_EQ(st.route[0].node, e.transport.id());
  EXPECT_EQ(st.stage_messages, st.steps);  // one network message per step: the local hop sends none
  EXPECT_EQ(e.own_stage->stats().streams, 1);
  EXPECT_GE(e.own_stage->stats().tokens, 40u);
}

TEST(Pipeline, F32HiddenStatesGiveBitIdenticalLogits) {
  StageNode b(2, 5);
  Entry e(2, 1, HiddenFormat::F32);
  e.add(b, 2, 5);
  Single one;
  Batch batch;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432, 383};
  for (size_t i = 0; i < prompt.size(); ++i) batch.add(prompt[i], static_cast<int32_t>(i), 0, true);
  // out_top left empty: whole rows come back.
  auto split = e.pipe->run(batch);
  std::vector<float> a(split.begin(), split.end());
  auto whole = one.bm->run(batch);
  ASSERT_EQ(a.size(), whole.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], whole[i]) << "logit " << i;
}

TEST(Pipeline, ConcurrentRequestsShareTheStages) {
  StageNode b(2, 5);
  Entry e(2, 3);
  e.add(b, 2, 5);
  SchedulerOptions so;
  so.n_parallel = 3;
  so.step_tokens = 4;  // prompts in chunks, interleaved with decodes
  Scheduler s(*e.pipe, so);
  const std::vector<std::vector<int32_t>> prompts = {{1}, {1, 403, 407, 261, 378}, {1, 403, 407}};
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (const auto& p : prompts) {
    sinks.push_back(std::make_shared<RecordingSink>());
    s.submit(greedy(p, 20), sinks.back());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(sinks[i]->wait(60s));
    Single one;
    EXPECT_EQ(sinks[i]->tokens(), generate(*one.bm, prompts[i], 20)) << "request " << i;
  }
}

TEST(Pipeline, AStageKilledMidGenerationIsReplacedAndTheAnswerIsUnchanged) {
  StageNode b1(2, 5), b2(2, 5);
  Entry e(2, 1);
  // b1 first: lower RTT.
  e.add(b1, 2, 5, 1.0);
  e.add(b2, 2, 5, 2.0);
  std::atomic<bool> killed{false};
  std::thread killer;
  auto tokens = generate(*e.pipe, {1}, 40, [&](int n) {
    if (n == 12 && !killed.exchange(true)) killer = std::thread([&] { b1.kill(); });
    if (n == 12) killer.join();  // the next step runs with b1 gone
  });
  EXPECT_EQ(tokens, kGolden);
  auto st = e.pipe->stats();
  EXPECT_EQ(st.recoveries, 1u);
  EXPECT_GE(st.replayed_tokens, 12u);  // BOS + the generated tokens rebuilt on b2
  ASSERT_EQ(st.route.size(), 1u);
  EXPECT_EQ(st.route[0].node, b2.id());
  EXPECT_LT(st.last_recovery_ms, 5000);
}

// A draft model on the entry (the whole q4_0 model, as --draft runs it).
std::unique_ptr<ModelDraft> entry_draft(ThreadPool& pool) {
  std::shared_ptr<const Model> d = Model::load(test::model_path("stories260K-q4_0.gguf"));
  ModelDraftOptions o;
  o.n_slots = 1;
  o.n_ctx = 256;
  return std::make_unique<ModelDraft>(d, "q4_0", pool, o);
}

TEST(Pipeline, SpeculationSendsOneTripPerWindowAndKeepsTheGoldenOutput) {
  StageNode b(2, 5);
  {
    Entry e(2, 1);
    e.add(b, 2, 5);
    auto draft = entry_draft(e.pool);
    EXPECT_EQ(generate(*e.pipe, {1}, 40, {}, draft.get()), kGolden);
    auto st = e.pipe->stats();
    // Each step carries a whole window through the stage: fewer trips than tokens.
    EXPECT_LT(st.steps, 30u) << st.steps << " trips for 40 tokens";
    EXPECT_EQ(st.recoveries, 0u);
  }
  {
    Entry e(2, 1);
    e.add(b, 2, 5);
    NgramDraft ngram;
    EXPECT_EQ(generate(*e.pipe, {1}, 40, {}, &ngram), kGolden);
  }
}

TEST(Pipeline, AStageKilledWhileSpeculatingIsReplacedAndTheAnswerIsUnchanged) {
  // The replay after the kill rebuilds the KV from the entry's history, which speculation
  // keeps rolling back: a stale history would change the answer.
  StageNode b1(2, 5), b2(2, 5);
  Entry e(2, 1);
  e.add(b1, 2, 5, 1.0);
  e.add(b2, 2, 5, 2.0);
  auto draft = entry_draft(e.pool);
  std::thread killer;
  auto tokens = generate(
      *e.pipe, {1}, 40,
      [&](int n) {
        if (n == 15) {
          killer = std::thread([&] { b1.kill(); });
          killer.join();
        }
      },
      draft.get());
  EXPECT_EQ(tokens, kGolden);
  auto st = e.pipe->stats();
  EXPECT_EQ(st.recoveries, 1u);
  ASSERT_EQ(st.route.size(), 1u);
  EXPECT_EQ(st.route[0].node, b2.id());
}

TEST(Pipeline, AMiddleStageKilledInAThreeStageSplit) {
  StageNode b(1, 3), b_spare(1, 3), c(3, 5);
  Entry e(1, 1);
  e.add(b, 1, 3, 1.0);
  e.add(b_spare, 1, 3, 5.0);
  e.add(c, 3, 5);
  std::thread killer;
  auto tokens = generate(*e.pipe, {1}, 40, [&](int n) {
    if (n == 20) {
      killer = std::thread([&] { b.kill(); });
      killer.join();
    }
  });
  EXPECT_EQ(tokens, kGolden);
  auto st = e.pipe->stats();
  EXPECT_EQ(st.recoveries, 1u);
  ASSERT_EQ(st.route.size(), 2u);
  EXPECT_EQ(st.route[0].node, b_spare.id());
}

TEST(Pipeline, LayersCoveredOnlyAfterAFailureWaitForANewNode) {
  // The only node with [2, 5) dies; another one appears a moment later (the planner gave the
  // layers to someone else) and the generation goes on there.
  auto b1 = std::make_unique<StageNode>(2, 5);
  Entry e(2, 1);
  e.add(*b1, 2, 5);
  std::unique_ptr<StageNode> b2;
  std::thread later;
  auto tokens = generate(*e.pipe, {1}, 40, [&](int n) {
    if (n == 10) {
      b1->kill();
      e.remove(b1->id());
      later = std::thread([&] {
        std::this_thread::sleep_for(300ms);
        b2 = std::make_unique<StageNode>(2, 5);
        e.add(*b2, 2, 5);
      });
    }
  });
  later.join();
  EXPECT_EQ(tokens, kGolden);
  EXPECT_EQ(e.pipe->stats().recoveries, 1u);
}

TEST(Pipeline, NoRouteFailsTheRequestWithAClearError) {
  StageNode b(3, 5);  // leaves layer 2 uncovered
  Entry e(2, 1);
  e.add(b, 3, 5);
  SchedulerOptions so;
  so.n_parallel = 1;
  Scheduler s(*e.pipe, so);
  auto sink = std::make_shared<RecordingSink>();
  s.submit(greedy({1}, 5), sink);
  ASSERT_TRUE(sink->wait(30s));
  EXPECT_EQ(sink->result().finish, FinishReason::Error);
  EXPECT_NE(sink->result().error.find("no route through the mesh for layers [2, 5) of stories"), std::string::npos)
      << sink->result().error;
}

TEST(Pipeline, AStageWithAnotherModelIsRoutedAround) {
  StageNode wrong(2, 5, "another-model"), right(2, 5);
  Entry e(2, 1);
  e.add(wrong, 2, 5, 1.0);  // preferred, but refuses the stream
  e.add(right, 2, 5, 9.0);
  EXPECT_EQ(generate(*e.pipe, {1}, 10), std::vector<int32_t>(kGolden.begin(), kGolden.begin() + 10));
  EXPECT_EQ(e.pipe->stats().route[0].node, right.id());
  EXPECT_GE(wrong.server->stats().errors, 1u);
}

TEST(Pipeline, AnIdleSessionExpiresAndIsRebuiltOnTheNextRequest) {
  StageServerOptions so;
  so.idle_ttl = 150ms;
  StageNode b(2, 5, "stories", so);
  Entry e(2, 1);
  e.add(b, 2, 5);
  SchedulerOptions sch;
  sch.n_parallel = 1;
  Scheduler s(*e.pipe, sch);
  auto first = std::make_shared<RecordingSink>();
  s.submit(greedy({1, 403, 407}, 5), first);
  ASSERT_TRUE(first->wait(30s));
  for (int i = 0; i < 100 && b.server->stats().streams > 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(b.server->stats().streams, 0);  // the TTL freed the KV
  // The same prefix again: the scheduler reuses its slot, the stage rebuilds what it dropped.
  auto second = std::make_shared<RecordingSink>();
  s.submit(greedy({1, 403, 407, 261, 378}, 10), second);
  ASSERT_TRUE(second->wait(30s));
  Single one;
  EXPECT_EQ(second->tokens(), generate(*one.bm, {1, 403, 407, 261, 378}, 10));
  EXPECT_GT(second->result().cached_tokens, 0);
}

}  // namespace
}  // namespace llmesh
