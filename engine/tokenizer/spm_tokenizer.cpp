// SentencePiece-style tokenizer (tokenizer.ggml.model == "llama"): the text, with spaces
// written as U+2581 and a leading one added, starts as single characters; the adjacent pair
// whose concatenation is a vocabulary piece with the highest score merges, again and again.
// Characters no piece covers fall back to <0xNN> byte tokens.
#include <queue>

#include "tokenizer/utf8.h"
#include "tokenizer/vocab_tokenizer.h"

namespace llmesh {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

class SpmTokenizer final : public VocabTokenizer {
 public:
  explicit SpmTokenizer(const GgufFile& f) {
    vocab_.load(f, /*spm=*/true);
    add_space_prefix_ = f.opt_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    byte_value_.assign(static_cast<size_t>(vocab_.size()), -1);
    for (int b = 0; b < 256; ++b) {
      const int32_t id = vocab_.byte_token[static_cast<size_t>(b)];
      if (id >= 0) byte_value_[static_cast<size_t>(id)] = static_cast<int16_t>(b);
    }
  }

  std::string token_to_piece(int32_t id, bool special) const override {
    if (!vocab_.valid(id)) return "";
    const std::string& t = vocab_.text[static_cast<size_t>(id)];
    switch (type_of(id)) {
      case TokenType::Byte:
        if (const int16_t b = byte_value_[static_cast<size_t>(id)]; b >= 0) {
          return std::string(1, static_cast<char>(b));
        }
        return special ? t : "";
      case TokenType::Control:
      case TokenType::Unknown:
      case TokenType::Unused:
        return special ? t : "";
      default: {
        std::string out;
        out.reserve(t.size());
        for (size_t i = 0; i < t.size();) {
          if (std::string_view(t).substr(i).starts_with(kSpaceMark)) {
            out += ' ';
            i += kSpaceMark.size();
          } else {
            out += t[i++];
          }
        }
        return out;
      }
    }
  }

 protected:
  bool strips_leading_space() const override { return add_space_prefix_; }

  void encode_plain(std::string_view text, bool after_special,
                    std::vector<int32_t>& out) const override {
    std::string s;
    s.reserve(text.size() * 2 + 3);
    if (add_space_prefix_ && after_special) s += kSpaceMark;
    for (char c : text) {
      if (c == ' ') {
        s += kSpaceMark;
      } else {
        s += c;
      }
    }
    if (s.empty()) return;

    // Symbols: one per UTF-8 character (an invalid byte is a character of its own).
    struct Symbol {
      uint32_t start, len;
      int32_t prev, next;
    };
    std::vector<Symbol> sym;
    sym.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      const uint32_t len = utf8_next(s, i).len;
      const int32_t k = static_cast<int32_t>(sym.size());
      sym.push_back({static_cast<uint32_t>(i), len, k - 1, k + 1});
      i += len;
    }
    sym.back().next = -1;

    struct Bigram {
      float score;
      int32_t left, right;
      uint32_t len;  // bytes of the merged piece, to detect stale entries
    };
    const auto worse = [](const Bigram& a, const Bigram& b) {
      if (a.score != b.score) return a.score < b.score;
      return a.left > b.left;  // equal scores: the leftmost pair first
    };
    std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
    const auto try_pair = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0) return;
      const Symbol& a = sym[static_cast<size_t>(l)];
      const Symbol& b = sym[static_cast<size_t>(r)];
      const int32_t id = mergeable(std::string_view(s).substr(a.start, a.len + b.len));
      if (id < 0) return;
      queue.push({vocab_.score[static_cast<size_t>(id)], l, r, a.len + b.len});
    };
    for (size_t k = 1; k < sym.size(); ++k) try_pair(static_cast<int32_t>(k - 1), static_cast<int32_t>(k));

    while (!queue.empty()) {
      const Bigram bg = queue.top();
      queue.pop();
      Symbol& a = sym[static_cast<size_t>(bg.left)];
      Symbol& b = sym[static_cast<size_t>(bg.right)];
      if (a.len == 0 || b.len == 0 || a.next != bg.right || a.len + b.len != bg.len) continue;
      a.len += b.len;
      b.len = 0;
      a.next = b.next;
      if (b.next >= 0) sym[static_cast<size_t>(b.next)].prev = bg.left;
      try_pair(a.prev, bg.left);
      try_pair(bg.left, a.next);
    }

    for (int32_t k = 0; k >= 0; k = sym[static_cast<size_t>(k)].next) {
      const Symbol& x = sym[static_cast<size_t>(k)];
      const std::string_view piece = std::string_view(s).substr(x.start, x.len);
      const int32_t id = mergeable(piece);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      for (char c : piece) {
        const int32_t b = vocab_.byte_token[static_cast<uint8_t>(c)];
        if (b >= 0) {
          out.push_back(b);
        } else if (vocab_.unk >= 0) {
          out.push_back(vocab_.unk);
          break;  // one <unk> for the whole character
        }
      }
    }
  }

 private:
  // The id of a piece that merging may produce: normal and user-defined pieces only (never
  // control, byte or unused tokens that happen to spell the same text).
  int32_t mergeable(std::string_view piece) const {
    const int32_t id = vocab_.find(piece);
    if (id < 0) return -1;
    const TokenType t = vocab_.type[static_cast<size_t>(id)];
    if (t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Undefined) return id;
    return -1;
  }

  bool add_space_prefix_ = true;
  std::vector<int16_t> byte_value_;  // per token: the byte a <0xNN> token stands for, or -1
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(const GgufFile& f) {
  return std::make_unique<SpmTokenizer>(f);
}

}  // namespace llmesh
