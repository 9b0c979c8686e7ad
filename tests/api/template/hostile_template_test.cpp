// Templates come from untrusted model files: hostile ones must fail with TemplateError
// quickly, never crash, hang or exhaust memory.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "template/chat_template.h"

using llmesh::api::ChatInputs;
using llmesh::api::ChatTemplate;
using llmesh::api::TemplateError;

namespace {

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// Parses and renders; true when it threw TemplateError. Anything else fails the test.
bool fails_cleanly(const std::string& src, double max_seconds = 5.0) {
  auto start = std::chrono::steady_clock::now();
  bool threw = false;
  try {
    ChatInputs in;
    in.messages = {{{"role", "user"}, {"content", "hi"}}};
    ChatTemplate::parse(src, "hostile").render(in);
  } catch (const TemplateError&) {
    threw = true;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(s, max_seconds) << src.substr(0, 200);
  return threw;
}

}  // namespace

TEST(HostileTemplates, DeepNestingIsRefused) {
  EXPECT_TRUE(fails_cleanly("{{ " + repeat("(", 100000) + "1" + repeat(")", 100000) + " }}"));
  EXPECT_TRUE(fails_cleanly("{{ " + repeat("[", 100000) + repeat("]", 100000) + " }}"));
  EXPECT_TRUE(fails_cleanly(repeat("{% if true %}", 100000) + repeat("{% endif %}", 100000)));
  EXPECT_TRUE(fails_cleanly(repeat("{% for x in [1] %}", 5000) + repeat("{% endfor %}", 5000)));
  EXPECT_TRUE(fails_cleanly("{{ 1" + repeat(" + 1", 100000) + " }}"));
  EXPECT_TRUE(fails_cleanly("{{ 'x'" + repeat("|trim", 100000) + " }}"));
  EXPECT_TRUE(fails_cleanly("{{ a" + repeat(".b", 100000) + " }}"));
  EXPECT_TRUE(fails_cleanly("{{ " + repeat("not ", 100000) + "x }}"));
  EXPECT_TRUE(fails_cleanly("{{ " + repeat("-", 100000) + "1 }}"));
}

TEST(HostileTemplates, RunawayWorkIsStopped) {
  // Infinite-ish loops hit the iteration budget.
  EXPECT_TRUE(fails_cleanly("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"));
  // Huge output hits the output limit.
  EXPECT_TRUE(fails_cleanly("{% for a in range(100000) %}{{ 'x' * 10000 }}{% endfor %}"));
  EXPECT_TRUE(fails_cleanly("{{ 'x' * 1000000000 }}"));
  EXPECT_TRUE(fails_cleanly("{{ [1] * 1000000000 }}"));
  // Doubling a string in a loop.
  EXPECT_TRUE(fails_cleanly(
      "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}"));
  // Unbounded recursion.
  EXPECT_TRUE(fails_cleanly("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"));
  EXPECT_TRUE(fails_cleanly("{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(1) }}"));
  // Deep values built in a loop, and a namespace that contains itself.
  EXPECT_TRUE(fails_cleanly(
      "{% set ns = namespace(v=[]) %}{% for i in range(100000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}"));
  EXPECT_TRUE(fails_cleanly("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"));
  EXPECT_TRUE(fails_cleanly("{{ range(10000000) }}"));
  EXPECT_TRUE(fails_cleanly("{{ 10 ** 100 }}"));
}

TEST(HostileTemplates, DeeplyNestedInputIsRefused) {
  nlohmann::ordered_json deep = "x";
  for (int i = 0; i < 2000; ++i) {
    nlohmann::ordered_json wrap = nlohmann::ordered_json::array();
    wrap.push_back(std::move(deep));
    deep = std::move(wrap);
  }
  ChatInputs in;
  in.messages = {{{"role", "user"}, {"content", deep}}};
  EXPECT_THROW(ChatTemplate::chatml().render(in), TemplateError);
}

TEST(HostileTemplates, SyntaxErrorsThrowTemplateError) {
  const char* bad[] = {"{{", "{%", "{#", "{{ }}", "{% %}", "{% if %}", "{% if x %}", "{% for x in %}{% endfor %}",
                       "{% endfor %}", "{% set %}", "{{ x | }}", "{{ x is }}", "{{ 'abc }}", "{{ (1 }}", "{{ [1, }}",
                       "{% macro %}", "{% raw %}no end", "{{ x.1.2. }}", "{% else %}", "{% break %}",
                       "{% include 'x' %}", "{% extends 'x' %}", "{{ x ) }}", "{{ @ }}", "{% for x in y recursive %}{% endfor %}",
                       "\xff\xfe{{ \xff }}"};
  for (const char* src : bad) {
    EXPECT_THROW(ChatTemplate::parse(src, "bad"), TemplateError) << src;
  }
}

TEST(HostileTemplates, RandomFragmentsNeverCrash) {
  const std::vector<std::string> frags = {
      "{{", "}}", "{%", "%}", "{#", "#}", "-", "+", " if ", " for ", " in ", " endif ", " endfor ", " set ", "x", "y",
      "=", "(", ")", "[", "]", "{", "}", "'s'", "\"", "1", "2.5", "|", "trim", "length", " is ", "defined", ".", ",",
      ":", "~", "*", "**", "//", "%", " not ", " and ", " or ", "loop", "messages", " else ", " elif ", "\n", "  ",
      "namespace(", "range(", "raise_exception(", "macro ", " endmacro ", "caller()", "None", "true", "[::-1]"};
  std::mt19937 rng(1234);
  int rendered = 0, refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string src;
    int n = 1 + int(rng() % 24);
    for (int k = 0; k < n; ++k) src += frags[rng() % frags.size()];
    try {
      ChatInputs in;
      in.messages = {{{"role", "user"}, {"content", "hi"}}};
      ChatTemplate::parse(src, "fuzz").render(in);
      ++rendered;
    } catch (const TemplateError&) {
      ++refused;
    }
  }
  EXPECT_EQ(rendered + refused, 3000);
}
