// Bad requests of every kind get a clear error in the API's own shape, and the server keeps
// serving: malformed JSON, wrong types, unknown fields and models, invalid UTF-8, huge
// bodies, context overflow, a full queue, missing keys, unknown paths.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server_fixture.h"

namespace llmesh::test {
namespace {

using json = nlohmann::json;

class HttpErrors : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new TestServer(ServerSetup{}); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static json post(const std::string& path, const std::string& body, int expect_status,
                   httplib::Headers headers = {}) {
    auto c = server_->client();
    auto r = c.Post(path, headers, body, "application/json");
    EXPECT_TRUE(r) << "no response for " << body.substr(0, 200);
    if (!r) return json();
    EXPECT_EQ(r->status, expect_status) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    return json::parse(r->body);
  }
  static void expect_openai_error(const json& j, const std::string& param = "", const std::string& code = "") {
    ASSERT_TRUE(j.contains("error")) << j.dump();
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(j["error"]["type"].is_string());
    if (!param.empty()) {
      EXPECT_EQ(j["error"]["param"], param) << j.dump();
    }
    if (!code.empty()) {
      EXPECT_EQ(j["error"]["code"], code) << j.dump();
    }
  }
  static void expect_anthropic_error(const json& j, const std::string& type) {
    EXPECT_EQ(j["type"], "error") << j.dump();
    EXPECT_EQ(j["error"]["type"], type) << j.dump();
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
  }
  static std::string chat(const json& extra = json::object()) {
    json b = {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "Once upon a time"}}}},
              {"max_tokens", 4}};
    b.update(extra);
    return b.dump();
  }
  static TestServer* server_;
};
TestServer* HttpErrors::server_ = nullptr;

TEST_F(HttpErrors, MalformedJson) {
  expect_openai_error(post("/v1/chat/completions", "{\"model\": ", 400));
  expect_openai_error(post("/v1/chat/completions", "", 400));
  expect_openai_error(post("/v1/chat/completions", "[1,2]", 400));
  expect_anthropic_error(post("/v1/messages", "{oops}", 400), "invalid_request_error");
}

TEST_F(HttpErrors, WrongTypesNameTheField) {
  expect_openai_error(post("/v1/chat/completions", chat({{"temperature", "hot"}}), 400), "temperature");
  expect_openai_error(post("/v1/chat/completions", chat({{"temperature", 3}}), 400), "temperature");
  expect_openai_error(post("/v1/chat/completions", chat({{"max_tokens", -1}}), 400), "max_tokens");
  expect_openai_error(post("/v1/chat/completions", chat({{"max_tokens", 1.5}}), 400), "max_tokens");
  expect_openai_error(post("/v1/chat/completions", chat({{"stop", 5}}), 400), "stop");
  expect_openai_error(post("/v1/chat/completions", chat({{"messages", "hi"}}), 400), "messages");
  expect_openai_error(post("/v1/chat/completions", chat({{"messages", json::array()}}), 400), "messages");
  expect_openai_error(post("/v1/chat/completions", chat({{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}), 400),
                      "messages[0].role");
  expect_openai_error(post("/v1/chat/completions", chat({{"messages", {{{"role", "user"}, {"content", 7}}}}}), 400),
                      "messages[0].content");
  expect_openai_error(post("/v1/chat/completions", chat({{"logit_bias", {{"999999", 1}}}}), 400), "logit_bias");
  expect_openai_error(post("/v1/chat/completions", chat({{"top_logprobs", 3}}), 400), "top_logprobs");
}

TEST_F(HttpErrors, UnsupportedIsRefusedNotIgnored) {
  expect_openai_error(post("/v1/chat/completions", chat({{"n", 2}}), 400), "n");
  expect_openai_error(post("/v1/chat/completions", chat({{"frobnicate", true}}), 400), "frobnicate");
  expect_openai_error(post("/v1/chat/completions", chat({{"response_format", {{"type", "json_schema"}}}}), 400),
                      "response_format");
  json image = {{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", {{"url", "http://x"}}}}}}};
  expect_openai_error(post("/v1/chat/completions", chat({{"messages", {image}}}), 400), "messages[0].content[0].type");
  expect_openai_error(post("/v1/completions", json{{"model", "stories260K"}, {"prompt", "x"}, {"suffix", "y"}}.dump(), 400),
                      "suffix");
}

TEST_F(HttpErrors, UnknownModel) {
  expect_openai_error(post("/v1/chat/completions", chat({{"model", "gpt-9"}}), 404), "model", "model_not_found");
  json a = {{"model", "claude-x"}, {"max_tokens", 5}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  expect_anthropic_error(post("/v1/messages", a.dump(), 404), "not_found_error");
}

TEST_F(HttpErrors, InvalidUtf8) {
  std::string body = "{\"model\": \"stories260K\", \"max_tokens\": 3, \"messages\": [{\"role\": \"user\", \"content\": \"bad \xff\xfe here\"}]}";
  expect_openai_error(post("/v1/chat/completions", body, 400));
}

TEST_F(HttpErrors, HugeBodyIs413) {
  std::string big(2u << 20, 'a');
  json b = json::parse(chat());
  b["messages"][0]["content"] = big;
  auto c = server_->client();
  auto r = c.Post("/v1/chat/completions", b.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  expect_openai_error(json::parse(r->body));
}

TEST_F(HttpErrors, ContextOverflowIsClear) {
  std::string words;
  for (int i = 0; i < 400; i++) words += "the cat sat on the mat ";
  json b = json::parse(chat());
  b["messages"][0]["content"] = words;
  expect_openai_error(post("/v1/chat/completions", b.dump(), 400), "", "context_length_exceeded");
  expect_openai_error(post("/v1/chat/completions", chat({{"max_tokens", 100000}}), 400), "max_tokens",
                      "context_length_exceeded");
  // Anthropic's max_tokens is a cap agents size for big models: it is clamped to the room left,
  // and an answer that reaches the context end stops with max_tokens.
  json a = {{"model", "stories260K"}, {"max_tokens", 64000}, {"temperature", 0},
            {"messages", {{{"role", "user"}, {"content", "Once upon a time"}}}}};
  json ok = post("/v1/messages", a.dump(), 200);
  EXPECT_EQ(ok["type"], "message");
  a["messages"][0]["content"] = words;
  expect_anthropic_error(post("/v1/messages", a.dump(), 400), "invalid_request_error");
}

TEST_F(HttpErrors, AnthropicValidation) {
  json a = {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  expect_anthropic_error(post("/v1/messages", a.dump(), 400), "invalid_request_error");  // no max_tokens
  a["max_tokens"] = 5;
  a["messages"][0]["content"] = json::array({{{"type", "image"}, {"source", json::object()}}});
  expect_anthropic_error(post("/v1/messages", a.dump(), 400), "invalid_request_error");
  a["messages"][0]["content"] = "hi";
  a["tools"] = json::array({{{"type", "web_search_20250305"}, {"name", "web_search"}}});
  expect_anthropic_error(post("/v1/messages", a.dump(), 400), "invalid_request_error");
}

TEST_F(HttpErrors, UnknownPathIsJson404) {
  auto c = server_->client();
  auto r = c.Get("/v2/nothing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  expect_openai_error(json::parse(r->body));
}

TEST_F(HttpErrors, ServerStillServesAfterAllOfThat) {
  json j = post("/v1/chat/completions", chat(), 200);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
}

TEST_F(HttpErrors, GarbageOnTheSocket) {
  for (std::string junk : {std::string("\x16\x03\x01\x02\x00garbage\r\n\r\n"), std::string("GET\r\n\r\n"),
                           std::string("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
                           std::string("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"model\"")}) {
    RawConnection rc(server_->port());
    ASSERT_TRUE(rc.ok());
    rc.send_all(junk);
    rc.shut();  // abrupt: half a request, then gone
  }
  json j = post("/v1/chat/completions", chat(), 200);
  EXPECT_EQ(j["object"], "chat.completion");
}

TEST(HttpLimits, FullQueueGets429WithRetryAfter) {
  ServerSetup s;
  s.parallel = 1;
  s.max_queue = 0;
  TestServer server(s);
  // Hold the only slot with a long stream.
  RawConnection hold(server.port());
  json body = {{"model", "stories260K"}, {"prompt", "Once"}, {"max_tokens", 200}, {"stream", true}};
  ASSERT_TRUE(hold.send_all(http_post("/v1/completions", body.dump())));
  hold.read_until("data:");
  auto c = server.client();
  auto r = c.Post("/v1/completions", json{{"model", "stories260K"}, {"prompt", "Twice"}, {"max_tokens", 2}}.dump(),
                  "application/json");
  ASSERT_TRUE(r);
  if (server.scheduler().stats().active == 1) {  // the stream may already have ended on EOS
    EXPECT_EQ(r->status, 429);
    EXPECT_EQ(r->get_header_value("Retry-After"), "1");
    EXPECT_EQ(json::parse(r->body)["error"]["code"], "rate_limit_exceeded");
  }
}

TEST(HttpLimits, ApiKeyRequiredWhenSet) {
  ServerSetup s;
  s.api_key = "sekret";
  TestServer server(s);
  auto c = server.client();
  std::string body = json{{"model", "stories260K"}, {"prompt", "x"}, {"max_tokens", 1}}.dump();
  auto r = c.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = c.Post("/v1/completions", {{"Authorization", "Bearer sekret"}}, body, "application/json");
  EXPECT_EQ(r->status, 200);
  r = c.Post("/v1/completions", {{"x-api-key", "sekret"}}, body, "application/json");
  EXPECT_EQ(r->status, 200);
  r = c.Get("/health");
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace llmesh::test
