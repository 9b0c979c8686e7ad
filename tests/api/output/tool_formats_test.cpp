#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "output/output_parser.h"
#include "parser_harness.h"
#include "test_paths.h"

namespace llmesh::api::test {
namespace {

using nlohmann::ordered_json;

TEST(DetectToolFormat, Qwen3TemplateFromTheTokenizer) {
  std::ifstream f(llmesh::test::shared_dir() + "/tokenizers/qwen3/tokenizer_config.json");
  if (!f) GTEST_SKIP() << "no qwen3 tokenizer_config.json in shared";
  const std::string source = nlohmann::json::parse(f)["chat_template"].get<std::string>();
  EXPECT_EQ(detect_tool_format(source), ToolFormat::Hermes);
  EXPECT_TRUE(detect_thinking(source));
}

TEST(DetectToolFormat, TemplateSnippets) {
  EXPECT_EQ(detect_tool_format("{{- '<tool_call>\\n' + tool_call | tojson + '\\n</tool_call>' }}"),
            ToolFormat::Hermes);
  EXPECT_EQ(detect_tool_format("{{- \"[TOOL_CALLS][\" }}"), ToolFormat::Mistral);
  EXPECT_EQ(detect_tool_format("{{- '<|python_tag|>' + tool_call.name }}"), ToolFormat::Llama3);
  EXPECT_EQ(detect_tool_format("{%- if message.role == 'ipython' %}"), ToolFormat::Llama3);
  EXPECT_EQ(detect_tool_format("Given the following functions, please respond with a JSON for a "
                               "function call with its proper arguments"),
            ToolFormat::Llama3);
  EXPECT_EQ(detect_tool_format("{{ '<|im_start|>' + message.role + '\\n' }}"), ToolFormat::None);
  EXPECT_FALSE(detect_thinking("{{ '<|im_start|>assistant\\n' }}"));
  EXPECT_TRUE(detect_thinking("{{ '<|im_start|>assistant\\n<think>\\n' }}"));
  EXPECT_STREQ(tool_format_name(ToolFormat::Hermes), "hermes");
  EXPECT_STREQ(tool_format_name(ToolFormat::None), "none");
}

TEST(ToolSystemPrompt, ListsToolsAndTeachesTheHermesFormat) {
  ordered_json tools = ordered_json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"name": "search", "description": "Web search",
      "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
  ])");
  const std::string prompt = tool_system_prompt(tools);
  const size_t open = prompt.find("<tools>\n"), close = prompt.find("\n</tools>", open);
  ASSERT_NE(open, std::string::npos);
  ASSERT_NE(close, std::string::npos);
  EXPECT_NE(prompt.find("<tool_call>"), std::string::npos);
  EXPECT_NE(prompt.find("</tool_call>"), std::string::npos);

  // One JSON signature per line between the tags, Anthropic's shape converted.
  std::istringstream lines(prompt.substr(open + 8, close - open - 7));
  std::vector<ordered_json> sigs;
  for (std::string line; std::getline(lines, line);) sigs.push_back(ordered_json::parse(line));
  ASSERT_EQ(sigs.size(), 2u);
  EXPECT_EQ(sigs[0]["function"]["name"], "get_weather");
  EXPECT_EQ(sigs[1]["type"], "function");
  EXPECT_EQ(sigs[1]["function"]["name"], "search");
  EXPECT_EQ(sigs[1]["function"]["parameters"]["properties"]["q"]["type"], "string");

  EXPECT_EQ(tool_system_prompt(ordered_json::array()), "");
}

TEST(RandomCallId, ShapeAndUniqueness) {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string id = random_call_id();
    ASSERT_EQ(id.size(), 29u);
    ASSERT_EQ(id.rfind("call_", 0), 0u);
    for (char c : id.substr(5)) ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c))) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 10000u);
  EXPECT_EQ(random_call_id("toolu_").rfind("toolu_", 0), 0u);
  EXPECT_EQ(random_call_id("").size(), 24u);
}

TEST(RandomCallId, ThreadsGetDifferentIds) {
  std::vector<std::string> ids(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) threads.emplace_back([&ids, t] { ids[t] = random_call_id(); });
  for (auto& th : threads) th.join();
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 8u);
}

}  // namespace
}  // namespace llmesh::api::test
