// Byte-level BPE (tokenizer.ggml.model == "gpt2"): the pre-tokenizer named by
// tokenizer.ggml.pre splits text into words; each word's bytes become GPT-2's printable
// stand-in characters, one token each; then the adjacent pair with the lowest merge rank
// (tokenizer.ggml.merges order) merges until no listed pair is left.
#include <array>
#include <cstdio>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab_tokenizer.h"
#include "log/event_log.h"

namespace llmesh {

namespace {

// GPT-2's byte -> code point table: printable Latin-1 bytes stand for themselves, the other
// 68 bytes take U+0100 onwards, in byte order.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> t{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    t[b] = printable ? b : next++;
  }
  return t;
}

class BpeTokenizer final : public VocabTokenizer {
 public:
  explicit BpeTokenizer(const GgufFile& f) {
    vocab_.load(f, /*spm=*/false);
    const std::string pre = f.opt_string("tokenizer.ggml.pre").value_or("default");
    const PreTokenizerChoice choice = pre_tokenizer_for(pre);
    pre_ = choice.kind;
    if (!choice.exact) {
      logs::warn("tokenizer", "pre_tokenizer_inexact",
                 fmt::format("tokenizer.ggml.pre '{}' is not known exactly; using the '{}' pre-tokenizer, which may "
                             "split some text differently",
                             pre, pre_tokenizer_name(pre_)),
                 {{"pre", pre}, {"using", pre_tokenizer_name(pre_)}});
    }
    // Hugging Face's Llama 3 tokenizer takes a word that is already a token as is.
    whole_word_first_ = pre_ == PreTokenizerKind::Llama3;

    const auto cps = byte_to_codepoint();
    codepoint_byte_.fill(-1);
    for (size_t b = 0; b < 256; ++b) {
      std::string s;
      utf8_append(s, cps[b]);
      byte_char_[b] = s;
      byte_id_[b] = vocab_.find(s);
      if (cps[b] < codepoint_byte_.size()) codepoint_byte_[cps[b]] = static_cast<int16_t>(b);
    }
    load_merges(f);
  }

  std::string token_to_piece(int32_t id, bool special) const override {
    if (!vocab_.valid(id)) return "";
    const std::string& t = vocab_.text[static_cast<size_t>(id)];
    switch (type_of(id)) {
      case TokenType::Control:
      case TokenType::Unknown:
      case TokenType::Unused:
        return special ? t : "";
      case TokenType::UserDefined:
        return t;  // added tokens are stored as plain text
      default: {
        // Undo the byte-to-character mapping; a character outside it stays as written.
        std::string out;
        out.reserve(t.size());
        for (size_t i = 0; i < t.size();) {
          const Utf8Char c = utf8_next(t, i);
          if (c.valid && c.cp < codepoint_byte_.size() && codepoint_byte_[c.cp] >= 0) {
            out += static_cast<char>(codepoint_byte_[c.cp]);
          } else {
            out.append(t, i, c.len);
          }
          i += c.len;
        }
        return out;
      }
    }
  }

 protected:
  void encode_plain(std::string_view text, bool /*after_special*/,
                    std::vector<int32_t>& out) const override {
    std::vector<std::pair<uint32_t, uint32_t>> words;
    pre_tokenize(pre_, text, words);
    for (const auto& [b, e] : words) encode_word(text.substr(b, e - b), out);
  }

 private:
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void load_merges(const GgufFile& f) {
    const GgufValue* m = f.find("tokenizer.ggml.merges");
    if (!m) throw std::runtime_error(fmt::format("{}: tokenizer: missing 'tokenizer.ggml.merges'", f.path()));
    if (m->type != GgufType::ARRAY || m->elem != GgufType::STRING) {
      throw std::runtime_error(
          fmt::format("{}: tokenizer: 'tokenizer.ggml.merges' must be an array of strings", f.path()));
    }
    merges_.reserve(m->strings.size());
    std::string joined;
    for (size_t r = 0; r < m->strings.size(); ++r) {
      const std::string_view line = m->strings[r];
      const size_t sp = line.find(' ', 1);  // a lone leading space is never a merge side
      const auto bad = [&](const char* why) {
        throw std::runtime_error(fmt::format("{}: tokenizer: 'tokenizer.ggml.merges'[{}] = \"{}\": {}",
                                             f.path(), r, line, why));
      };
      if (sp == std::string_view::npos || sp + 1 >= line.size()) bad("expected \"left right\"");
      const std::string_view left = line.substr(0, sp), right = line.substr(sp + 1);
      const int32_t a = vocab_.find(left), b = vocab_.find(right);
      if (a < 0 || b < 0) bad("a side is not in the vocabulary");
      joined.assign(left);
      joined.append(right);
      const int32_t c = vocab_.find(joined);
      if (c < 0) bad("the merged token is not in the vocabulary");
      merges_.insert(pair_key(a, b), {static_cast<int32_t>(r), c});
    }
  }

  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    const bool cacheable = word.size() <= 64;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(std::string(word));  // heterogeneous lookup needs C++20 hashers
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids;
    merge_word(word, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (cache_.size() >= kCacheLimit) cache_.clear();
      cache_.emplace(std::string(word), std::move(ids));
    }
  }

  void merge_word(std::string_view word, std::vector<int32_t>& ids) const {
    if (whole_word_first_) {
      std::string mapped;
      for (char c : word) mapped += byte_char_[static_cast<uint8_t>(c)];
      const int32_t id = vocab_.find(mapped);
      if (id >= 0 && type_of(id) != TokenType::Control) {
        ids.push_back(id);
        return;
      }
    }
    // One symbol per byte, linked so merges can drop the right side.
    struct Symbol {
      int32_t id, prev, next;
    };
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    for (char c : word) {
      int32_t id = byte_id_[static_cast<uint8_t>(c)];
      if (id < 0) id = vocab_.unk;
      if (id < 0) continue;  // a vocabulary without this byte and without <unk>: drop it
      const int32_t k = static_cast<int32_t>(sym.size());
      sym.push_back({id, k - 1, k + 1});
    }
    if (sym.empty()) return;
    sym.back().next = -1;

    struct Candidate {
      int32_t rank, left, right;
      int32_t left_id, right_id;  // detect stale entries
    };
    const auto worse = [](const Candidate& a, const Candidate& b) {
      if (a.rank != b.rank) return a.rank > b.rank;
      return a.left > b.left;  // equal ranks: the leftmost pair first
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
    const auto try_pair = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0) return;
      const int32_t a = sym[static_cast<size_t>(l)].id, b = sym[static_cast<size_t>(r)].id;
      if (const PairIndex::Value* m = merges_.find(pair_key(a, b))) queue.push({m->a, l, r, a, b});
    };
    for (size_t k = 1; k < sym.size(); ++k) try_pair(static_cast<int32_t>(k - 1), static_cast<int32_t>(k));
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& a = sym[static_cast<size_t>(c.left)];
      Symbol& b = sym[static_cast<size_t>(c.right)];
      if (a.id != c.left_id || b.id != c.right_id || a.next != c.right || b.id < 0) continue;
      a.id = merges_.find(pair_key(c.left_id, c.right_id))->b;
      a.next = b.next;
      b.id = -1;
      if (b.next >= 0) sym[static_cast<size_t>(b.next)].prev = c.left;
      try_pair(a.prev, c.left);
      try_pair(c.left, a.next);
    }
    for (int32_t k = 0; k >= 0; k = sym[static_cast<size_t>(k)].next) ids.push_back(sym[static_cast<size_t>(k)].id);
  }

  static constexpr size_t kCacheLimit = 1 << 16;

  PreTokenizerKind pre_ = PreTokenizerKind::Gpt2;
  bool whole_word_first_ = false;
  std::array<std::string, 256> byte_char_;   // byte -> its stand-in character (UTF-8)
  std::array<int32_t, 256> byte_id_{};       // byte -> token of its stand-in character
  std::array<int16_t, 324> codepoint_byte_;  // stand-in code point -> byte, or -1
  PairIndex merges_;  // (left id, right id) -> {rank, merged id}
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // word -> ids
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const GgufFile& f) {
  return std::make_unique<BpeTokenizer>(f);
}

}  // namespace llmesh
