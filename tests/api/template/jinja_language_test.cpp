// The Jinja language pieces: fixed expectations for the semantics that matter most, and a
// corpus of snippets rendered both by llmesh and by Python's jinja2 (HF-style environment)
// that must agree byte for byte, or both fail.
#include <gtest/gtest.h>

#include "template/chat_template.h"
#include "template_test_support.h"

using llmesh::api::ChatInputs;
using llmesh::api::ChatTemplate;
using llmesh::api::TemplateError;
using ojson = nlohmann::ordered_json;

namespace {

std::string render(const std::string& src, ojson extra = ojson::object()) {
  ChatInputs in;
  in.extra = std::move(extra);
  return ChatTemplate::parse(src, "test").render(in);
}

}  // namespace

TEST(JinjaLanguage, TextAndOutput) {
  EXPECT_EQ(render("hello"), "hello");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }}"), "a1None");
  EXPECT_EQ(render("{{ x }}|{{ x.y is defined }}", {{"x", {{"z", 1}}}}), "{'z': 1}|False");
  EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5] }}"), "[1, 'a', None, True, 1.5]");
  EXPECT_EQ(render("{{ undefined_name }}"), "");
}

TEST(JinjaLanguage, WhitespaceControlMatchesTrimAndLstripBlocks) {
  EXPECT_EQ(render("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif %}"), "ab");
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif +%}\nc"), "a\n  b\nc");
  EXPECT_EQ(render("x {# comment #}\ny"), "x y");
  EXPECT_EQ(render("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
  EXPECT_EQ(render("line\n"), "line");  // keep_trailing_newline=False
}

TEST(JinjaLanguage, LoopsAndScopes) {
  EXPECT_EQ(render("{% for x in [1,2,3] %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}"),
            "11,22,33");
  EXPECT_EQ(render("{% set x = 0 %}{% for i in [1,2] %}{% set x = i %}{% endfor %}{{ x }}"), "0");
  EXPECT_EQ(render("{% set ns = namespace(x=0) %}{% for i in [1,2] %}{% set ns.x = i %}{% endfor %}{{ ns.x }}"), "2");
  EXPECT_EQ(render("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"), "012");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(render("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in [1,2,3,4] if x is even %}{{ x }}/{{ loop.length }} {% endfor %}"), "2/2 4/2 ");
}

TEST(JinjaLanguage, PythonValueSemantics) {
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"), "3 -4 2 3.5 1024");
  EXPECT_EQ(render("{{ 'héllo'|length }} {{ 'héllo'[1] }} {{ 'héllo'[::-1] }}"), "5 é olléh");
  EXPECT_EQ(render("{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1.0 }}"), "0.30000000000000004 1e+16 1.0");
  EXPECT_EQ(render("{{ {'a': 'é', 'b': [1, 2.5]}|tojson }}"), "{\"a\": \"é\", \"b\": [1, 2.5]}");
  EXPECT_EQ(render("{{ '%s=%d' % ('a', 3) }} {{ '{}-{x}'.format(1, x=2) }}"), "a=3 1-2");
}

TEST(JinjaLanguage, ErrorsNameLineAndColumn) {
  try {
    ChatTemplate::parse("ok\n{% if %}", "my-template");
    FAIL() << "expected a syntax error";
  } catch (const TemplateError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("my-template"), std::string::npos) << m;
    EXPECT_NE(m.find("line 2"), std::string::npos) << m;
    EXPECT_NE(m.find("column"), std::string::npos) << m;
  }
  try {
    render("ok\n  {{ raise_exception('nope') }}");
    FAIL() << "expected raise_exception to throw";
  } catch (const TemplateError& e) {
    EXPECT_STREQ(e.what(), "chat template 'test', line 2, column 6: raise_exception: nope");
  }
  EXPECT_THROW(render("{{ [].append(1) }}"), TemplateError);  // sandbox: lists are immutable
  EXPECT_THROW(render("{{ x.y }}"), TemplateError);           // attribute of undefined
  EXPECT_THROW(render("{{ 'a' + 1 }}"), TemplateError);
  EXPECT_THROW(render("{{ x | nosuchfilter }}"), TemplateError);
}

// Snippets exercising one feature each; llmesh and jinja2 must agree (or both fail).
TEST(JinjaLanguage, SnippetsMatchJinja2) {
  const ojson vars = {
      {"s", "  Hello, World! héllo  "},
      {"n", 7},
      {"f", 2.5},
      {"items", {3, 1, 2}},
      {"words", {"banana", "Apple", "cherry", "apple"}},
      {"users", {{{"name", "bob"}, {"age", 30}, {"admin", true}}, {{"name", "Al"}, {"age", 25}, {"admin", false}}}},
      {"d", {{"b", 1}, {"a", 2}, {"C", 3}}},
      {"nested", {{"x", {{"y", {1, 2, {{"z", "deep"}}}}}}}},
      {"text", "line one\nline two\n\nline four"},
      {"empty", ""},
      {"nothing", nullptr},
      {"flag", false},
      {"uni", "日本語テキスト🎉"},
  };
  const std::vector<std::string> snippets = {
      // output and literals
      "{{ 1 }}{{ -1 }}{{ 1.5 }}{{ -0.0 }}{{ 1e3 }}{{ 1_000 }}{{ 3.14e-10 }}{{ 123456789012345678 }}",
      "{{ true }}{{ True }}{{ none }}{{ None }}{{ false }}",
      "{{ 'a\\nb\\tc\\\\d\\'e\"f' }}|{{ \"x\\u00e9\\x41\" }}|{{ 'adj' 'acent' }}",
      "{{ [1, [2, (3,)], {'k': 'v'}, 'it\\'s', \"q\\\"\"] }}",
      "{{ (1, 2) }}{{ () }}{{ (1,) }}{{ {} }}{{ [] }}",
      "{{ {'a': 1, 2: 'b', none: true} }}",
      "{{ ['\\n', '\\x00', 'é', '\\u2028', '\\xa0'] }}",
      "{{ 1.0 }} {{ 100.0 }} {{ 1e15 }} {{ 1e16 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1/3 }} {{ 2/3*3 }}",
      // arithmetic
      "{{ 1 + 2 * 3 - 4 / 2 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 % 3 }} {{ -10 % 3 }} {{ 10 % -3 }} {{ -7 // 2 }}",
      "{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 + 1.0 }} {{ true + 1 }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 3 }} {{ [1] + [2] }}",
      "{{ 'a' ~ 1 ~ 2.0 ~ none ~ true ~ [1] ~ undefined_var }}",
      "{{ n > 5 and n < 10 }} {{ n == 7.0 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1,2] < [1,3] }}",
      "{{ 'ell' in s }} {{ 3 in items }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in items }}",
      "{{ nothing or 'fallback' }} {{ s and 'yes' }} {{ empty or nothing }} {{ not empty }} {{ not not n }}",
      "{{ 'yes' if flag else 'no' }} {{ 'x' if n }} [{{ 'x' if flag }}]",
      // attribute and item access
      "{{ nested.x.y[2].z }} {{ nested['x']['y'][0] }} {{ items[-1] }} {{ items[5] }} {{ d.b }} {{ d['a'] }}",
      "{{ items[1:] }} {{ items[:-1] }} {{ items[::-1] }} {{ items[::2] }} {{ s[2:7] }} {{ uni[1:3] }} {{ uni[-1] }}",
      "{{ items.0 }} {{ d.items is defined }} {{ d.nothere }} {{ nothing.attr }} {{ 'str'.nothere }}",
      "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 5) }} {{ d.keys()|list }} {{ d.values()|list }}",
      // string methods
      "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ '\\n\\nhi\\n'.lstrip('\\n') }}]",
      "{{ s.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a b c'.split(' ', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ '  a  b  '.split(None, 1) }}",
      "{{ 'ßtraße ÿ Ωμέγα Привет ıİ'.upper() }} {{ 'ÀÉÎ ΣΑΣ Ёж'.lower() }} {{ s.upper() }} {{ s.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'they\\'re'.title() }}",
      "{{ s.startswith('  H') }} {{ s.endswith(('x', '  ')) }} {{ s.replace('l', 'L') }} {{ s.replace('l', 'L', 1) }}",
      "{{ s.find('World') }} {{ s.find('zz') }} {{ s.count('l') }} {{ '-'.join(['a', 'b']) }} {{ '12'.isdigit() }} {{ 'a1'.isalnum() }}",
      "{{ '{} and {}'.format('x', 'y') }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ '{:>5}|{:<4}|{:^6}|{:.2f}'.format('r', 'l', 'c', 3.14159) }}",
      "{{ '%s' % 'x' }} {{ '%d items' % 3 }} {{ '%5.1f|%-4s|%03d' % (2.345, 'ab', 7) }} {{ '%(a)s-%(b)s' % {'a': 1, 'b': 2} }} {{ '100%%' % () }}",
      "{{ text.splitlines() }} {{ 'a\\r\\nb'.splitlines() }} {{ 'k=v=w'.partition('=') }}",
      // filters
      "[{{ s|trim }}][{{ 'xxaxx'|trim('x') }}][{{ s|upper }}][{{ s|lower }}][{{ 'hello wORLD-foo(bar'|title }}][{{ 'hello World'|capitalize }}]",
      "{{ items|length }} {{ s|length }} {{ uni|length }} {{ d|length }} {{ items|count }} {{ undefined_var|length }}",
      "{{ items|first }} {{ items|last }} {{ 'abc'|first }} {{ 'abc'|last }} {{ items|join('-') }} {{ users|join(', ', attribute='name') }}",
      "{{ undefined_var|default('dflt') }} {{ empty|default('e') }} {{ empty|default('e', true) }} {{ nothing|d('n', boolean=true) }} {{ n|default(0) }}",
      "{{ s|replace('l', '_') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ items|list }} {{ 'ab'|list }} {{ d|list }} {{ d|items|list }}",
      "{{ users|tojson }} {{ d|tojson(indent=2) }} {{ items|tojson(indent=4) }} {{ 'é\\n\"'|tojson }} {{ [1.0, 1e20, none, true]|tojson }}",
      "{{ nested|tojson(indent='\\t') }} {{ {}|tojson(indent=2) }} {{ []|tojson }} {{ d|tojson(separators=(',', ':')) }} {{ d|tojson(sort_keys=true) }}",
      "{{ n|string }} {{ items|string }} {{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 7|float }}",
      "{{ -3|abs }} {{ (-3)|abs }} {{ 2.567|round }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.1|round(0, 'ceil') }} {{ 5|round }}",
      "{{ '<b>x</b> & \"y\"'|e }} {{ '<b>x</b>'|safe }} {{ '<p>Hi  <b>there</b></p>'|striptags }} {{ 'a b  c'|wordcount }} [{{ 'ab'|center(6) }}]",
      "{{ text|indent }}|{{ text|indent(2, true) }}|{{ text|indent('> ', blank=true) }}|{{ 'one'|indent }}",
      "{{ users|map(attribute='name')|list }} {{ words|map('upper')|list }} {{ users|map(attribute='missing', default='?')|list }}",
      "{{ items|select('odd')|list }} {{ items|reject('odd')|list }} {{ items|select('gt', 1)|list }} {{ [0, 1, '', 'a']|select|list }}",
      "{{ users|selectattr('admin')|map(attribute='name')|list }} {{ users|rejectattr('admin')|list }} {{ users|selectattr('age', 'equalto', 25)|list }}",
      "{{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ words|sort(reverse=true) }} {{ users|sort(attribute='age')|map(attribute='name')|list }}",
      "{{ words|unique|list }} {{ words|unique(case_sensitive=true)|list }} {{ d|dictsort }} {{ d|dictsort(by='value', reverse=true) }}",
      "{{ items|min }} {{ items|max }} {{ words|min }} {{ items|sum }} {{ users|sum(attribute='age') }} {{ items|reverse|list }} {{ 'abc'|reverse }}",
      "{{ items|batch(2)|list }} {{ [1,2,3,4,5]|slice(2)|list }} {{ '%s-%s'|format('a', 'b') }} {{ d|attr('b') }}",
      // tests
      "{{ n is odd }} {{ n is even }} {{ n is divisibleby 7 }} {{ n is divisibleby(2) }} {{ n is number }} {{ f is float }} {{ n is integer }}",
      "{{ s is string }} {{ d is mapping }} {{ items is iterable }} {{ s is iterable }} {{ n is iterable }} {{ items is sequence }} {{ undefined_var is iterable }}",
      "{{ nothing is none }} {{ undefined_var is defined }} {{ undefined_var is undefined }} {{ flag is false }} {{ flag is boolean }} {{ 1 is true }} {{ true is number }}",
      "{{ n is eq 7 }} {{ n is ne(7) }} {{ n is lt 8 }} {{ n is gt 8 }} {{ 2 is in [1, 2] }} {{ 'abc' is lower }} {{ nothing is sameas none }} {{ n is not none }}",
      "{{ range is callable }} {{ 'upper' is filter }} {{ 'odd' is test }}",
      // statements
      "{% if n > 10 %}big{% elif n > 5 %}mid{% else %}small{% endif %}",
      "{% for u in users %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.cycle('a', 'b') }} {% endfor %}",
      "{% for x in items %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }} {% endfor %}",
      "{% for x in items %}{% for y in 'ab' %}{{ loop.depth }}{{ x }}{{ y }}{% endfor %}{% endfor %}",
      "{% for x in range(5) %}{% if x is odd %}{% continue %}{% endif %}{{ x }}{% endfor %}|{% for x in range(2, 11, 3) %}{{ x }}{% endfor %}|{% for x in range(5, 0, -2) %}{{ x }}{% endfor %}",
      "{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %} {% for (a, b) in [[5, 6]] %}{{ a }}{{ b }}{% endfor %} {% for c in 'hé' %}[{{ c }}]{% endfor %}",
      "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = 1, 2 %}{{ t }}",
      "{% set x %}block {{ n }}{% endset %}[{{ x }}] {% set y | upper %}shout{% endset %}{{ y }}",
      "{% set ns = namespace(count=0, items=[]) %}{% for i in items %}{% set ns.count = ns.count + i %}{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.count }} {{ ns.items }}",
      "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Al', greeting='Hi') }} {{ greet(greeting='Yo', name='Z') }}",
      "{% macro m(a) %}{{ a }}|{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k='v') }}",
      "{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inner {{ n }}{% endcall %}",
      "{% macro rec(k) %}{{ k }}{% if k > 0 %}{{ rec(k - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}",
      "{% filter upper %}shout {{ s|trim }}{% endfilter %}",
      "{% with a = 5, b = 'x' %}{{ a }}{{ b }}{% endwith %}{{ a }}",
      "{% generation %}gen {{ n }}{% endgeneration %}",
      "{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}",
      "{% for i in [1] %}{% set inner = 5 %}{% endfor %}[{{ inner }}]",
      "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }} {% set j = joiner('/') %}{% for x in items %}{{ j() }}{{ x }}{% endfor %}",
      // whitespace control
      "a\n  {% if true %}\n    b\n  {% endif %}\nc",
      "a\n  {%- if true %}\n    b\n  {%- endif %}\nc",
      "a\n  {% if true -%}\n    b\n  {% endif -%}\nc",
      "a\n  {%+ if true %}\n    b\n  {% endif +%}\nc",
      "  {{ n }}  \n  {{- n -}}  \n {# c #}\n  {#- c2 -#}  x\n",
      "{% for i in items %}\n  - {{ i }}\n{% endfor %}\n",
      "{% raw %}  {{ raw }} {% if %}\n{% endraw %}\n  {%- raw -%}  x  {%- endraw %}",
      "text\n\n",
      "a {{- ' b ' -}} c {{+ 'd' }} e",
      "{%- if true -%}\n\n  x  \n\n{%- endif -%}",
      "{# only a comment #}",
      "  \t{% if true %}tab-indented{% endif %}",
      "x{% if true %}\r\ny{% endif %}\r\nz",
      // errors (both must fail)
      "{{ undefined_var.attr }}",
      "{{ undefined_var['k'] }}",
      "{{ undefined_var + 1 }}",
      "{{ 'a' + 1 }}",
      "{{ 1 / 0 }}",
      "{{ items.append(4) }}",
      "{{ d.update({}) }}",
      "{{ undefined_var|tojson }}",
      "{{ raise_exception('boom') }}",
      "{{ range(1000000) }}",
      "{% for a, b in [1, 2] %}{% endfor %}",
      "{{ 'x' < 1 }}",
      "{{ nothing + 1 }}",
      "{{ n() }}",
      "{% if %}{% endif %}",
      "{% for %}",
      "{{ 1 + }}",
      "{% endif %}",
      "{{ s|nosuchfilter }}",
      "{{ s is nosuchtest }}",
      "{% if true %}unclosed",
      "{{ 'unterminated }}",
  };
  std::vector<llmesh::test::ReferenceCase> cases;
  ChatInputs in;
  in.extra = vars;
  for (auto& s : snippets) cases.push_back({s, llmesh::test::reference_vars(in)});
  auto ref = llmesh::test::render_with_jinja2(cases);
  if (!ref) GTEST_SKIP() << "python3 with jinja2 is not available";
  ASSERT_EQ(ref->size(), snippets.size());
  int mismatches = 0;
  for (size_t i = 0; i < snippets.size(); ++i) {
    bool threw = false;
    std::string got;
    try {
      got = llmesh::test::render_or_error(ChatTemplate::parse(snippets[i], "snippet"), in, threw);
    } catch (const TemplateError& e) {
      threw = true;
      got = e.what();
    }
    const auto& want = (*ref)[i];
    if (want.ok != !threw || (want.ok && got != want.output)) {
      ++mismatches;
      ADD_FAILURE() << "snippet: " << snippets[i] << "\n  jinja2: " << (want.ok ? "" : "(error) ") << want.output
                    << "\n  llmesh: " << got;
    }
  }
  EXPECT_EQ(mismatches, 0);
}
