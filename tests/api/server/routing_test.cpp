// A node without the model answers through one that has it: the request is forwarded, the
// answer streamed back as it comes, a node that fails before answering is skipped, errors pass
// through in the API's shape, and a client that leaves stops the far node's generation.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/router.h"
#include "server_fixture.h"

namespace llmesh::test {
namespace {

using json = nlohmann::json;

class StaticRouter : public api::ModelRouter {
 public:
  std::vector<api::RemoteModel> models() override { return {{"stories260K", 0, 256, static_cast<int>(nodes.size())}}; }
  std::vector<std::shared_ptr<api::Upstream>> candidates(const std::string& model, const std::string& key) override {
    last_key = key;
    if (model != "stories260K") return {};
    return nodes;
  }
  std::vector<std::shared_ptr<api::Upstream>> nodes;
  std::string last_key;
};

// A port nothing listens on (bound to learn a free number, then closed).
int dead_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class Routing : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::make_unique<TestServer>(ServerSetup{});
    router_.nodes = {std::make_shared<api::HttpUpstream>("127.0.0.1", backend_->port())};
    api::ServerOptions opt;
    opt.port = 0;
    opt.log_requests = false;
    opt.keepalive = std::chrono::milliseconds(100);
    front_ = std::make_unique<api::ApiServer>(nullptr, opt, &router_);
    front_->bind();
    thread_ = std::thread([this] { front_->run(); });
  }
  void TearDown() override {
    front_->stop();
    thread_.join();
  }
  httplib::Client front() {
    httplib::Client c("127.0.0.1", front_->port());
    c.set_read_timeout(60);
    return c;
  }
  static json chat(int max_tokens, bool stream = false) {
    return {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "Once upon a time"}}}},
            {"max_tokens", max_tokens}, {"temperature", 0}, {"stream", stream}};
  }
  std::unique_ptr<TestServer> backend_;
  StaticRouter router_;
  std::unique_ptr<api::ApiServer> front_;
  std::thread thread_;
};

TEST_F(Routing, ForwardedAnswerEqualsTheDirectOne) {
  auto direct = backend_->client().Post("/v1/chat/completions", chat(12).dump(), "application/json");
  auto routed = front().Post("/v1/chat/completions", chat(12).dump(), "application/json");
  ASSERT_TRUE(routed);
  ASSERT_EQ(routed->status, 200) << routed->body;
  EXPECT_EQ(json::parse(routed->body)["choices"][0]["message"]["content"],
            json::parse(direct->body)["choices"][0]["message"]["content"]);
  EXPECT_EQ(router_.last_key.rfind("prefix:", 0), 0u);  // sticky by the conversation's start
}

TEST_F(Routing, StreamsEndToEnd) {
  auto r = front().Post("/v1/chat/completions", chat(8, true).dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_NE(r->body.find("chat.completion.chunk"), std::string::npos);
  EXPECT_NE(r->body.find("data: [DONE]"), std::string::npos);
}

TEST_F(Routing, FailedNodeBeforeTheFirstByteIsSkipped) {
  router_.nodes.insert(router_.nodes.begin(), std::make_shared<api::HttpUpstream>("127.0.0.1", dead_port()));
  auto r = front().Post("/v1/chat/completions", chat(4).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  router_.nodes = {std::make_shared<api::HttpUpstream>("127.0.0.1", dead_port())};
  r = front().Post("/v1/chat/completions", chat(4).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "upstream_unavailable");
}

TEST_F(Routing, ErrorsPassThroughAndUnknownModelsAre404) {
  json bad = chat(4);
  bad["temperature"] = "hot";
  auto r = front().Post("/v1/chat/completions", bad.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 400) << r->body;
  ASSERT_FALSE(r->body.empty());
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "temperature");
  json other = chat(4);
  other["model"] = "nobody-serves-this";
  r = front().Post("/v1/chat/completions", other.dump(), "application/json");
  EXPECT_EQ(r->status, 404) << r->body;
  json a = {{"model", "nobody-serves-this"}, {"max_tokens", 4}, {"messages", {{{"role", "user"}, {"content", "x"}}}}};
  r = front().Post("/v1/messages", a.dump(), "application/json");
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_EQ(json::parse(r->body)["type"], "error");
  auto listed = front().Get("/v1/models");
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->status, 200) << listed->body;
  auto models = json::parse(listed->body);
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "stories260K");
  EXPECT_EQ(models["data"][0]["meta"]["nodes"], 1);
}

TEST_F(Routing, ClientThatLeavesStopsTheFarGeneration) {
  RawConnection rc(front_->port());
  json b = chat(200, true);
  b["temperature"] = 1.0;
  ASSERT_TRUE(rc.send_all(http_post("/v1/chat/completions", b.dump())));
  std::string got = rc.read_until("data:");
  ASSERT_NE(got.find("200 OK"), std::string::npos) << got;
  rc.shut();
  EXPECT_EQ(wait_for_stats(backend_->scheduler(), idle).active, 0);
}

}  // namespace
}  // namespace llmesh::test
