// Exact mode of mixture-of-experts shards (docs/moe.md): a shard computes the experts it lacks
// on a peer over real transports and then equals the full model bit for bit; the wire format
// refuses hostile messages; a dead peer makes the shard fall back to its own experts.
#include <chrono>
#include <cstring>

#include <gtest/gtest.h>

#include "experts/expert_protocol.h"
#include "experts/expert_server.h"
#include "experts/remote_experts.h"
#include "model/forward.h"
#include "test_paths.h"
#include "transport/transport.h"

namespace llmesh::mesh::experts {
namespace {

using namespace std::chrono_literals;

const char* kNoisy = "stories260K-moe4x2-noisy-f32.gguf";
const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 300, 271, 290, 315, 421};
const std::string kPlan = "0123456789abcdef";

TransportOptions transport_options() {
  TransportOptions o;
  o.handshake_timeout = 2000ms;
  o.ping_interval = 250ms;
  o.max_missed_pings = 20;
  o.drain_timeout = 200ms;
  return o;
}

using Shards = std::vector<std::vector<std::vector<int>>>;
Shards halves() {
  return {std::vector<std::vector<int>>(5, {0, 1}), std::vector<std::vector<int>>(5, {2, 3})};
}

struct Engine {
  std::unique_ptr<Model> model;
  std::unique_ptr<KvCache> cache;
  ThreadPool pool{1};
  std::unique_ptr<Forward> fwd;
  explicit Engine(std::vector<std::vector<int>> experts = {}) {
    ModelOptions mo;
    mo.experts = std::move(experts);
    model = Model::load(test::model_path(kNoisy), mo);
    KvCacheOptions kv;
    kv.n_ctx = 64;
    kv.n_seq = 1;
    cache = std::make_unique<KvCache>(model->config(), 0, model->config().n_layer, kv);
    fwd = std::make_unique<Forward>(*model, *cache, pool);
  }
  std::vector<float> logits() {
    cache->clear(0);
    Batch b;
    for (size_t i = 0; i < kPrompt.size(); ++i) b.add(kPrompt[i], static_cast<int>(i), 0, true);
    auto out = fwd->run(b);
    return {out.begin(), out.end()};
  }
};

// A node holding one shard and answering experts streams.
struct Holder {
  Engine engine;
  std::unique_ptr<ExpertServer> server;
  std::unique_ptr<Transport> transport;
  uint16_t port = 0;
  explicit Holder(std::vector<std::vector<int>> experts, std::string plan = kPlan) : engine(std::move(experts)) {
    server = std::make_unique<ExpertServer>(*engine.model, std::move(plan));
    Transport::Callbacks cb;
    cb.on_stream = [this](std::shared_ptr<Stream> s) {
      if (is_experts_stream(s->header()))
        server->accept(std::move(s));
      else
        s->reset(ResetCode::NO_HANDLER);
    };
    transport = std::make_unique<Transport>(NodeIdentity::generate(), transport_options(), cb);
    port = transport->bind("127.0.0.1", 0);
  }
  ~Holder() { kill(); }
  void kill() {
    if (transport) transport->stop();
    if (server) server->stop();
  }
};

struct Asker {
  Engine engine;
  Transport transport{NodeIdentity::generate(), transport_options()};
  std::vector<ExpertHolder> holders;
  std::unique_ptr<RemoteExpertClient> client;
  explicit Asker(int self = 0, RemoteExpertOptions ro = {}) : engine(halves()[self]) {
    client = std::make_unique<RemoteExpertClient>(transport, kPlan, halves(), self, engine.model->config().n_embd,
                                                  [this] { return holders; }, ro);
    engine.fwd->set_remote_experts(client.get());
  }
  void add(Holder& h, uint32_t shard) {
    ASSERT_TRUE(transport.connect("127.0.0.1", h.port, h.transport->id()).has_value());
    holders.push_back({h.transport->id(), shard});
  }
};

TEST(ExactMode, AShardWithItsPeerEqualsTheFullModelBitForBit) {
  Engine full;
  const auto want = full.logits();
  Holder b(halves()[1]);
  Asker a(0);
  a.add(b, 1);
  const auto got = a.engine.logits();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;
  const auto cs = a.client->stats();
  EXPECT_GT(cs.rows, 0u);
  EXPECT_EQ(cs.failures, 0u);
  EXPECT_EQ(b.server->stats().rows, cs.rows);
  EXPECT_EQ(a.engine.fwd->remote_expert_stats().rows, cs.rows);
  // Without its peer the shard is not the full model: the test above is not vacuous.
  Engine alone(halves()[0]);
  EXPECT_NE(alone.logits(), want);
}

TEST(ExactMode, ADeadPeerMakesTheShardFallBackToItsOwnExperts) {
  Engine alone(halves()[0]), full;
  const auto restricted = alone.logits();
  auto b = std::make_unique<Holder>(halves()[1]);
  RemoteExpertOptions ro;
  ro.timeout = 2s;
  ro.refresh = 60s;  // a stale list: the dead holder is still offered and its stream found dead
  Asker a(0, ro);
  a.add(*b, 1);
  EXPECT_EQ(a.engine.logits(), full.logits()) << "with its peer (a stream to it is now open)";
  b->kill();
  for (int i = 0; i < 40 && a.transport.connected(b->transport->id()); ++i) std::this_thread::sleep_for(50ms);
  // Until the transport notices, the holder may still be offered; either way the answer is
  // the shard's own routing, never an error.
  const auto got = a.engine.logits();
  EXPECT_EQ(got, restricted);
  EXPECT_EQ(a.engine.logits(), restricted);
  EXPECT_GE(a.client->stats().failures, 1u);
}

TEST(ExactMode, HoldersBeyondTheRoundTripLimitAreNotAsked) {
  Engine alone(halves()[0]);
  Holder b(halves()[1]);
  RemoteExpertOptions ro;
  ro.max_rtt = std::chrono::microseconds(0);  // any measured round trip is too slow
  ro.refresh = 0ms;
  Asker a(0, ro);
  a.add(b, 1);
  for (int i = 0; i < 40 && !a.transport.rtt(b.transport->id()); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(a.transport.rtt(b.transport->id()).has_value());
  if (a.transport.rtt(b.transport->id())->count() == 0) GTEST_SKIP() << "a round trip of 0 us";
  EXPECT_EQ(a.engine.logits(), alone.logits());
  EXPECT_EQ(a.client->stats().rows, 0u);
}

TEST(ExpertsWire, RequestsAndRepliesRoundTrip) {
  ExpertRequest r;
  r.id = 7;
  r.layer = 3;
  r.calls.push_back({2, 2, std::vector<float>(2 * 4, 1.5f)});
  r.calls.push_back({0, 1, std::vector<float>(4, -2.0f)});
  ExpertRequest d = decode_request(encode_request(r), 4);
  EXPECT_EQ(d.id, 7u);
  EXPECT_EQ(d.layer, 3);
  ASSERT_EQ(d.calls.size(), 2u);
  EXPECT_EQ(d.calls[0].x, r.calls[0].x);
  EXPECT_EQ(d.calls[1].expert, 0);
  ExpertReply y;
  y.id = 7;
  y.outputs = {std::vector<float>(8, 0.5f), std::vector<float>(4, 2.0f)};
  ExpertReply e = decode_reply(encode_reply(y), {2, 1}, 4);
  EXPECT_TRUE(e.ok);
  EXPECT_EQ(e.outputs, y.outputs);
  ExpertReply err;
  err.id = 9;
  err.ok = false;
  err.code = kErrBadRequest;
  err.message = "no";
  ExpertReply e2 = decode_reply(encode_reply(err), {}, 4);
  EXPECT_FALSE(e2.ok);
  EXPECT_EQ(e2.message, "no");
  ExpertsOpen o;
  o.plan = kPlan;
  EXPECT_TRUE(is_experts_stream(encode_open(o)));
  EXPECT_EQ(decode_open(encode_open(o)).plan, kPlan);
  EXPECT_FALSE(is_experts_stream(std::vector<uint8_t>{1, 2, 3}));
}

TEST(ExpertsWire, HostileMessagesAreRefusedNamingTheField) {
  auto refused = [](const nlohmann::json& v, const char* what) {
    auto bytes = nlohmann::json::to_msgpack(v);
    try {
      decode_request(bytes, 4);
      ADD_FAILURE() << "accepted: " << v.dump();
    } catch (const ExpertFormatError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  auto rows = [](size_t n) { return nlohmann::json::binary(std::vector<uint8_t>(n, 0)); };
  refused({{"op", "run"}, {"id", 1}, {"l", 0}, {"c", nlohmann::json::array()}}, "\"c\" must be an array");
  refused({{"op", "run"}, {"id", 1}, {"l", 0}, {"c", {{{"e", 0}, {"n", 1}, {"x", rows(12)}}}}}, "has 12 bytes, expected 16");
  refused({{"op", "run"}, {"id", 1}, {"l", 0}, {"c", {{{"e", 0}, {"n", 0}, {"x", rows(0)}}}}}, "at least 1");
  refused({{"op", "run"}, {"id", 1}, {"l", -1}, {"c", {{{"e", 0}, {"n", 1}, {"x", rows(16)}}}}}, "\"l\"");
  refused({{"op", "run"}, {"id", 1}, {"l", 0}, {"c", {{{"e", 0}, {"n", 1}, {"x", "text"}}}}}, "not binary");
  refused({{"op", "other"}, {"id", 1}}, "\"op\"");
  refused({{"op", "run"}, {"id", 1}, {"l", 0}, {"c", {{{"e", 0}, {"n", 100000000}, {"x", rows(16)}}}}}, "\"n\"");
  EXPECT_THROW(decode_request(std::vector<uint8_t>{0xc1}, 4), ExpertFormatError);
  EXPECT_THROW(decode_reply(nlohmann::json::to_msgpack({{"op", "ok"}, {"id", 1}, {"o", {rows(16)}}}), {2}, 4),
               ExpertFormatError);
}

// Requests a peer cannot serve get an error reply (the stream stays usable); a broken message
// resets the stream; another plan's OPEN is refused.
TEST(ExpertServer, AnswersWhatItHoldsAndRefusesTheRest) {
  Holder b(halves()[1]);
  Transport t{NodeIdentity::generate(), transport_options()};
  ASSERT_TRUE(t.connect("127.0.0.1", b.port, b.transport->id()).has_value());
  ExpertsOpen o;
  o.plan = kPlan;
  auto s = t.open_stream(b.transport->id(), encode_open(o));
  ASSERT_TRUE(s);
  const int E = b.engine.model->config().n_embd;
  auto ask = [&](int layer, int expert, int n) {
    ExpertRequest r;
    r.id = 5;
    r.layer = layer;
    r.calls.push_back({expert, n, std::vector<float>(static_cast<size_t>(n) * E, 0.25f)});
    EXPECT_EQ(s->write(encode_request(r)), Stream::Status::OK);
    auto rd = s->read(5000ms);
    EXPECT_EQ(rd.status, Stream::Status::OK);
    return decode_reply(rd.message, {n}, E);
  };
  auto ok = ask(2, 3, 3);
  EXPECT_TRUE(ok.ok);
  ASSERT_EQ(ok.outputs.size(), 1u);
  EXPECT_EQ(ok.outputs[0].size(), static_cast<size_t>(3 * E));
  auto not_held = ask(2, 0, 1);
  EXPECT_FALSE(not_held.ok);
  EXPECT_NE(not_held.message.find("expert 0 of layer 2 is not held"), std::string::npos);
  auto bad_layer = ask(9, 2, 1);
  EXPECT_FALSE(bad_layer.ok);
  EXPECT_NE(bad_layer.message.find("layer 9"), std::string::npos);
  EXPECT_TRUE(ask(0, 2, 1).ok) << "still usable after errors";
  // Garbage: the stream is reset.
  std::vector<uint8_t> junk = {0x81, 0xa2, 'o', 'p', 0xc1};
  s->write(junk);
  auto rd = s->read(5000ms);
  EXPECT_NE(rd.status, Stream::Status::OK);
  // Another plan.
  ExpertsOpen other;
  other.plan = "ffffffffffffffff";
  auto s2 = t.open_stream(b.transport->id(), encode_open(other));
  ASSERT_TRUE(s2);
  auto rd2 = s2->read(5000ms);
  EXPECT_EQ(rd2.status, Stream::Status::RESET);
  EXPECT_GE(b.server->stats().errors, 3u);
  t.stop();
}

}  // namespace
}  // namespace llmesh::mesh::experts
