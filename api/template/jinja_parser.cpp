#include "template/jinja_parser.h"

#include <algorithm>
#include <initializer_list>

#include "template/jinja_lexer.h"

namespace llmesh::api::jinja {

namespace {

// Nesting deeper than this in a template from a model file is hostile, not useful.
constexpr int kMaxParseDepth = 200;
// Left-deep chains (`a + b + c ...`, `x|f|f|f`) do not recurse in the parser but do in the
// evaluator, so expression trees are bounded by height too.
constexpr int kMaxExprHeight = 400;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  std::unique_ptr<Program> run() {
    auto prog = std::make_unique<Program>();
    prog->body = parse_body({});
    return prog;
  }

 private:
  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxParseDepth) p.fail("template nesting too deep");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t n = 1) const { return toks_[std::min(pos_ + n, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }

  [[noreturn]] void fail(const std::string& msg) const { throw JinjaError(msg, cur().line, cur().column); }

  // Computes the height of `e` from its children and refuses trees that are too tall.
  ExprPtr checked(ExprPtr e) const {
    int h = 0;
    for (auto& c : e->children)
      if (c) h = std::max(h, c->depth);
    for (auto& kv : e->kwargs) h = std::max(h, kv.second->depth);
    if (e->star_args) h = std::max(h, e->star_args->depth);
    if (e->star_kwargs) h = std::max(h, e->star_kwargs->depth);
    e->depth = h + 1;
    if (e->depth > kMaxExprHeight) throw JinjaError("expression nesting too deep", e->line, e->column);
    return e;
  }

  bool is_op(const char* op) const { return cur().type == Token::Type::Operator && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Token::Type::Name && cur().text == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    advance();
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', got " + describe(cur()));
  }
  void expect_block_end() {
    if (cur().type != Token::Type::BlockEnd) fail("expected end of statement block, got " + describe(cur()));
    advance();
  }
  std::string expect_name() {
    if (cur().type != Token::Type::Name) fail("expected a name, got " + describe(cur()));
    std::string n = cur().text;
    advance();
    return n;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Token::Type::Eof: return "end of template";
      case Token::Type::BlockEnd: return "end of statement block";
      case Token::Type::VarEnd: return "end of print statement";
      case Token::Type::Name:
      case Token::Type::Operator: return "'" + t.text + "'";
      case Token::Type::String: return "string";
      case Token::Type::Integer:
      case Token::Type::Float: return "number";
      default: return "text";
    }
  }

  template <class T>
  static std::unique_ptr<T> at(const Token& t, typename T::Kind k) {
    auto n = std::make_unique<T>();
    n->kind = k;
    n->line = t.line;
    n->column = t.column;
    return n;
  }

  // ---- statements ----

  Body parse_body(std::initializer_list<const char*> end_names) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case Token::Type::Text: {
          auto n = at<Node>(t, Node::Kind::Text);
          n->text = t.text;
          body.push_back(std::move(n));
          advance();
          break;
        }
        case Token::Type::VarBegin: {
          auto n = at<Node>(t, Node::Kind::Output);
          advance();
          n->expr = parse_tuple(true, {});
          if (cur().type != Token::Type::VarEnd) fail("expected end of print statement, got " + describe(cur()));
          advance();
          body.push_back(std::move(n));
          break;
        }
        case Token::Type::BlockBegin: {
          const Token& name = peek();
          if (name.type == Token::Type::Name)
            for (const char* e : end_names)
              if (name.text == e) {
                advance();  // leave the parser on the end name
                return body;
              }
          advance();
          body.push_back(parse_statement());
          break;
        }
        case Token::Type::Eof: {
          if (end_names.size() != 0) {
            std::string expected;
            for (const char* e : end_names) expected += (expected.empty() ? "'" : " or '") + std::string(e) + "'";
            fail("unexpected end of template, expected " + expected);
          }
          return body;
        }
        default: fail("unexpected " + describe(t));
      }
    }
  }

  NodePtr parse_statement() {
    const Token& t = cur();
    if (t.type != Token::Type::Name) fail("expected a statement name, got " + describe(t));
    std::string kw = t.text;
    if (kw == "if") return parse_if();
    if (kw == "for") return parse_for();
    if (kw == "set") return parse_set();
    if (kw == "macro") return parse_macro();
    if (kw == "call") return parse_call_block();
    if (kw == "filter") return parse_filter_block();
    if (kw == "with") return parse_with();
    if (kw == "generation") {
      // Hugging Face's `{% generation %}` marks assistant text for masks; it renders its body.
      auto n = at<Node>(t, Node::Kind::With);
      advance();
      expect_block_end();
      n->body = parse_body({"endgeneration"});
      advance();
      expect_block_end();
      return n;
    }
    if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0) fail("'" + kw + "' outside of a loop");
      auto n = at<Node>(t, kw == "break" ? Node::Kind::Break : Node::Kind::Continue);
      advance();
      expect_block_end();
      return n;
    }
    fail("unknown or unsupported tag '" + kw + "'");
  }

  NodePtr parse_if() {
    auto n = at<Node>(cur(), Node::Kind::If);
    advance();
    while (true) {
      n->conditions.push_back(parse_tuple(false, {}));
      expect_block_end();
      n->bodies.push_back(parse_body({"elif", "else", "endif"}));
      std::string end = cur().text;
      advance();
      if (end == "elif") continue;
      if (end == "else") {
        expect_block_end();
        n->else_body = parse_body({"endif"});
        advance();
      }
      expect_block_end();
      return n;
    }
  }

  // Names for `for`/`set` targets: `a`, `a, b`, `(a, b)`.
  void parse_targets(Node& n) {
    bool paren = skip_op("(");
    while (true) {
      n.targets.push_back(expect_name());
      if (!skip_op(",")) break;
      n.tuple_target = true;
      if (cur().type != Token::Type::Name) break;
    }
    if (paren) {
      n.tuple_target = true;
      expect_op(")");
    }
  }

  NodePtr parse_for() {
    auto n = at<Node>(cur(), Node::Kind::For);
    advance();
    parse_targets(*n);
    if (!skip_name("in")) fail("expected 'in', got " + describe(cur()));
    n->expr = parse_tuple(false, {"recursive", "if"});
    if (is_name("recursive")) fail("recursive loops are not supported");
    if (skip_name("if")) n->cond = parse_expression(true);
    expect_block_end();
    ++loop_depth_;
    n->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (cur().text == "else") {
      advance();
      expect_block_end();
      n->else_body = parse_body({"endfor"});
    }
    advance();
    expect_block_end();
    return n;
  }

  NodePtr parse_set() {
    const Token& t = cur();
    advance();
    if (cur().type == Token::Type::Name && peek().type == Token::Type::Operator && peek().text == ".") {
      auto n = at<Node>(t, Node::Kind::Set);
      n->targets.push_back(expect_name());
      advance();
      n->attr = expect_name();
      expect_op("=");
      n->expr = parse_tuple(true, {});
      expect_block_end();
      return n;
    }
    auto n = at<Node>(t, Node::Kind::Set);
    parse_targets(*n);
    if (skip_op("=")) {
      n->expr = parse_tuple(true, {});
      expect_block_end();
      return n;
    }
    if (n->tuple_target) fail("a block set takes a single name");
    n->kind = Node::Kind::SetBlock;
    if (is_op("|")) n->filter_chain = parse_filter_chain();
    expect_block_end();
    n->body = parse_body({"endset"});
    advance();
    expect_block_end();
    return n;
  }

  ExprPtr parse_filter_chain() {
    auto input = at<Expr>(cur(), Expr::Kind::Name);
    input->name = "__body__";
    ExprPtr e = std::move(input);
    while (is_op("|")) e = parse_filter(std::move(e));
    return e;
  }

  void parse_params(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (!n.params.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string name = expect_name();
      ExprPtr def;
      if (skip_op("=")) def = parse_expression(true);
      n.params.emplace_back(std::move(name), std::move(def));
    }
    advance();
  }

  NodePtr parse_macro() {
    auto n = at<Node>(cur(), Node::Kind::Macro);
    advance();
    n->text = expect_name();
    parse_params(*n);
    expect_block_end();
    int saved = loop_depth_;
    loop_depth_ = 0;
    n->body = parse_body({"endmacro"});
    loop_depth_ = saved;
    advance();
    if (cur().type == Token::Type::Name) advance();  // {% endmacro name %}
    expect_block_end();
    return n;
  }

  NodePtr parse_call_block() {
    auto n = at<Node>(cur(), Node::Kind::CallBlock);
    advance();
    if (is_op("(")) parse_params(*n);
    n->expr = parse_expression(true);
    if (n->expr->kind != Expr::Kind::Call) fail("expected a call in a call block");
    expect_block_end();
    n->body = parse_body({"endcall"});
    advance();
    expect_block_end();
    return n;
  }

  NodePtr parse_filter_block() {
    auto n = at<Node>(cur(), Node::Kind::FilterBlock);
    advance();
    auto input = at<Expr>(cur(), Expr::Kind::Name);
    input->name = "__body__";
    ExprPtr e = std::move(input);
    e = parse_filter(std::move(e), /*leading_pipe=*/false);
    while (is_op("|")) e = parse_filter(std::move(e));
    n->filter_chain = std::move(e);
    expect_block_end();
    n->body = parse_body({"endfilter"});
    advance();
    expect_block_end();
    return n;
  }

  NodePtr parse_with() {
    auto n = at<Node>(cur(), Node::Kind::With);
    advance();
    while (cur().type != Token::Type::BlockEnd) {
      if (!n->assigns.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      n->assigns.emplace_back(std::move(name), parse_expression(true));
    }
    expect_block_end();
    n->body = parse_body({"endwith"});
    advance();
    expect_block_end();
    return n;
  }

  // ---- expressions ----

  bool tuple_end(std::initializer_list<const char*> extra) const {
    auto t = cur().type;
    if (t == Token::Type::VarEnd || t == Token::Type::BlockEnd || t == Token::Type::Eof) return true;
    if (is_op(")")) return true;
    if (t == Token::Type::Name)
      for (const char* e : extra)
        if (cur().text == e) return true;
    return false;
  }

  ExprPtr parse_tuple(bool with_condexpr, std::initializer_list<const char*> extra, bool explicit_parens = false) {
    const Token& start = cur();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail("expected an expression, got " + describe(cur()));
    }
    auto e = at<Expr>(start, Expr::Kind::Tuple);
    e->children = std::move(items);
    return checked(std::move(e));
  }

  ExprPtr parse_expression(bool with_condexpr = true) {
    DepthGuard guard(*this);
    if (!with_condexpr) return parse_or();
    ExprPtr e = parse_or();
    while (is_name("if")) {
      auto c = at<Expr>(cur(), Expr::Kind::Conditional);
      advance();
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (skip_name("else")) other = parse_expression(true);
      c->children.push_back(std::move(e));
      c->children.push_back(std::move(cond));
      c->children.push_back(std::move(other));
      e = checked(std::move(c));
    }
    return e;
  }

  ExprPtr binary(const Token& t, const std::string& op, ExprPtr l, ExprPtr r) {
    auto e = at<Expr>(t, Expr::Kind::Binary);
    e->name = op;
    e->children.push_back(std::move(l));
    e->children.push_back(std::move(r));
    return checked(std::move(e));
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      const Token& t = cur();
      advance();
      e = binary(t, "or", std::move(e), parse_and());
    }
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      const Token& t = cur();
      advance();
      e = binary(t, "and", std::move(e), parse_not());
    }
    return e;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto e = at<Expr>(cur(), Expr::Kind::Not);
      advance();
      e->children.push_back(parse_not());
      return checked(std::move(e));
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& start = cur();
    ExprPtr first = parse_math1();
    std::unique_ptr<Expr> cmp;
    while (true) {
      std::string op;
      if (cur().type == Token::Type::Operator &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == Token::Type::Name && peek().text == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = at<Expr>(start, Expr::Kind::Compare);
        cmp->children.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->children.push_back(parse_math1());
    }
    return cmp ? checked(std::move(cmp)) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = cur();
      std::string op = t.text;
      advance();
      e = binary(t, op, std::move(e), parse_concat());
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      const Token& t = cur();
      advance();
      e = binary(t, "~", std::move(e), parse_math2());
    }
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = cur();
      std::string op = t.text;
      advance();
      e = binary(t, op, std::move(e), parse_pow());
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      const Token& t = cur();
      advance();
      e = binary(t, "**", std::move(e), parse_unary(true));
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = at<Expr>(cur(), is_op("-") ? Expr::Kind::Neg : Expr::Kind::Pos);
      advance();
      e->children.push_back(parse_unary(false));
      e = checked(std::move(e));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr literal(const Token& t, Value v) {
    auto e = at<Expr>(t, Expr::Kind::Literal);
    e->value = std::move(v);
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case Token::Type::Name: {
        advance();
        if (t.text == "true" || t.text == "True") return literal(t, Value::boolean(true));
        if (t.text == "false" || t.text == "False") return literal(t, Value::boolean(false));
        if (t.text == "none" || t.text == "None") return literal(t, Value::none());
        auto e = at<Expr>(t, Expr::Kind::Name);
        e->name = t.text;
        return e;
      }
      case Token::Type::String: {
        std::string s;
        const Token& first = t;
        while (cur().type == Token::Type::String) {
          s += cur().text;
          advance();
        }
        return literal(first, Value::string(std::move(s)));
      }
      case Token::Type::Integer: advance(); return literal(t, Value::integer(t.int_value));
      case Token::Type::Float: advance(); return literal(t, Value::floating(t.float_value));
      case Token::Type::Operator:
        if (t.text == "(") {
          advance();
          ExprPtr e = parse_tuple(true, {}, true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          auto e = at<Expr>(t, Expr::Kind::List);
          advance();
          while (!is_op("]")) {
            if (!e->children.empty()) expect_op(",");
            if (is_op("]")) break;
            e->children.push_back(parse_expression(true));
          }
          advance();
          return checked(std::move(e));
        }
        if (t.text == "{") {
          auto e = at<Expr>(t, Expr::Kind::Dict);
          advance();
          while (!is_op("}")) {
            if (!e->children.empty()) expect_op(",");
            if (is_op("}")) break;
            e->children.push_back(parse_expression(true));
            expect_op(":");
            e->children.push_back(parse_expression(true));
          }
          advance();
          return checked(std::move(e));
        }
        break;
      default: break;
    }
    fail("unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const Token& t = cur();
      if (is_op(".")) {
        advance();
        if (cur().type == Token::Type::Name) {
          auto g = at<Expr>(t, Expr::Kind::GetAttr);
          g->name = cur().text;
          advance();
          g->children.push_back(std::move(e));
          e = checked(std::move(g));
        } else if (cur().type == Token::Type::Integer) {
          auto g = at<Expr>(t, Expr::Kind::GetItem);
          g->children.push_back(std::move(e));
          g->children.push_back(literal(cur(), Value::integer(cur().int_value)));
          advance();
          e = checked(std::move(g));
        } else {
          fail("expected name or number after '.'");
        }
      } else if (is_op("[")) {
        advance();
        auto g = at<Expr>(t, Expr::Kind::GetItem);
        g->children.push_back(std::move(e));
        g->children.push_back(parse_subscript());
        expect_op("]");
        e = checked(std::move(g));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript() {
    const Token& t = cur();
    ExprPtr start, stop, step;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (!is_op(":")) return start;
    }
    advance();  // ':'
    if (!is_op("]") && !is_op(":")) stop = parse_expression(true);
    if (skip_op(":"))
      if (!is_op("]")) step = parse_expression(true);
    auto s = at<Expr>(t, Expr::Kind::Slice);
    s->children.push_back(std::move(start));
    s->children.push_back(std::move(stop));
    s->children.push_back(std::move(step));
    return checked(std::move(s));
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      first = false;
      if (skip_op("**")) {
        e.star_kwargs = parse_expression(true);
      } else if (skip_op("*")) {
        e.star_args = parse_expression(true);
      } else if (cur().type == Token::Type::Name && peek().type == Token::Type::Operator && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        e.children.push_back(parse_expression(true));
      }
    }
    advance();
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = at<Expr>(cur(), Expr::Kind::Call);
    c->line = callee->line;  // errors point at what is called, not at '('
    c->column = callee->column;
    c->children.push_back(std::move(callee));
    parse_call_args(*c);
    return checked(std::move(c));
  }

  std::string dotted_name() {
    std::string n = expect_name();
    while (is_op(".") && peek().type == Token::Type::Name) {
      advance();
      n += "." + expect_name();
    }
    return n;
  }

  ExprPtr parse_filter(ExprPtr input, bool leading_pipe = true) {
    const Token& t = cur();
    if (leading_pipe) expect_op("|");
    auto f = at<Expr>(t, Expr::Kind::Filter);
    const Token& name_tok = cur();
    f->name = dotted_name();
    f->builtin = find_filter(f->name);
    if (!f->builtin) throw JinjaError("no filter named '" + f->name + "'", name_tok.line, name_tok.column);
    f->children.push_back(std::move(input));
    if (is_op("(")) parse_call_args(*f);
    return checked(std::move(f));
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        const Token& t = cur();
        advance();
        auto test = at<Expr>(t, Expr::Kind::Test);
        test->negated = skip_name("not");
        const Token& name_tok = cur();
        test->name = dotted_name();
        test->builtin = find_test(test->name);
        if (!test->builtin) throw JinjaError("no test named '" + test->name + "'", name_tok.line, name_tok.column);
        test->children.push_back(std::move(e));
        auto ty = cur().type;
        if (is_op("(")) {
          parse_call_args(*test);
        } else if ((ty == Token::Type::Name || ty == Token::Type::String || ty == Token::Type::Integer ||
                    ty == Token::Type::Float || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) fail("you cannot chain multiple tests with 'is'");
          ExprPtr arg = parse_postfix(parse_primary());
          test->children.push_back(std::move(arg));
        }
        e = checked(std::move(test));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }
};

}  // namespace

std::unique_ptr<Program> parse_template(const std::string& source) {
  return Parser(tokenize(source)).run();
}

}  // namespace llmesh::api::jinja
