#include "output/output_parser.h"

#include <gtest/gtest.h>

#include "parser_harness.h"

namespace llmesh::api::test {
namespace {

using Kind = OutputEvent::Kind;

// The same input must give the same result whole, character by character and in random
// pieces; returns the whole-input result for the test's own expectations.
Outcome parse_every_way(const OutputParserOptions& opt, std::string_view text) {
  Outcome whole = parse_whole(opt, text);
  EXPECT_EQ(parse_pieces(opt, split_chars(text)), whole) << "char by char: " << text;
  std::mt19937 rng(1234);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(parse_pieces(opt, split_random(text, rng)), whole) << "random split: " << text;
  return whole;
}

// ---- Hermes / Qwen ----

TEST(HermesCalls, SingleCall) {
  auto r = parse_every_way(options(ToolFormat::Hermes),
                           "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                           "{\"city\": \"Paris\", \"days\": 3}}\n</tool_call>");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[0].arguments, R"({"city":"Paris","days":3})");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.calls[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(r.calls[0].id.size(), 5u + 24u);
}

TEST(HermesCalls, TextBeforeSeveralCallsAndTextAfter) {
  auto r = parse_every_way(
      options(ToolFormat::Hermes),
      "Let me check both.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n"
      "</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\nDone.");
  ASSERT_EQ(r.items.size(), 4u);
  EXPECT_EQ(r.items[0].kind, Kind::Text);
  EXPECT_EQ(r.items[0].text, "Let me check both.");
  EXPECT_EQ(r.items[1].name, "a");
  EXPECT_EQ(r.items[1].arguments, R"({"x":1})");
  EXPECT_EQ(r.items[2].name, "b");
  EXPECT_EQ(r.items[2].arguments, "{}");
  EXPECT_EQ(r.items[3].text, "Done.");
  EXPECT_EQ(r.text, "Let me check both.Done.");
  EXPECT_NE(r.calls[0].id, r.calls[1].id);
}

TEST(HermesCalls, ParametersAndStringArgumentsAndKeyOrder) {
  auto r = parse_every_way(
      options(ToolFormat::Hermes),
      "<tool_call>{\"name\": \"f\", \"parameters\": {\"z\": 1, \"a\": [true, null]}}</tool_call>"
      "<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"q\\\": \\\"x y\\\"}\"}</tool_call>"
      "<tool_call>{\"name\": \"h\"}</tool_call>");
  ASSERT_EQ(r.calls.size(), 3u);
  EXPECT_EQ(r.calls[0].arguments, R"({"z":1,"a":[true,null]})");  // order kept
  EXPECT_EQ(r.calls[1].arguments, R"({"q":"x y"})");
  EXPECT_EQ(r.calls[2].arguments, "{}");
  EXPECT_EQ(r.text, "");
}

TEST(HermesCalls, OpenAiFunctionWrapper) {
  auto r = parse_every_way(options(ToolFormat::Hermes),
                           R"(<tool_call>{"type": "function", "function": {"name": "f", )"
                           R"("arguments": {"k": "v"}}}</tool_call>)");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "f");
  EXPECT_EQ(r.calls[0].arguments, R"({"k":"v"})");
}

TEST(HermesCalls, MalformedCallsAreText) {
  const char* cases[] = {
      "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }}\n</tool_call>",  // bad JSON
      "<tool_call>{\"arguments\": {}}</tool_call>",                             // no name
      "<tool_call>{\"name\": \"f\", \"arguments\": 5}</tool_call>",             // args not object
      "<tool_call>{\"name\": \"f\", \"arguments\": \"not json\"}</tool_call>",
      "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}",  // never closed
      "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1",    // cut off
      "<tool_call>{\"name\": \"f\"} trailing</tool_call>",
      "<tool_call>hello</tool_call>",
      "<tool_call>",
      "<tool_call></tool_call>",
      "<tool_ca",
  };
  for (const char* input : cases) {
    auto r = parse_every_way(options(ToolFormat::Hermes), input);
    EXPECT_EQ(r.text, input);
    EXPECT_TRUE(r.calls.empty()) << input;
  }
}

TEST(HermesCalls, MalformedCallThenGoodCall) {
  auto r = parse_every_way(options(ToolFormat::Hermes),
                           "<tool_call>oops <tool_call>{\"name\": \"f\", \"arguments\": {}}"
                           "</tool_call>");
  EXPECT_EQ(r.text, "<tool_call>oops");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "f");
}

TEST(HermesCalls, CallFiresAsSoonAsClosed) {
  OutputParser p(options(ToolFormat::Hermes));
  EXPECT_TRUE(p.feed("<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_cal").empty());
  auto events = p.feed("l>");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::ToolCall);
  EXPECT_EQ(events[0].index, 0);
  EXPECT_EQ(events[0].call.name, "f");
  EXPECT_TRUE(p.finish().empty());
  EXPECT_EQ(p.tool_calls().size(), 1u);
  EXPECT_EQ(p.content(), "");
}

TEST(HermesCalls, NoFormatMeansMarkupIsText) {
  const std::string input =
      "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>[TOOL_CALLS]<|python_tag|>";
  OutputParser p(options(ToolFormat::None));
  auto events = p.feed(input);
  ASSERT_EQ(events.size(), 1u);  // nothing held back at all
  EXPECT_EQ(events[0].text, input);
  EXPECT_TRUE(p.finish().empty());
}

// ---- Streaming promptness ----

TEST(Streaming, PlainTextIsNotHeldBack) {
  OutputParser p(options(ToolFormat::Hermes, /*thinking=*/true));
  auto e = p.feed("Hello");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, "Hello");
  e = p.feed(" wor");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, " wor");
}

TEST(Streaming, LessThanThatIsNotAMarkerGoesOutOnceDecided) {
  OutputParser p(options(ToolFormat::Hermes, /*thinking=*/true));
  auto e = p.feed("a <");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, "a");  // " <" could begin " <tool_call>"
  e = p.feed(" b");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, " < b");
  e = p.feed(" <to");
  ASSERT_EQ(e.size(), 0u);
  e = p.feed("p>");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, " <top>");
  EXPECT_TRUE(p.finish().empty());
  EXPECT_EQ(p.content(), "a < b <top>");
}

TEST(Streaming, HeldPrefixFlushedAtFinish) {
  OutputParser p(options(ToolFormat::Mistral));
  EXPECT_EQ(p.feed("x [TOOL_").at(0).text, "x");
  auto e = p.finish();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, " [TOOL_");
}

// ---- Llama 3.x ----

TEST(Llama3Calls, BareJsonCall) {
  auto r = parse_every_way(options(ToolFormat::Llama3),
                           "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[0].arguments, R"({"city":"Oslo"})");
  EXPECT_EQ(r.text, "");
}

TEST(Llama3Calls, PythonTagAndSeveralCalls) {
  auto r = parse_every_way(options(ToolFormat::Llama3),
                           "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; "
                           "{\"name\": \"b\", \"arguments\": {\"n\": 2}}");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "a");
  EXPECT_EQ(r.calls[1].name, "b");
  EXPECT_EQ(r.calls[1].arguments, R"({"n":2})");
  EXPECT_EQ(r.text, "");
}

TEST(Llama3Calls, LeadingWhitespaceBeforeCall) {
  auto r = parse_every_way(options(ToolFormat::Llama3), "\n {\"name\": \"a\", \"parameters\": {}}");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.text, "");
}

TEST(Llama3Calls, JsonThatIsNotACallIsText) {
  for (const char* input : {"{\"answer\": 42} is the JSON you asked for",
                            "{not json at all}", "{\"name\": \"a\", \"parameters\": {}",
                            "The call {\"name\": \"a\", \"parameters\": {}} is in the middle"}) {
    auto r = parse_every_way(options(ToolFormat::Llama3), input);
    EXPECT_EQ(r.text, input);
    EXPECT_TRUE(r.calls.empty()) << input;
  }
}

// ---- Mistral ----

TEST(MistralCalls, JsonListOfCalls) {
  auto r = parse_every_way(options(ToolFormat::Mistral),
                           "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": \"é\"}, "
                           "\"id\": \"abc123def\"}, {\"name\": \"b\", \"arguments\": {}}]");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "a");
  EXPECT_EQ(r.calls[0].arguments, R"({"x":"é"})");
  EXPECT_EQ(r.calls[1].name, "b");
  EXPECT_EQ(r.calls[0].id.rfind("call_", 0), 0u);  // our ids, see docs/tool-calls.md
  EXPECT_EQ(r.text, "");
}

TEST(MistralCalls, NameArgsStyle) {
  auto r = parse_every_way(options(ToolFormat::Mistral),
                           "Sure. [TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}"
                           "[TOOL_CALLS]get_time[CALL_ID]a1B2c3D4e[ARGS]{}");
  EXPECT_EQ(r.text, "Sure.");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[0].arguments, R"({"city":"Rome"})");
  EXPECT_EQ(r.calls[1].name, "get_time");
  EXPECT_EQ(r.calls[1].arguments, "{}");
}

TEST(MistralCalls, BareListWhenTheMarkerWasNotRendered) {
  // [TOOL_CALLS] is a control token; a decoder that skips those leaves the bare list.
  auto r = parse_every_way(options(ToolFormat::Mistral),
                           " [{\"name\": \"a\", \"arguments\": {\"n\": 1}}]");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, R"({"n":1})");
  EXPECT_EQ(r.text, "");
  for (const char* input : {"[1] See the footnote.", "[Note: a long aside", "[] empty",
                            "[{\"x\": 1}] is a list", "Text [{\"name\": \"a\"}]"}) {
    r = parse_every_way(options(ToolFormat::Mistral), input);
    EXPECT_EQ(r.text, input);
    EXPECT_TRUE(r.calls.empty()) << input;
  }
  // Decided at the second character, not at the closing bracket.
  OutputParser p(options(ToolFormat::Mistral));
  EXPECT_TRUE(p.feed("[").empty());
  auto e = p.feed("Note");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, "[Note");
}

TEST(MistralCalls, MalformedIsText) {
  for (const char* input : {"[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"x\": 1}]",
                            "[TOOL_CALLS][{\"name\": \"a\"", "[TOOL_CALLS]",
                            "[TOOL_CALLS]bad name[ARGS]{}", "[TOOL_CALLS]f[ARGS]{\"a\": }",
                            "[TOOL_CALLS]f[ARGS][1]", "[TOOL_CALLS]f[AR", "[TOOL_CALLS]f"}) {
    auto r = parse_every_way(options(ToolFormat::Mistral), input);
    EXPECT_EQ(r.text, input);
    EXPECT_TRUE(r.calls.empty()) << input;
  }
}

// ---- Thinking ----

TEST(Thinking, ThinkBlockIsReasoningWithNewlinesStripped) {
  auto r = parse_every_way(options(ToolFormat::None, true),
                           "<think>\nStep 1.\n\nStep 2.\n</think>\n\nThe answer.");
  EXPECT_EQ(r.reasoning, "Step 1.\n\nStep 2.");
  EXPECT_EQ(r.text, "The answer.");
  ASSERT_EQ(r.items.size(), 2u);
  EXPECT_EQ(r.items[0].kind, Kind::Reasoning);
  EXPECT_EQ(r.items[1].kind, Kind::Text);
}

TEST(Thinking, StartsThinking) {
  auto r = parse_every_way(options(ToolFormat::None, true, true), "a\n</think>\n\nb");
  EXPECT_EQ(r.reasoning, "a");
  EXPECT_EQ(r.text, "b");
  r = parse_every_way(options(ToolFormat::None, true, true), "\nlet me see\n</think>\n\n\n  b\n");
  EXPECT_EQ(r.reasoning, "let me see");
  EXPECT_EQ(r.text, "  b\n");
}

TEST(Thinking, StartsThinkingButModelRepeatsTheTag) {
  auto r = parse_every_way(options(ToolFormat::Hermes, true, true), "<think>\nx\n</think>\ny");
  EXPECT_EQ(r.reasoning, "x");
  EXPECT_EQ(r.text, "y");
}

TEST(Thinking, EmptyThinkBlock) {
  auto r = parse_every_way(options(ToolFormat::Hermes, true), "<think>\n\n</think>\n\nHi");
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.text, "Hi");
  ASSERT_EQ(r.items.size(), 1u);
}

TEST(Thinking, NoThinkBlockIsAllText) {
  auto r = parse_every_way(options(ToolFormat::Hermes, true), "Just <b>an</b> answer <think>");
  EXPECT_EQ(r.text, "Just <b>an</b> answer <think>");
  EXPECT_EQ(r.reasoning, "");
}

TEST(Thinking, UnterminatedThinkingIsReasoning) {
  auto r = parse_every_way(options(ToolFormat::Hermes, true), "<think>\nstill going </thi");
  EXPECT_EQ(r.reasoning, "still going </thi");
  EXPECT_EQ(r.text, "");
}

TEST(Thinking, MarkupInsideThinkingIsReasoning) {
  auto r = parse_every_way(options(ToolFormat::Hermes, true, true),
                           "maybe <tool_call>{\"name\": \"f\"}</tool_call>?\n</think>\n\n"
                           "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>");
  EXPECT_EQ(r.reasoning, "maybe <tool_call>{\"name\": \"f\"}</tool_call>?");
  EXPECT_EQ(r.text, "");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, R"({"a":1})");
}

TEST(Thinking, OffMeansTagsAreText) {
  auto r = parse_every_way(options(ToolFormat::Hermes), "<think>x</think>y");
  EXPECT_EQ(r.text, "<think>x</think>y");
  EXPECT_EQ(r.reasoning, "");
}

TEST(Thinking, ReasoningStreamsPromptly) {
  OutputParser p(options(ToolFormat::None, true, true));
  EXPECT_EQ(p.feed("\nHmm").at(0).text, "Hmm");
  EXPECT_EQ(p.feed(", so\n").at(0).text, ", so");  // the newline waits: </think> may follow
  EXPECT_EQ(p.feed("x").at(0).text, "\nx");
  EXPECT_TRUE(p.feed("</th").empty());
  EXPECT_TRUE(p.feed("ink>\n\n").empty());
  auto e = p.feed("Answer");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Text);
  EXPECT_EQ(e[0].text, "Answer");
}

// ---- Unicode ----

TEST(Unicode, TextAndArgumentsKeepUtf8) {
  auto r = parse_every_way(options(ToolFormat::Hermes, true),
                           "<think>δοκιμή 🤔</think>Voilà 世界 <tool_call>{\"name\": \"traduire\", "
                           "\"arguments\": {\"texte\": \"naïve 🎉\", \"e\": \"\\u00e9\"}}</tool_call>");
  EXPECT_EQ(r.reasoning, "δοκιμή 🤔");
  EXPECT_EQ(r.text, "Voilà 世界");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, R"({"texte":"naïve 🎉","e":"é"})");
}

// ---- A corpus streamed every way ----

TEST(Streaming, EverySplitGivesTheSameEvents) {
  struct Case {
    OutputParserOptions opt;
    std::string text;
  };
  const Case cases[] = {
      {options(ToolFormat::Hermes, true),
       "<think>\nplan: call f\n</think>\n\nOK <tool_call>\n{\"name\": \"f\", \"arguments\": "
       "{\"s\": \"</tool_call> inside a string\"}}\n</tool_call> end"},
      {options(ToolFormat::Hermes), "a<b<<tool_call<tool_call>{}</tool_call>[<tool_call> {\"name\""},
      {options(ToolFormat::Llama3), "  {\"name\": \"x\", \"parameters\": {\"q\": \"}{\"}};{"},
      {options(ToolFormat::Mistral, true, true),
       "r\n</think>[TOOL_CALLS][{\"name\": \"m\", \"arguments\": {\"v\": [1, {\"w\": 2}]}}] tail"},
      {options(ToolFormat::None, true), "\n\n<think>\n\n\nx\n\n</think>\n\n\nplain < > [ ] { }"},
  };
  for (const auto& c : cases) parse_every_way(c.opt, c.text);
}

// ---- Hostile input ----

TEST(Hostile, MegabyteOfOpeningTagsIsTextInLinearTime) {
  std::string input;
  while (input.size() < (1u << 20)) input += "<tool_call>";
  OutputParser whole(options(ToolFormat::Hermes, true));
  Outcome a;
  collect(a, whole.feed(input));
  collect(a, whole.finish());
  EXPECT_EQ(a.text, input);

  OutputParser streamed(options(ToolFormat::Hermes, true));
  Outcome b;
  for (size_t i = 0; i < input.size(); i += 3) collect(b, streamed.feed(input.substr(i, 3)));
  collect(b, streamed.finish());
  EXPECT_EQ(b.text, input);
}

TEST(Hostile, UnterminatedCallStreamedByteByByte) {
  // One long call that never closes: every piece must cost O(piece), not O(buffer).
  OutputParser p(options(ToolFormat::Hermes));
  Outcome out;
  const std::string head = "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"";
  collect(out, p.feed(head));
  for (int i = 0; i < (1 << 20); ++i) collect(out, p.feed("x"));
  collect(out, p.finish());
  EXPECT_EQ(out.text, head + std::string(1 << 20, 'x'));
  EXPECT_TRUE(out.calls.empty());
}

TEST(Hostile, DeeplyNestedJsonIsText) {
  std::string deep = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": " +
                     std::string(200000, '[') + std::string(200000, ']') + "}}</tool_call>";
  auto r = parse_whole(options(ToolFormat::Hermes), deep);
  EXPECT_EQ(r.text, deep);
  EXPECT_TRUE(r.calls.empty());

  // The same depth hidden inside a string argument.
  std::string in_string = "<tool_call>{\"name\": \"f\", \"arguments\": \"" +
                          std::string(200000, '[') + std::string(200000, ']') + "\"}</tool_call>";
  r = parse_whole(options(ToolFormat::Hermes), in_string);
  EXPECT_EQ(r.text, in_string);

  std::string llama = std::string(100000, '{');
  r = parse_whole(options(ToolFormat::Llama3), llama);
  EXPECT_EQ(r.text, llama);
}

TEST(Hostile, LongRunsOfSpaceAndBrackets) {
  std::string spaces(1 << 20, ' ');
  OutputParser p(options(ToolFormat::Hermes));
  Outcome out;
  for (size_t i = 0; i < spaces.size(); i += 7) collect(out, p.feed(spaces.substr(i, 7)));
  collect(out, p.finish());
  EXPECT_EQ(out.text, spaces);

  std::string brackets(1 << 20, '[');
  auto r = parse_whole(options(ToolFormat::Mistral), "[TOOL_CALLS]" + brackets);
  EXPECT_EQ(r.text, "[TOOL_CALLS]" + brackets);
}

}  // namespace
}  // namespace llmesh::api::test
