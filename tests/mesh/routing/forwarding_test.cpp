// Requests forwarded over the mesh's encrypted streams: a node without the model (near) answers
// through the node that serves it (far), exactly as the far node would answer directly; a
// client that leaves stops the far generation; dead candidates are skipped; forwarded requests
// are never forwarded again; hostile stream headers and bodies are refused.
#include <gtest/gtest.h>

#include <random>
#include <regex>

#include <nlohmann/json.hpp>

#include "routing_fixture.h"

namespace llmesh::test {
namespace {

using json = nlohmann::json;

// Ids and timestamps differ between two answers, and so do the SSE keep-alive comments a slow
// moment adds; everything else must be the same bytes.
std::string mask(const std::string& body) {
  static const std::regex id(R"re("id":"[^"]*")re"), created(R"re("created":[0-9]+)re"),
      keepalive(R"re((: keep-alive|event: ping\ndata: \{"type":"ping"\})\n\n)re");
  std::string s = std::regex_replace(body, keepalive, "");
  return std::regex_replace(std::regex_replace(s, id, R"("id":"")"), created, R"("created":0)");
}

json chat(const std::string& text, bool stream = false, int max_tokens = 64) {
  return {{"model", "scripted"}, {"messages", {{{"role", "user"}, {"content", text}}}}, {"max_tokens", max_tokens},
          {"stream", stream}};
}

class MeshRoutingForward : public ::testing::Test {
 protected:
  void SetUp() override {
    far_api_ = std::make_unique<ScriptedApi>();
    mesh::ForwardServerOptions fo;
    fo.port = far_api_->port();
    fo.api_key = ScriptedApi::kApiKey;
    fo.interim_interval = 100ms;
    MeshNode::Setup fs;
    fs.forward = fo;
    far_ = std::make_unique<MeshNode>(fs);
    MeshNode::Setup ns;
    ns.router_api = true;
    near_ = std::make_unique<MeshNode>(ns);
    near_->dial(*far_);
    near_->set_targets({serving(far_->id())});
  }
  void TearDown() override {
    near_.reset();
    extra_.clear();
    far_.reset();
    far_api_.reset();
  }
  httplib::Result direct(const std::string& path, const json& body, httplib::Headers h = {}) {
    httplib::Client c("127.0.0.1", far_api_->port());
    c.set_read_timeout(30);
    h.emplace("Authorization", std::string("Bearer ") + ScriptedApi::kApiKey);
    return c.Post(path, h, body.dump(), "application/json");
  }
  httplib::Result routed(const std::string& path, const json& body, httplib::Headers h = {}) {
    return near_->client().Post(path, h, body.dump(), "application/json");
  }
  // The direct answer to compare with: asked twice, so that the prompt cache is warm for it as
  // it will be for the routed request (usage reports cached tokens).
  httplib::Result reference(const std::string& path, const json& body, httplib::Headers h = {}) {
    auto first = direct(path, body, h);
    EXPECT_TRUE(first && first->status == 200);
    return direct(path, body, h);
  }
  MeshNode& extra(MeshNode::Setup s) {
    extra_.push_back(std::make_unique<MeshNode>(s));
    return *extra_.back();
  }
  // A session key (the request's "user") for which `first` is the router's sticky choice.
  std::string user_choosing(const NodeId& first) {
    for (int k = 0;; ++k) {
      std::string user = "u" + std::to_string(k);
      auto order = mesh::routing::order_targets(near_->targets(), "scripted", "user:" + user, {});
      if (!order.empty() && order.front().id == first) return user;
    }
  }

  std::unique_ptr<ScriptedApi> far_api_;
  std::unique_ptr<MeshNode> far_, near_;
  std::vector<std::unique_ptr<MeshNode>> extra_;
};

TEST_F(MeshRoutingForward, ChatCompletionIsTheDirectAnswer) {
  auto d = reference("/v1/chat/completions", chat("hi there"));
  auto r = routed("/v1/chat/completions", chat("hi there"));
  ASSERT_TRUE(d && r);
  ASSERT_EQ(d->status, 200) << d->body;
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["message"]["content"], "Hello from the far node, friend.");
  EXPECT_EQ(mask(r->body), mask(d->body));
  EXPECT_EQ(r->get_header_value("Content-Type"), d->get_header_value("Content-Type"));
  auto st = far_->fwd->stats();
  EXPECT_EQ(st.accepted, 1u);
  EXPECT_EQ(st.completed, 1u);
}

TEST_F(MeshRoutingForward, StreamingAnswerIsTheDirectOne) {
  auto d = reference("/v1/chat/completions", chat("hi there", true));
  auto r = routed("/v1/chat/completions", chat("hi there", true));
  ASSERT_TRUE(d && r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_NE(r->body.find("data: [DONE]"), std::string::npos);
  EXPECT_EQ(mask(r->body), mask(d->body));
}

TEST_F(MeshRoutingForward, AnthropicMessagesByAliasWithTheirHeaders) {
  json b = {{"model", "scripted-alias"}, {"max_tokens", 32}, {"stream", true},
            {"messages", {{{"role", "user"}, {"content", "hello"}}}}};
  httplib::Headers h = {{"anthropic-version", "2023-06-01"}};
  auto d = reference("/v1/messages", b, h);
  auto r = routed("/v1/messages", b, h);
  ASSERT_TRUE(d && r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find("event: message_stop"), std::string::npos);
  EXPECT_EQ(mask(r->body), mask(d->body));
  // Errors come back whole, in the API's own shape.
  b["max_tokens"] = "lots";
  r = routed("/v1/messages", b, h);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["type"], "error");
}

TEST_F(MeshRoutingForward, ModelsListsTheFarNodesModel) {
  auto r = near_->client().Get("/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto data = json::parse(r->body)["data"];
  ASSERT_EQ(data.size(), 2u) << r->body;
  EXPECT_EQ(data[0]["id"], "scripted");
  EXPECT_EQ(data[0]["meta"]["nodes"], 1);
  EXPECT_EQ(data[0]["context_length"], 1024);
  EXPECT_EQ(data[0]["created"], 1700000000);
  EXPECT_EQ(data[1]["id"], "scripted-alias");
  // A node holding only some layers is not listed; nobody serving: 404 naming the model.
  auto partial = serving(far_->id());
  partial.state.models[0].loaded = {0, 2};
  near_->set_targets({partial});
  r = near_->client().Get("/v1/models");
  EXPECT_EQ(json::parse(r->body)["data"].size(), 0u);
  r = routed("/v1/chat/completions", chat("hi"));
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "model_not_found");
}

TEST_F(MeshRoutingForward, ClientLeavingCancelsTheFarGeneration) {
  far_api_->model().delay_ms = 20;
  RawConnection rc(near_->api_port());
  ASSERT_TRUE(rc.send_all(http_post("/v1/chat/completions", chat("tell me a long story", true, 400).dump())));
  std::string got = rc.read_until("data:");
  ASSERT_NE(got.find("200 OK"), std::string::npos) << got;
  rc.shut();
  auto st = wait_for_stats(far_api_->scheduler(),
                           [](const SchedulerStats& s) { return s.requests_cancelled >= 1 && s.active == 0; });
  EXPECT_EQ(st.requests_cancelled, 1u);
  EXPECT_EQ(st.active, 0);
  EXPECT_LT(st.generated_tokens, 200u);  // stopped well before the end
  for (int i = 0; i < 100 && far_->fwd->stats().active > 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(far_->fwd->stats().cancelled, 1u);
  EXPECT_EQ(far_->fwd->stats().active, 0u);
}

TEST_F(MeshRoutingForward, ServingNodeDyingEndsTheAnswer) {
  far_api_->model().delay_ms = 20;
  RawConnection rc(near_->api_port());
  ASSERT_TRUE(rc.send_all(http_post("/v1/chat/completions", chat("tell me a long story", true, 400).dump())));
  ASSERT_NE(rc.read_until("data:").find("200 OK"), std::string::npos);
  auto t0 = std::chrono::steady_clock::now();
  far_->transport->stop();  // the connection closes under the stream
  std::string rest = rc.read_until("0\r\n\r\n", 5);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_NE(rest.find("0\r\n\r\n"), std::string::npos);  // the chunked answer ended...
  EXPECT_EQ(rest.find("[DONE]"), std::string::npos);      // ...without its normal end
  auto st = wait_for_stats(far_api_->scheduler(), [](const SchedulerStats& s) { return s.requests_cancelled >= 1; });
  EXPECT_EQ(st.requests_cancelled, 1u);
}

TEST_F(MeshRoutingForward, SlowNonStreamingAnswerKeepsTheWaitAlive) {
  // A near node that waits at most 1 s for a word from the far node, which sends interim heads
  // every 100 ms while its non-streaming answer takes 2.5 s (125 tokens at 20 ms).
  MeshNode::Setup s;
  s.router_api = true;
  s.router.upstream.head_timeout = 1000ms;
  auto& impatient = extra(s);
  impatient.dial(*far_);
  impatient.set_targets({serving(far_->id())});
  far_api_->model().delay_ms = 20;
  auto t0 = std::chrono::steady_clock::now();
  auto r = impatient.client().Post("/v1/chat/completions", chat("tell me a long story", false, 125).dump(),
                                   "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_GT(std::chrono::steady_clock::now() - t0, 2000ms);
}

TEST_F(MeshRoutingForward, SilentNodeTimesOutBeforeTheHead) {
  MeshNode::Setup s;
  s.hold_streams = true;
  auto& silent = extra(s);
  near_->dial(silent);
  mesh::StreamUpstreamOptions o;
  o.head_timeout = 300ms;
  mesh::StreamUpstream up(*near_->transport, silent.id(), "silent", o);
  auto t0 = std::chrono::steady_clock::now();
  try {
    up.send({"POST", "/v1/chat/completions", "application/json", chat("hi").dump(), {}});
    FAIL() << "no exception";
  } catch (const api::UpstreamUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("no answer within"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  // The abandoned stream was reset, so the serving side can let go.
  auto held = silent.held_streams();
  ASSERT_EQ(held.size(), 1u);
  for (int i = 0; i < 100 && !held[0]->finished(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(held[0]->finished());
}

TEST_F(MeshRoutingForward, DeadCandidatesAreSkipped) {
  // Four nodes that cannot answer, tried before the far node (overloaded, so last).
  auto& no_handler = extra({});  // resets every stream: NO_HANDLER
  mesh::ForwardServerOptions dead_api;
  dead_api.port = 1;  // nothing listens: the local API fails before the head (0x101)
  MeshNode::Setup s1;
  s1.forward = dead_api;
  auto& broken = extra(s1);
  mesh::ForwardServerOptions full;
  full.max_concurrent = 0;  // REFUSED
  full.port = far_api_->port();
  MeshNode::Setup s2;
  s2.forward = full;
  auto& busy = extra(s2);
  for (auto* n : {&no_handler, &broken, &busy}) near_->dial(*n);
  NodeId stranger = mesh::NodeIdentity::generate().id();  // not connected
  auto far_target = serving(far_->id(), "scripted", 2, 4);  // overloaded: tried last
  near_->set_targets({serving(stranger), serving(no_handler.id()), serving(broken.id()), serving(busy.id()), far_target});
  auto order = mesh::routing::order_targets(near_->targets(), "scripted", "k", {});
  ASSERT_EQ(order.back().id, far_->id());

  auto r = routed("/v1/chat/completions", chat("hi there"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(far_->fwd->stats().completed, 1u);
  EXPECT_EQ(busy.fwd->stats().refused, 1u);
  EXPECT_EQ(broken.fwd->stats().failed, 1u);

  // Nobody left who can answer: 503, naming each failure.
  near_->set_targets({serving(stranger), serving(no_handler.id()), serving(broken.id()), serving(busy.id())});
  r = routed("/v1/chat/completions", chat("hi there"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  auto err = json::parse(r->body)["error"];
  EXPECT_EQ(err["code"], "upstream_unavailable");
  const std::string msg = err["message"];
  for (const char* why : {"not connected", "no handler", "(0x101)", "busy or stopping"})
    EXPECT_NE(msg.find(why), std::string::npos) << why << " missing in: " << msg;
}

TEST_F(MeshRoutingForward, ForwardedRequestsAreNeverForwardedAgain) {
  // `relay` has no model but a router that knows the far node, and takes forwarded streams
  // into its own API. Its gossip wrongly says it serves the model (stale news).
  mesh::ForwardServerOptions own;
  own.port = 0;  // its own API
  MeshNode::Setup s;
  s.forward = own;
  s.router_api = true;
  auto& relay = extra(s);
  relay.dial(*far_);
  relay.set_targets({serving(far_->id())});
  near_->dial(relay);

  // A client of the relay is served through it (its router works)...
  auto r = relay.client().Post("/v1/chat/completions", chat("hi").dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(far_->fwd->stats().completed, 1u);
  // ...but a request carrying X-Llmesh-Forwarded is answered there or nowhere.
  r = relay.client().Post("/v1/chat/completions", {{"X-Llmesh-Forwarded", "someone"}}, chat("hi").dump(),
                          "application/json");
  ASSERT_EQ(r->status, 404) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "model_not_found");
  EXPECT_NE(json::parse(r->body)["error"]["message"].get<std::string>().find("'scripted'"), std::string::npos);
  EXPECT_EQ(far_->fwd->stats().completed, 1u);

  // Through the mesh: near tries the relay first; the relay answers 404 model_not_found
  // without forwarding, and near moves on to the far node.
  near_->set_targets({serving(relay.id()), serving(far_->id(), "scripted", 2, 4)});
  r = routed("/v1/chat/completions", chat("hi"));
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(relay.fwd->stats().completed, 1u);  // the relay's 404, answered to the end
  EXPECT_EQ(far_->fwd->stats().completed, 2u);  // near's request, once
  // With the relay as the only candidate, its 404 is the answer.
  near_->set_targets({serving(relay.id())});
  r = routed("/v1/chat/completions", chat("hi"));
  ASSERT_EQ(r->status, 404) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "model_not_found");
  EXPECT_EQ(far_->fwd->stats().completed, 2u);
}

// Opens a stream from near to far with `header`, writes `body` messages, ends, and reads.
struct RawExchange {
  Stream::Status status;
  std::optional<uint32_t> reset;
  std::vector<std::string> messages;
};
RawExchange raw_exchange(mesh::Transport& t, const NodeId& to, std::vector<uint8_t> header,
                         const std::vector<std::string>& body = {}) {
  RawExchange out{Stream::Status::OK, std::nullopt, {}};
  auto s = t.open_stream(to, std::move(header));
  if (!s) return {Stream::Status::CLOSED, std::nullopt, {}};
  for (const auto& m : body) s->write(std::span(reinterpret_cast<const uint8_t*>(m.data()), m.size()), 2000ms);
  s->end();
  for (;;) {
    auto r = s->read(3000ms);
    if (r.status != Stream::Status::OK) {
      out.status = r.status;
      out.reset = s->reset_code();
      return out;
    }
    out.messages.emplace_back(r.message.begin(), r.message.end());
  }
}

TEST_F(MeshRoutingForward, HostileStreamsAreRefused) {
  auto& t = *near_->transport;
  const NodeId to = far_->id();
  const json good = {{"t", "http"}, {"v", 1}, {"m", "POST"}, {"p", "/v1/chat/completions"}, {"n", 0}};
  auto bad = [&](json h, std::vector<std::string> body = {}) {
    auto x = raw_exchange(t, to, json::to_msgpack(h), body);
    EXPECT_EQ(x.status, Stream::Status::RESET) << h.dump();
    EXPECT_EQ(x.reset.value_or(0), mesh::routing::kResetBadRequest) << h.dump();
  };
  uint64_t refused = 0;
  json h;
  h = good; h["n"] = 1ull << 40; bad(h); refused++;
  h = good; h["n"] = -1; bad(h); refused++;
  h = good; h["m"] = 7; bad(h); refused++;
  h = good; h["p"] = json::object(); bad(h); refused++;
  h = good; h["h"] = {{"x-a", "b\r\nX-Injected: 1"}}; bad(h); refused++;
  h = good; h["v"] = "1"; bad(h); refused++;
  h = good; h.erase("n"); bad(h); refused++;
  h = good; h["n"] = 5; bad(h, {"0123456789"}); refused++;          // more body than announced
  h = good; h["n"] = 50; bad(h, {"short"}); refused++;              // ended early
  h = good; h["n"] = 3u << 20; bad(h, {std::string(2u << 20, 'x')}); refused++;  // a message over 1 MiB
  // Not the "http" kind at all (random bytes, other kinds): not for the ForwardServer.
  std::mt19937 rng(7);
  for (int i = 0; i < 50; ++i) {
    std::vector<uint8_t> r(1 + rng() % 200);
    for (auto& b : r) b = static_cast<uint8_t>(rng());
    if (mesh::routing::stream_type(r) == "http") continue;
    auto x = raw_exchange(t, to, r);
    EXPECT_EQ(x.status, Stream::Status::RESET);
  }
  // Well-formed but not an API endpoint: an error answer saying why.
  h = good; h["p"] = "/metrics"; h["m"] = "GET";
  auto x = raw_exchange(t, to, json::to_msgpack(h));
  ASSERT_EQ(x.status, Stream::Status::END);
  ASSERT_EQ(x.messages.size(), 2u);
  EXPECT_EQ(mesh::routing::decode_response_head(std::span(reinterpret_cast<const uint8_t*>(x.messages[0].data()),
                                                          x.messages[0].size())).status, 404u);
  EXPECT_NE(x.messages[1].find("only /v1/"), std::string::npos);
  h = good; h["m"] = "DELETE"; h["p"] = "/v1/models";
  x = raw_exchange(t, to, json::to_msgpack(h));
  ASSERT_EQ(x.messages.size(), 2u);
  EXPECT_NE(x.messages[1].find("only GET and POST"), std::string::npos);
  refused += 2;

  EXPECT_EQ(far_->fwd->stats().bad_request, refused);
  EXPECT_EQ(far_->fwd->stats().completed, 0u);
  // The far node still serves.
  auto r = routed("/v1/chat/completions", chat("hi there"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(far_->transport->connected(near_->id()));
}

TEST_F(MeshRoutingForward, BodiesWaitingInMemoryAreBounded) {
  mesh::ForwardServerOptions o;
  o.port = far_api_->port();
  o.api_key = ScriptedApi::kApiKey;
  o.max_total_body_bytes = 1000;
  MeshNode::Setup s;
  s.forward = o;
  auto& small = extra(s);
  near_->dial(small);
  std::string body = chat("hi").dump();
  body.resize(600, ' ');
  const json h = {{"t", "http"}, {"v", 1}, {"m", "POST"}, {"p", "/v1/chat/completions"}, {"n", body.size()}};
  // The first body is still arriving (nothing sent yet) when a second one is announced.
  auto first = near_->transport->open_stream(small.id(), json::to_msgpack(h));
  ASSERT_TRUE(first);
  for (int i = 0; i < 400 && small.fwd->stats().body_bytes == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(small.fwd->stats().body_bytes, body.size());
  auto x = raw_exchange(*near_->transport, small.id(), json::to_msgpack(h), {body});
  EXPECT_EQ(x.status, Stream::Status::RESET);
  EXPECT_EQ(x.reset.value_or(0), static_cast<uint32_t>(mesh::ResetCode::REFUSED));
  // The first completes normally, and then there is room again.
  first->write(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
  first->end();
  auto head = first->read(5000ms);
  ASSERT_EQ(head.status, Stream::Status::OK);
  EXPECT_EQ(mesh::routing::decode_response_head(head.message).status, 200u);
  while (first->read(5000ms).status == Stream::Status::OK) {
  }
  EXPECT_EQ(small.fwd->stats().body_bytes, 0u);
  x = raw_exchange(*near_->transport, small.id(), json::to_msgpack(h), {body});
  EXPECT_EQ(x.status, Stream::Status::END);
  EXPECT_EQ(small.fwd->stats().refused, 1u);
  EXPECT_EQ(small.fwd->stats().completed, 2u);
}

TEST_F(MeshRoutingForward, StopAbortsRunningExchanges) {
  far_api_->model().delay_ms = 20;
  RawConnection rc(near_->api_port());
  ASSERT_TRUE(rc.send_all(http_post("/v1/chat/completions", chat("tell me a long story", true, 400).dump())));
  ASSERT_NE(rc.read_until("data:").find("200 OK"), std::string::npos);
  auto t0 = std::chrono::steady_clock::now();
  far_->fwd->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(far_->fwd->stats().active, 0u);
  EXPECT_NE(rc.read_until("0\r\n\r\n", 5).find("0\r\n\r\n"), std::string::npos);
  // New streams are refused once stopped, so the caller fails over (here: to nobody).
  auto r = routed("/v1/chat/completions", chat("hi"));
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_NE(r->body.find("busy or stopping"), std::string::npos);
}

}  // namespace
}  // namespace llmesh::test
