// Flat open-addressing hash tables for the tokenizer's two big lookups, built once at load:
// token text -> id (151k entries for Qwen) and merge pair -> (rank, result). Node-based
// std::unordered_map spends most of the load time in allocation and cache misses.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmesh {

inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then a final mix
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 32);
}

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Text -> id over a table of strings the caller owns (and keeps in place).
class TokenIndex {
 public:
  void build(const std::vector<std::string>& texts) {
    texts_ = &texts;
    size_t cap = 16;
    while (cap < texts.size() * 2) cap <<= 1;
    mask_ = cap - 1;
    slots_.assign(cap, Slot{});
    for (size_t i = 0; i < texts.size(); ++i) {
      const uint64_t h = hash_bytes(texts[i]);
      for (size_t k = h & mask_;; k = (k + 1) & mask_) {
        Slot& s = slots_[k];
        if (s.id < 0) {
          s = {static_cast<uint32_t>(h), static_cast<int32_t>(i)};
          break;
        }
        if (s.hash == static_cast<uint32_t>(h) && texts[static_cast<size_t>(s.id)] == texts[i]) {
          break;  // duplicate text: the first id wins
        }
      }
    }
  }
  int32_t find(std::string_view text) const {
    if (slots_.empty()) return -1;
    const uint64_t h = hash_bytes(text);
    for (size_t k = h & mask_;; k = (k + 1) & mask_) {
      const Slot& s = slots_[k];
      if (s.id < 0) return -1;
      if (s.hash == static_cast<uint32_t>(h) && (*texts_)[static_cast<size_t>(s.id)] == text) return s.id;
    }
  }

 private:
  struct Slot {
    uint32_t hash = 0;
    int32_t id = -1;
  };
  const std::vector<std::string>* texts_ = nullptr;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// uint64 key -> two int32 values; keys must not be ~0.
class PairIndex {
 public:
  struct Value {
    int32_t a = -1, b = -1;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    mask_ = cap - 1;
    slots_.assign(cap, Slot{});
  }
  // Keeps the first value for a key.
  void insert(uint64_t key, Value v) {
    for (size_t k = mix64(key) & mask_;; k = (k + 1) & mask_) {
      Slot& s = slots_[k];
      if (s.key == kEmpty) {
        s = {key, v};
        return;
      }
      if (s.key == key) return;
    }
  }
  const Value* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (size_t k = mix64(key) & mask_;; k = (k + 1) & mask_) {
      const Slot& s = slots_[k];
      if (s.key == key) return &s.value;
      if (s.key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key = kEmpty;
    Value value;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

}  // namespace llmesh
