// What a generating request returns over HTTP: exact usage, SSE framing, streaming equal to
// non-streaming, stop strings, logprobs, prefix reuse, cancellation on disconnect, metrics;
// and with the scripted model: tool calls and thinking in both APIs.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server_fixture.h"

namespace llmesh::test {
namespace {

using json = nlohmann::json;

std::vector<json> sse_data(const std::string& body, std::vector<std::string>* event_names = nullptr) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    std::string name;
    for (size_t ls = 0; ls < ev.size();) {
      size_t le = ev.find('\n', ls);
      if (le == std::string::npos) le = ev.size();
      std::string line = ev.substr(ls, le - ls);
      ls = le + 1;
      if (line.rfind("event: ", 0) == 0) name = line.substr(7);
      if (line.rfind("data: ", 0) == 0) {
        std::string d = line.substr(6);
        if (d == "[DONE]") out.push_back("[DONE]");
        else out.push_back(json::parse(d));
        if (event_names) event_names->push_back(name);
      }
    }
  }
  return out;
}

json chat_body(const std::string& content, int max_tokens, json extra = json::object()) {
  json b = {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", content}}}},
            {"max_tokens", max_tokens}, {"temperature", 0}};
  b.update(extra);
  return b;
}

class Generation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new TestServer(ServerSetup{}); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static httplib::Result post(const json& body, const std::string& path = "/v1/chat/completions") {
    return server_->client().Post(path, body.dump(), "application/json");
  }
  static TestServer* server_;
};
TestServer* Generation::server_ = nullptr;

TEST_F(Generation, UsageIsExact) {
  auto r = post(chat_body("Once upon a time there was", 7));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  api::ChatInputs in;
  in.messages = api::ojson::array({{{"role", "user"}, {"content", "Once upon a time there was"}}});
  std::string prompt = server_->served().chat_template.render(in);
  int expect_prompt = static_cast<int>(server_->served().tokenize_prompt(prompt).size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], expect_prompt);
  int completion = j["usage"]["completion_tokens"];
  EXPECT_LE(completion, 7);
  EXPECT_EQ(j["usage"]["total_tokens"], expect_prompt + completion);
  if (j["choices"][0]["finish_reason"] == "length") {
    EXPECT_EQ(completion, 7);
  }
  EXPECT_TRUE(j["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
}

TEST_F(Generation, StreamingMatchesNonStreaming) {
  json b = chat_body("The little dog", 24);
  auto plain = post(b);
  ASSERT_EQ(plain->status, 200);
  std::string expect = json::parse(plain->body)["choices"][0]["message"]["content"];
  b["stream"] = true;
  b["stream_options"] = {{"include_usage", true}};
  auto r = post(b);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  auto events = sse_data(r->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 1 < events.size(); i++) {
    const json& e = events[i];
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (e["choices"].empty()) {
      EXPECT_EQ(i, events.size() - 2) << "the usage chunk comes last";
      EXPECT_EQ(e["usage"]["completion_tokens"], json::parse(plain->body)["usage"]["completion_tokens"]);
      continue;
    }
    EXPECT_TRUE(e["usage"].is_null());
    auto& d = e["choices"][0]["delta"];
    if (d.contains("content")) text += d["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, expect);
  EXPECT_FALSE(finish.empty());
}

TEST_F(Generation, StopStringsCutTheAnswer) {
  json b = chat_body("Once upon a time", 40);
  std::string full = json::parse(post(b)->body)["choices"][0]["message"]["content"];
  ASSERT_GT(full.size(), 12u);
  std::string stop = full.substr(8, 3);
  b["stop"] = json::array({stop});
  json j = json::parse(post(b)->body);
  std::string cut = j["choices"][0]["message"]["content"];
  EXPECT_EQ(cut, full.substr(0, full.find(stop)));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

TEST_F(Generation, Logprobs) {
  json b = chat_body("Once upon a time", 5, {{"logprobs", true}, {"top_logprobs", 3}});
  json j = json::parse(post(b)->body);
  auto& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), j["usage"]["completion_tokens"].get<size_t>());
  for (auto& t : content) {
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    // Greedy: the chosen token is the most likely one.
    EXPECT_NEAR(t["top_logprobs"][0]["logprob"].get<double>(), t["logprob"].get<double>(), 1e-5);
  }
}

TEST_F(Generation, CompletionsWithSeveralPrompts) {
  json b = {{"model", "stories260K"}, {"prompt", {"Once upon a time", "The cat"}}, {"max_tokens", 6}, {"temperature", 0}};
  auto r = post(b, "/v1/completions");
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][1]["index"], 1);
  // Each matches the same prompt alone.
  json one = {{"model", "stories260K"}, {"prompt", "The cat"}, {"max_tokens", 6}, {"temperature", 0}};
  EXPECT_EQ(json::parse(post(one, "/v1/completions")->body)["choices"][0]["text"], j["choices"][1]["text"]);
}

TEST_F(Generation, PrefixReuseReportsCachedTokens) {
  json b = chat_body("Once upon a time there was a little girl named Lily who loved to play outside", 3);
  post(b);
  json j = json::parse(post(b)->body);
  EXPECT_GT(j["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 10);
}

TEST_F(Generation, StreamDisconnectFreesTheSlot) {
  RawConnection rc(server_->port());
  json b = chat_body("Once upon a time", 200, {{"stream", true}});
  b["temperature"] = 1.0;
  ASSERT_TRUE(rc.send_all(http_post("/v1/chat/completions", b.dump())));
  std::string got = rc.read_until("data:");
  ASSERT_NE(got.find("200 OK"), std::string::npos) << got;
  rc.shut();
  EXPECT_EQ(wait_for_stats(server_->scheduler(), idle).active, 0);
  EXPECT_EQ(post(chat_body("Hello", 2))->status, 200);
}

TEST_F(Generation, NonStreamingDisconnectFreesTheSlot) {
  RawConnection rc(server_->port());
  json b = chat_body("Once upon a time", 220);
  b["temperature"] = 1.0;
  ASSERT_TRUE(rc.send_all(http_post("/v1/chat/completions", b.dump())));
  wait_for_stats(server_->scheduler(), busy, 3);
  rc.shut();
  EXPECT_EQ(wait_for_stats(server_->scheduler(), idle).active, 0);
}

TEST_F(Generation, MetricsAndHealth) {
  post(chat_body("Hi", 2));
  auto c = server_->client();
  auto m = c.Get("/metrics");
  ASSERT_EQ(m->status, 200);
  for (const char* name : {"llmesh_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}",
                           "llmesh_generated_tokens_total", "llmesh_time_to_first_token_seconds_bucket",
                           "llmesh_time_per_output_token_seconds_count", "llmesh_queue_depth", "llmesh_tokens_per_second"})
    EXPECT_NE(m->body.find(name), std::string::npos) << name;
  auto h = c.Get("/health");
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto models = json::parse(c.Get("/v1/models")->body);
  EXPECT_EQ(models["data"][0]["id"], "stories260K");
}

// ---- scripted model: tool calls and thinking ----

std::vector<ScriptRule> script() {
  return {
      {"weather", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"},
      {"<tool_response>", "It is sunny in Paris."},
      {"think", "<think>\nTwo and two make four.\n</think>\n\nThe answer is 4."},
      {"", "Hello there."},
  };
}

json weather_tools() {
  return json::array({{{"type", "function"},
                       {"function", {{"name", "get_weather"}, {"description", "Current weather"},
                                     {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}},
                                                     {"required", {"city"}}}}}}}});
}

class Scripted : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerSetup s;
    s.script = script();
    s.ctx = 2048;
    server_ = new TestServer(s);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static json post(const json& body, const std::string& path = "/v1/chat/completions", int status = 200) {
    auto r = server_->client().Post(path, body.dump(), "application/json");
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, status) << r->body;
    if (body.value("stream", false)) return json(r->body);
    return json::parse(r->body);
  }
  static TestServer* server_;
};
TestServer* Scripted::server_ = nullptr;

TEST_F(Scripted, OpenAIToolCallRoundTrip) {
  json b = {{"model", "scripted"}, {"messages", {{{"role", "user"}, {"content", "What's the weather in Paris?"}}}},
            {"tools", weather_tools()}};
  json j = post(b);
  auto& msg = j["choices"][0]["message"];
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  ASSERT_EQ(msg["tool_calls"].size(), 1u);
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(msg["tool_calls"][0]["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}}));
  EXPECT_TRUE(msg["content"].is_null() || msg["content"] == "");
  // Send the result back.
  b["messages"].push_back(msg);
  b["messages"].push_back({{"role", "tool"}, {"tool_call_id", msg["tool_calls"][0]["id"]}, {"content", "sunny, 24 C"}});
  json k = post(b);
  EXPECT_EQ(k["choices"][0]["message"]["content"], "It is sunny in Paris.");
  EXPECT_EQ(k["choices"][0]["finish_reason"], "stop");
}

TEST_F(Scripted, OpenAIStreamedToolCall) {
  json b = {{"model", "scripted"}, {"messages", {{{"role", "user"}, {"content", "weather in Paris?"}}}},
            {"tools", weather_tools()}, {"stream", true}};
  auto events = sse_data(post(b).get<std::string>());
  std::string name, args, finish, content;
  for (auto& e : events) {
    if (e == "[DONE]" || e["choices"].empty()) continue;
    auto& d = e["choices"][0]["delta"];
    if (d.contains("tool_calls")) {
      auto& tc = d["tool_calls"][0];
      EXPECT_EQ(tc["index"], 0);
      if (tc.contains("function") && tc["function"].contains("name")) name += tc["function"]["name"].get<std::string>();
      if (tc.contains("function") && tc["function"].contains("arguments")) args += tc["function"]["arguments"].get<std::string>();
    }
    if (d.contains("content") && d["content"].is_string()) content += d["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(json::parse(args), json({{"city", "Paris"}}));
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(content.find("tool_call"), std::string::npos) << content;
}

TEST_F(Scripted, ForcedToolChoice) {
  // The script would greet; tool_choice forces the call, which the script then completes.
  json b = {{"model", "scripted"}, {"messages", {{{"role", "user"}, {"content", "weather please"}}}},
            {"tools", weather_tools()},
            {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}}};
  json j = post(b);
  ASSERT_EQ(j["choices"][0]["message"]["tool_calls"].size(), 1u) << j.dump();
  EXPECT_EQ(j["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather");
}

TEST_F(Scripted, ThinkingIsReasoningContent) {
  json b = {{"model", "scripted"}, {"messages", {{{"role", "user"}, {"content", "think: what is 2+2?"}}}}};
  json j = post(b);
  EXPECT_EQ(j["choices"][0]["message"]["content"], "The answer is 4.");
  EXPECT_EQ(j["choices"][0]["message"]["reasoning_content"], "Two and two make four.");
}

TEST_F(Scripted, AnthropicToolUseRoundTrip) {
  json tools = json::array({{{"name", "get_weather"}, {"description", "Current weather"},
                             {"input_schema", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}}});
  json b = {{"model", "scripted"}, {"max_tokens", 200}, {"tools", tools},
            {"messages", {{{"role", "user"}, {"content", "What's the weather in Paris?"}}}}};
  json j = post(b, "/v1/messages");
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["stop_reason"], "tool_use");
  json use;
  for (auto& c : j["content"])
    if (c["type"] == "tool_use") use = c;
  ASSERT_FALSE(use.is_null()) << j.dump();
  EXPECT_EQ(use["name"], "get_weather");
  EXPECT_EQ(use["input"], json({{"city", "Paris"}}));
  EXPECT_TRUE(use["id"].get<std::string>().rfind("toolu_", 0) == 0);
  b["messages"].push_back({{"role", "assistant"}, {"content", j["content"]}});
  b["messages"].push_back({{"role", "user"}, {"content", {{{"type", "tool_result"}, {"tool_use_id", use["id"]},
                                                             {"content", "sunny"}}}}});
  json k = post(b, "/v1/messages");
  EXPECT_EQ(k["stop_reason"], "end_turn");
  EXPECT_EQ(k["content"][0]["text"], "It is sunny in Paris.");
}

TEST_F(Scripted, AnthropicStreamEventSequence) {
  json tools = json::array({{{"name", "get_weather"}, {"input_schema", {{"type", "object"}}}}});
  json b = {{"model", "scripted"}, {"max_tokens", 200}, {"tools", tools}, {"stream", true},
            {"thinking", {{"type", "enabled"}, {"budget_tokens", 1024}}},
            {"messages", {{{"role", "user"}, {"content", "think about the weather"}}}}};
  std::vector<std::string> names;
  auto events = sse_data(post(b, "/v1/messages").get<std::string>(), &names);
  ASSERT_GE(names.size(), 6u);
  EXPECT_EQ(names.front(), "message_start");
  EXPECT_EQ(names[1], "content_block_start");
  EXPECT_EQ(names[2], "ping");
  EXPECT_EQ(names[names.size() - 2], "message_delta");
  EXPECT_EQ(names.back(), "message_stop");
  for (size_t i = 0; i < names.size(); i++) EXPECT_EQ(events[i]["type"], names[i]);
  // "weather" comes first in the rules: the answer is a tool call.
  EXPECT_EQ(events[names.size() - 2]["delta"]["stop_reason"], "tool_use");
  std::string partial;
  for (auto& e : events)
    if (e["type"] == "content_block_delta" && e["delta"]["type"] == "input_json_delta")
      partial += e["delta"]["partial_json"].get<std::string>();
  EXPECT_EQ(json::parse(partial), json({{"city", "Paris"}}));
}

TEST_F(Scripted, AnthropicThinkingBlocks) {
  json b = {{"model", "scripted"}, {"max_tokens", 200}, {"thinking", {{"type", "enabled"}, {"budget_tokens", 1024}}},
            {"messages", {{{"role", "user"}, {"content", "think: 2+2?"}}}}};
  json j = post(b, "/v1/messages");
  ASSERT_EQ(j["content"].size(), 2u) << j.dump();
  EXPECT_EQ(j["content"][0]["type"], "thinking");
  EXPECT_EQ(j["content"][0]["thinking"], "Two and two make four.");
  EXPECT_EQ(j["content"][1]["text"], "The answer is 4.");
  json ct = post({{"model", "scripted"}, {"messages", b["messages"]}}, "/v1/messages/count_tokens");
  EXPECT_GT(ct["input_tokens"].get<int>(), 3);
}

TEST_F(Scripted, StopSequenceReported) {
  json b = {{"model", "scripted"}, {"max_tokens", 50}, {"stop_sequences", {"there"}},
            {"messages", {{{"role", "user"}, {"content", "hello"}}}}};
  json j = post(b, "/v1/messages");
  EXPECT_EQ(j["stop_reason"], "stop_sequence");
  EXPECT_EQ(j["stop_sequence"], "there");
  EXPECT_EQ(j["content"][0]["text"], "Hello ");
}

}  // namespace
}  // namespace llmesh::test
