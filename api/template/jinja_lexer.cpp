#include "template/jinja_lexer.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "template/jinja_value.h"

namespace llmesh::api::jinja {

namespace {

// Python's str.rstrip() on UTF-8 text: drops trailing Unicode whitespace.
size_t rstrip_length(const std::string& s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) --start;
    auto cps = utf8_decode(std::string_view(s).substr(start, end - start));
    if (cps.size() != 1 || !is_py_space(cps[0])) break;
    end = start;
  }
  return end;
}

// Length of the Unicode whitespace run starting at `pos` (the `\s*` after `-%}`).
size_t whitespace_run(const std::string& s, size_t pos) {
  size_t i = pos;
  while (i < s.size()) {
    unsigned char c = s[i];
    if (c < 0x80) {
      if (!is_py_space(c)) break;
      ++i;
      continue;
    }
    size_t len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    auto cps = utf8_decode(std::string_view(s).substr(i, len));
    if (cps.size() != 1 || !is_py_space(cps[0])) break;
    i += len;
  }
  return i - pos;
}

bool all_space(const std::string& s, size_t from) {
  if (from >= s.size()) return false;  // jinja2 matches `\s+`: nothing to strip
  return whitespace_run(s, from) == s.size() - from;
}

class Lexer {
 public:
  Lexer(const std::string& src, const LexOptions& opt) : src_(src), opt_(opt) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t open = find_open(pos);
      if (open == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      char kind = src_[open + 1];  // '{', '%' or '#'
      char sign = open + 2 < src_.size() ? src_[open + 2] : 0;
      if (sign != '-' && sign != '+') sign = 0;
      std::string text = src_.substr(pos, open - pos);
      size_t raw_end = 0;
      bool is_raw = kind == '%' && match_raw_begin(open, raw_end);
      // Whitespace control on the text before the tag.
      if (sign == '-') {
        text.resize(rstrip_length(text));
      } else if (sign != '+' && opt_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && all_space(text, l_pos)) text.resize(l_pos);
      }
      emit_text(text, pos);
      size_t after = open + 2 + (sign ? 1 : 0);
      if (is_raw) {
        pos = lex_raw(raw_end, line_starting);
        continue;
      }
      if (kind == '#') {
        pos = lex_comment(open, after, line_starting);
        continue;
      }
      push(kind == '{' ? Token::Type::VarBegin : Token::Type::BlockBegin, "", open);
      pos = lex_tag(after, kind == '{', line_starting);
    }
    Token eof{Token::Type::Eof, "", 0, 0, 0, 0};
    locate(eof, src_.size());
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  const std::string& src_;
  LexOptions opt_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;

  void locate(Token& t, size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t idx = size_t(it - line_starts_.begin()) - 1;
    t.line = int(idx + 1);
    t.column = int(offset - line_starts_[idx] + 1);
  }

  [[noreturn]] void fail(const std::string& msg, size_t offset) const {
    Token t;
    locate(t, offset);
    throw JinjaError(msg, t.line, t.column);
  }

  void push(Token::Type type, std::string text, size_t offset) {
    Token t{type, std::move(text), 0, 0, 0, 0};
    locate(t, offset);
    tokens_.push_back(std::move(t));
  }

  void emit_text(const std::string& text, size_t offset) {
    if (!text.empty()) push(Token::Type::Text, text, offset);
  }

  size_t find_open(size_t pos) const {
    while (true) {
      size_t p = src_.find('{', pos);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      pos = p + 1;
    }
  }

  size_t skip_ws(size_t p) const {
    while (p < src_.size() && (src_[p] == ' ' || src_[p] == '\t' || src_[p] == '\n' || src_[p] == '\r' ||
                               src_[p] == '\f' || src_[p] == '\v'))
      ++p;
    return p;
  }

  // `{%[-+]? raw [-]?%}`: sets `end` just past the tag (and its `-` whitespace strip).
  bool match_raw_begin(size_t open, size_t& end) const {
    size_t p = open + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    p = skip_ws(p);
    if (src_.compare(p, 3, "raw") != 0) return false;
    p = skip_ws(p + 3);
    if (src_.compare(p, 3, "-%}") == 0) {
      end = p + 3;
      end += whitespace_run(src_, end);
      return true;
    }
    if (src_.compare(p, 2, "%}") == 0) {
      end = p + 2;
      return true;
    }
    return false;
  }

  size_t lex_raw(size_t body, bool& line_starting) {
    size_t p = body;
    while (true) {
      size_t open = src_.find("{%", p);
      if (open == std::string::npos) fail("missing end of raw directive", body);
      size_t q = open + 2;
      char sign = 0;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) sign = src_[q++];
      q = skip_ws(q);
      if (src_.compare(q, 6, "endraw") != 0) {
        p = open + 2;
        continue;
      }
      q = skip_ws(q + 6);
      std::string text = src_.substr(body, open - body);
      if (sign == '-') {
        text.resize(rstrip_length(text));
      } else if (sign != '+' && opt_.lstrip_blocks) {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && all_space(text, l_pos)) text.resize(l_pos);
      }
      emit_text(text, body);
      size_t end = close_block(q, line_starting);
      if (end == std::string::npos) fail("missing end of raw directive", open);
      return end;
    }
  }

  // At a block end (`+%}`, `-%}` + whitespace, `%}` + one newline); npos when not there.
  size_t close_block(size_t p, bool& line_starting) const {
    size_t end;
    if (src_.compare(p, 3, "+%}") == 0) {
      end = p + 3;
    } else if (src_.compare(p, 3, "-%}") == 0) {
      end = p + 3 + whitespace_run(src_, p + 3);
    } else if (src_.compare(p, 2, "%}") == 0) {
      end = p + 2;
      if (opt_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
    } else {
      return std::string::npos;
    }
    line_starting = src_[end - 1] == '\n';
    return end;
  }

  size_t lex_comment(size_t open, size_t body, bool& line_starting) {
    size_t close = src_.find("#}", body);
    if (close == std::string::npos) fail("missing end of comment tag", open);
    size_t end;
    if (close > body && src_[close - 1] == '-') {
      end = close + 2 + whitespace_run(src_, close + 2);
    } else if (close > body && src_[close - 1] == '+') {
      end = close + 2;
    } else {
      end = close + 2;
      if (opt_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
    }
    line_starting = src_[end - 1] == '\n';
    return end;
  }

  size_t lex_tag(size_t p, bool variable, bool& line_starting) {
    std::vector<char> balance;
    size_t tag_start = p;
    while (true) {
      p = skip_ws(p);
      if (p >= src_.size()) fail(variable ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'", tag_start);
      if (balance.empty()) {
        if (variable) {
          if (src_.compare(p, 3, "-}}") == 0) {
            push(Token::Type::VarEnd, "", p);
            size_t end = p + 3 + whitespace_run(src_, p + 3);
            line_starting = src_[end - 1] == '\n';
            return end;
          }
          if (src_.compare(p, 2, "}}") == 0) {
            push(Token::Type::VarEnd, "", p);
            line_starting = false;
            return p + 2;
          }
        } else {
          size_t end = close_block(p, line_starting);
          if (end != std::string::npos) {
            push(Token::Type::BlockEnd, "", p);
            return end;
          }
        }
      }
      char c = src_[p];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = p;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        push(Token::Type::Name, src_.substr(p, e - p), p);
        p = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        p = lex_number(p);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "/", "*", "%", "~", "[", "]", "(",
                                    ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";"};
        const char* found = nullptr;
        for (const char* op : ops)
          if (src_.compare(p, std::strlen(op), op) == 0) {
            found = op;
            break;
          }
        if (!found) fail(std::string("unexpected char '") + c + "'", p);
        std::string op = found;
        if (op == "(" || op == "[" || op == "{") {
          balance.push_back(op[0]);
        } else if (op == ")" || op == "]" || op == "}") {
          char want = op == ")" ? '(' : op == "]" ? '[' : '{';
          if (balance.empty() || balance.back() != want) fail("unexpected '" + op + "'", p);
          balance.pop_back();
        }
        push(Token::Type::Operator, op, p);
        p += op.size();
      }
    }
  }

  size_t lex_number(size_t p) {
    size_t start = p;
    auto digits = [&](size_t& q) {
      size_t s = q;
      while (q < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[q])) ||
                                 (src_[q] == '_' && q > s && q + 1 < src_.size() &&
                                  std::isdigit(static_cast<unsigned char>(src_[q + 1])))))
        ++q;
      return q > s;
    };
    digits(p);
    bool is_float = false;
    if (p + 1 < src_.size() && src_[p] == '.' && std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
      ++p;
      digits(p);
      is_float = true;
    }
    if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        digits(q);
        p = q;
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = start; i < p; ++i)
      if (src_[i] != '_') text += src_[i];
    Token t{is_float ? Token::Type::Float : Token::Type::Integer, text, 0, 0, 0, 0};
    locate(t, start);
    if (is_float) {
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      t.int_value = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) fail("integer literal too large", start);
    }
    tokens_.push_back(std::move(t));
    return p;
  }

  // Python "unicode-escape" decoding of a string literal body; unknown escapes stay verbatim.
  size_t lex_string(size_t p) {
    char quote = src_[p];
    size_t start = p;
    ++p;
    std::string out;
    while (true) {
      if (p >= src_.size()) fail("unterminated string literal", start);
      char c = src_[p];
      if (c == quote) {
        ++p;
        break;
      }
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) fail("unterminated string literal", start);
      char e = src_[p + 1];
      p += 2;
      auto hex = [&](int n) -> uint32_t {
        uint32_t v = 0;
        for (int i = 0; i < n; ++i) {
          if (p >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[p])))
            fail("truncated escape in string literal", start);
          char h = src_[p++];
          v = v * 16 + uint32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        return v;
      };
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;  // line continuation
        case 'x': utf8_append(out, hex(2)); break;
        case 'u': utf8_append(out, hex(4)); break;
        case 'U': {
          uint32_t cp = hex(8);
          if (cp > 0x10ffff) fail("illegal Unicode character in string literal", start);
          utf8_append(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = uint32_t(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i) v = v * 8 + uint32_t(src_[p++] - '0');
            utf8_append(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    Token t{Token::Type::String, std::move(out), 0, 0, 0, 0};
    locate(t, start);
    tokens_.push_back(std::move(t));
    return p;
  }
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const LexOptions& options) {
  // jinja2 normalises newlines to "\n" and drops one trailing newline.
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!options.keep_trailing_newline && !src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(src, options).run();
}

}  // namespace llmesh::api::jinja
