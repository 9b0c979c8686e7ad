// Hostile input: thousands of corrupted variants of real and synthetic GGUF files must each
// either parse (and then be safe to use) or throw GgufError. Never a crash, another exception,
// an out-of-bounds read or a huge allocation. scripts/sanitize-test runs these under ASan+UBSan.
//
// GgufHostile.* mass-produce variants; GgufCorrupt.* are hand-made files that must fail with a
// specific message.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "gguf_test_util.h"
#include "test_paths.h"

using namespace llmesh;

namespace {

// ------------------------------------------------------------------ checking one variant

struct Tally {
  uint64_t parsed = 0;
  uint64_t rejected = 0;
  int failures = 0;
  uint64_t total() const { return parsed + rejected; }
};

uint64_t g_sink = 0;  // keeps the touches below from being optimised away

void touch_value(const GgufValue& v) {
  if (v.type == GgufType::STRING) {
    if (!v.s.empty()) g_sink += static_cast<uint8_t>(v.s.front()) + static_cast<uint8_t>(v.s.back());
    return;
  }
  if (v.type != GgufType::ARRAY) return;
  if (v.elem == GgufType::STRING) {
    if (v.strings.size() != v.count) throw std::logic_error("string array size mismatch");
    for (auto s : v.strings)
      if (!s.empty()) g_sink += static_cast<uint8_t>(s.back());
  } else if (v.elem == GgufType::ARRAY) {
    if (v.items.size() != v.count) throw std::logic_error("nested array size mismatch");
    for (const auto& it : v.items) touch_value(it);
  } else if (v.count > 0) {
    g_sink += static_cast<uint64_t>(v.array_number(0) != 0) + v.array_uint(v.count - 1) +
              static_cast<uint64_t>(v.array_int(v.count / 2));
  }
}

// Uses everything a parsed file exposes, the way model loading would.
void exercise(const GgufFile& f) {
  for (const auto& [key, v] : f.metadata()) {
    touch_value(v);
    if (f.find(key) == nullptr) throw std::logic_error("key not indexed");
    try { g_sink += f.opt_uint(key).value_or(0); } catch (const GgufError&) {}
    try { g_sink += static_cast<uint64_t>(f.opt_float(key).value_or(0) != 0); } catch (const GgufError&) {}
    try { g_sink += f.opt_string(key).value_or("").size(); } catch (const GgufError&) {}
    try { g_sink += f.opt_bool(key).value_or(false); } catch (const GgufError&) {}
    try { g_sink += static_cast<uint64_t>(f.get_int(key)); } catch (const GgufError&) {}
  }
  if (f.data_offset() % f.alignment() != 0) throw std::logic_error("data section misaligned");
  for (const auto& t : f.tensors()) {
    if (t.data < f.base() + f.data_offset() || t.nbytes > f.file_size() ||
        t.data + t.nbytes > f.base() + f.file_size())
      throw std::logic_error("tensor data outside the file");
    g_sink += t.data[0] + t.data[t.nbytes - 1];
    g_sink += static_cast<uint64_t>(t.n_elements()) + t.row_bytes() + t.shape_string().size();
    if (f.find_tensor(t.name) != &t) throw std::logic_error("tensor not indexed");
  }
}

// Parses [p, p+n) (callers hand exact-size heap buffers, so ASan sees any over-read).
void check(const uint8_t* p, size_t n, Tally& tally, const std::string& what) {
  try {
    auto f = GgufFile::parse(p, n, "hostile");
    exercise(*f);
    ++tally.parsed;
  } catch (const GgufError& e) {
    ++tally.rejected;
  } catch (const std::exception& e) {
    if (tally.failures++ < 10) ADD_FAILURE() << what << ": non-GgufError exception: " << e.what();
  }
}

void check(const std::vector<uint8_t>& b, Tally& tally, const std::string& what) {
  check(b.data(), b.size(), tally, what);
}

// ------------------------------------------------------------------ variant generators

// Every prefix of the header (and a few of the data section), each in its own exact-size
// buffer. `step` > 1 samples the header for big files.
void truncations(const std::vector<uint8_t>& file, uint64_t header_end, uint64_t step,
                 Tally& tally) {
  std::vector<uint64_t> lengths;
  for (uint64_t n = 0; n <= std::min<uint64_t>(header_end + 64, file.size()); n += step)
    lengths.push_back(n);
  for (uint64_t n = header_end > 64 ? header_end - 64 : 0; n < header_end + 64 && n <= file.size(); ++n)
    lengths.push_back(n);
  for (uint64_t n : {file.size() - 1, file.size() / 2, file.size() - file.size() / 7})
    if (n > header_end) lengths.push_back(n);
  for (uint64_t n : lengths) {
    std::vector<uint8_t> cut(file.begin(), file.begin() + static_cast<ptrdiff_t>(n));
    check(cut, tally, "truncated to " + std::to_string(n));
  }
}

std::vector<uint64_t> hostile_u64(uint64_t orig, uint64_t pos, uint64_t size) {
  uint64_t left = size > pos ? size - pos : 0;
  return {0, 1, 2, 3, 7, orig + 1, orig - 1, orig * 2, orig + 32, orig - 32, 0xff, 1ull << 16,
          (1ull << 20) + 1, 1ull << 31, 1ull << 32, 1ull << 40, (1ull << 40) + 1, 1ull << 62,
          1ull << 63, ~0ull, ~0ull - 7, ~0ull - 31, size, left, left + 1, left / 8, left / 12,
          left / 13, left / 33, 0x0101010101010101ull};
}

std::vector<uint32_t> hostile_u32(uint32_t orig) {
  return {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 24, 30, 31, 33, 39, 40, 255,
          0x7fffffffu, 0x80000000u, 0xffffffffu, orig + 1, orig - 1, orig ^ 0x01000000u};
}

// Sets every header field (counts, lengths, types, dims, offsets, scalar values) to a list of
// hostile values, one at a time, in place, restoring it afterwards. `stride` samples the fields.
void field_mutations(std::vector<uint8_t>& file, const test::GgufLayout& layout, size_t stride,
                     Tally& tally) {
  for (size_t k = 0; k < layout.fields.size(); ++k) {
    const auto& fld = layout.fields[k];
    // Keep every structural field but sample the many string lengths inside big arrays.
    if (stride > 1 && fld.kind == test::GgufField::kStrLen && k % stride != 0) continue;
    uint8_t* p = file.data() + fld.pos;
    uint8_t saved[8];
    std::memcpy(saved, p, static_cast<size_t>(fld.width));
    std::string what = "field " + std::to_string(static_cast<int>(fld.kind)) + " at " +
                       std::to_string(fld.pos);
    if (fld.width == 8) {
      uint64_t orig;
      std::memcpy(&orig, p, 8);
      for (uint64_t v : hostile_u64(orig, fld.pos, file.size())) {
        std::memcpy(p, &v, 8);
        check(file, tally, what + " = " + std::to_string(v));
      }
    } else if (fld.width == 4) {
      uint32_t orig;
      std::memcpy(&orig, p, 4);
      for (uint32_t v : hostile_u32(orig)) {
        std::memcpy(p, &v, 4);
        check(file, tally, what + " = " + std::to_string(v));
      }
    } else {
      for (uint8_t v : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
        std::memset(p, v, static_cast<size_t>(fld.width));
        check(file, tally, what + " bytes " + std::to_string(v));
      }
    }
    std::memcpy(p, saved, static_cast<size_t>(fld.width));
  }
}

// Random byte changes, mostly in the header, restored after each parse.
void random_flips(std::vector<uint8_t>& file, uint64_t header_end, int variants, uint64_t seed,
                  Tally& tally) {
  std::mt19937_64 rng(seed);
  const uint64_t region = std::min<uint64_t>(header_end + 64, file.size());
  for (int v = 0; v < variants; ++v) {
    int n = 1 + static_cast<int>(rng() % 6);
    std::vector<std::pair<uint64_t, uint8_t>> saved;
    for (int k = 0; k < n; ++k) {
      uint64_t pos = (rng() % 16 == 0) ? rng() % file.size() : rng() % region;
      saved.emplace_back(pos, file[pos]);
      switch (rng() % 4) {
        case 0: file[pos] = static_cast<uint8_t>(rng()); break;
        case 1: file[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 2: file[pos] = 0xff; break;
        default: file[pos] = 0; break;
      }
    }
    check(file, tally, "flip variant " + std::to_string(v) + " seed " + std::to_string(seed));
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) file[it->first] = it->second;
  }
}

std::vector<uint8_t> synthetic_bytes(uint32_t alignment) {
  test::ScratchDir dir("hostile-synth");
  std::vector<std::vector<uint8_t>> storage;
  GgufWriter w = test::synthetic_writer(storage, alignment);
  w.write(dir.path("s.gguf"));
  return test::read_bytes(dir.path("s.gguf"));
}

void all_mutations(std::vector<uint8_t> file, uint64_t trunc_step, size_t field_stride,
                   int flips, Tally& tally) {
  test::GgufLayout layout = test::walk_gguf(file);
  {
    // The unmodified file parses.
    Tally clean;
    check(file, clean, "original");
    ASSERT_EQ(clean.parsed, 1u);
  }
  truncations(file, layout.header_end, trunc_step, tally);
  field_mutations(file, layout, field_stride, tally);
  random_flips(file, layout.header_end, flips, file.size(), tally);
  // The same mutations of the v2 form of the file (identical layout).
  file[4] = 2;
  field_mutations(file, layout, field_stride * 8, tally);
  random_flips(file, layout.header_end, flips / 4, file.size() + 2, tally);
}

// ------------------------------------------------------------------ mass tests

TEST(GgufHostile, SyntheticFiles) {
  Tally tally;
  for (uint32_t align : {32u, 64u, 1u}) all_mutations(synthetic_bytes(align), 1, 1, 4000, tally);
  RecordProperty("variants", static_cast<int>(tally.total()));
  std::printf("synthetic: %llu variants, %llu parsed, %llu rejected\n",
              (unsigned long long)tally.total(), (unsigned long long)tally.parsed,
              (unsigned long long)tally.rejected);
  EXPECT_GT(tally.total(), 20000u);
  EXPECT_GT(tally.parsed, 0u);
  EXPECT_GT(tally.rejected, 0u);
}

TEST(GgufHostile, RealModels) {
  struct Case { const char* name; uint64_t trunc_step; size_t field_stride; int flips; };
  const Case cases[] = {
      {"stories260K-f32.gguf", 1, 1, 3000},
      {"stories260K-q4_0.gguf", 17, 16, 1000},
      {"stories260K-moe4x2-f32.gguf", 31, 32, 500},
      {"llama-2-tiny-random.gguf", 2003, 1024, 150},
  };
  Tally tally;
  for (const auto& c : cases) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t before = tally.total();
    std::string path = test::model_path(c.name);
    all_mutations(test::read_bytes(path), c.trunc_step, c.field_stride, c.flips, tally);
    std::printf("  %s: %llu variants in %.2f s\n", c.name,
                (unsigned long long)(tally.total() - before),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("real models: %llu variants, %llu parsed, %llu rejected\n",
              (unsigned long long)tally.total(), (unsigned long long)tally.parsed,
              (unsigned long long)tally.rejected);
  EXPECT_GT(tally.total(), 20000u);
  EXPECT_GT(tally.rejected, 0u);
}

TEST(GgufHostile, TruncatedFilesOnDisk) {
  // The mmap path: truncated copies of a real model opened by path.
  auto file = test::read_bytes(test::model_path("stories260K-q8_0.gguf"));
  test::ScratchDir dir("hostile-disk");
  std::string path = dir.path("t.gguf");
  Tally tally;
  for (uint64_t n : {0ull, 1ull, 4ull, 7ull, 8ull, 23ull, 24ull, 100ull, 5000ull, 14303ull,
                     14304ull, 14305ull, 400000ull, 489311ull}) {
    std::vector<uint8_t> cut(file.begin(), file.begin() + static_cast<ptrdiff_t>(n));
    test::write_bytes(path, cut);
    try {
      auto f = GgufFile::open(path);
      exercise(*f);
      ++tally.parsed;
    } catch (const GgufError& e) {
      ++tally.rejected;
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(tally.parsed, 0u);
  EXPECT_EQ(tally.rejected, 14u);
}

// ------------------------------------------------------------------ hand-made corrupt files

// Little-endian byte builder for hand-made files.
struct Bytes {
  std::vector<uint8_t> b;
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& u8(uint8_t v) { return raw(&v, 1); }
  Bytes& str(std::string_view s) { u64(s.size()); return raw(s.data(), s.size()); }
  Bytes& raw(const void* p, size_t n) {
    auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Bytes& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t off) {
    str(name);
    u32(static_cast<uint32_t>(dims.size()));
    for (auto d : dims) u64(d);
    u32(type);
    return u64(off);
  }
  // Pads to `align` and appends `n` data bytes.
  Bytes& data(uint64_t n, uint64_t align = 32) {
    b.resize((b.size() + align - 1) / align * align, 0);
    b.resize(b.size() + n, 0x5a);
    return *this;
  }
};

std::string parse_error(const std::vector<uint8_t>& b) {
  try {
    auto f = GgufFile::parse(b.data(), b.size(), "crafted");
    exercise(*f);
  } catch (const GgufError& e) {
    return e.what();
  }
  return "<parsed>";
}

#define EXPECT_REJECTED(bytes, text)                                           \
  do {                                                                         \
    std::string msg_ = parse_error((bytes).b);                                 \
    EXPECT_NE(msg_.find(text), std::string::npos) << "message: " << msg_;      \
  } while (0)

TEST(GgufCorrupt, HeaderProblems) {
  EXPECT_REJECTED(Bytes(), "truncated: magic needs 4 bytes at offset 0");
  EXPECT_REJECTED(Bytes().raw("GGML", 4).u32(3).u64(0).u64(0), "not a GGUF file");
  EXPECT_REJECTED(Bytes().header(0, 0, 1), "version 1 is not supported");
  EXPECT_REJECTED(Bytes().header(0, 0, 4), "unsupported GGUF version 4");
  EXPECT_REJECTED(Bytes().header(0, 0, 0x03000000), "big-endian");
  EXPECT_REJECTED(Bytes().header(0, ~0ull), "metadata count 18446744073709551615 exceeds");
  EXPECT_REJECTED(Bytes().header(1ull << 40, 0), "tensor count 1099511627776 exceeds");
  EXPECT_REJECTED(Bytes().header(0, 1000), "metadata count 1000 is impossible");
  EXPECT_REJECTED(Bytes().header(1000, 0), "tensor count 1000 is impossible");
  // Empty files with no tensors are valid, in both versions.
  EXPECT_EQ(parse_error(Bytes().header(0, 0).b), "<parsed>");
  EXPECT_EQ(parse_error(Bytes().header(0, 0, 2).b), "<parsed>");
}

TEST(GgufCorrupt, MetadataProblems) {
  auto kv = [](std::string_view key, uint32_t type) {
    Bytes b;
    b.header(0, 1).str(key).u32(type);
    return b;
  };
  EXPECT_REJECTED(kv("", 4).u32(1), "metadata entry 0 has an empty key");
  EXPECT_REJECTED(kv("k", 13).u32(1), "key 'k': invalid value type 13");
  EXPECT_REJECTED(kv("k", 4).u8(1), "truncated: k needs 4 bytes");
  EXPECT_REJECTED(kv("k", 8).u64(1ull << 31), "k: string length 2147483648 at offset");
  EXPECT_REJECTED(kv("k", 8).u64(100).raw("abc", 3), "truncated: k needs 100 bytes");
  EXPECT_REJECTED(kv("k", 9).u32(99).u64(0), "invalid array element type 99");
  EXPECT_REJECTED(kv("k", 9).u32(6).u64(1ull << 60), "array of 1152921504606846976 float32");
  EXPECT_REJECTED(kv("k", 9).u32(8).u64(1ull << 40), "string array of 1099511627776 elements");
  EXPECT_REJECTED(kv("k", 9).u32(9).u64(1ull << 40), "array of 1099511627776 arrays");
  // Five levels of arrays.
  Bytes deep = kv("k", 9);
  for (int d = 0; d < 4; ++d) deep.u32(9).u64(1);
  deep.u32(0).u64(0);
  EXPECT_REJECTED(deep, "key 'k': arrays nested more than 4 deep");
  // Four levels are fine.
  Bytes four = kv("k", 9);
  for (int d = 0; d < 3; ++d) four.u32(9).u64(1);
  four.u32(0).u64(2).u8(1).u8(2);
  EXPECT_EQ(parse_error(four.b), "<parsed>");
  // More inner arrays than the file-wide limit, each a valid empty array.
  Bytes many = kv("k", 9);
  uint64_t n = gguf_limits::kMaxNestedArrays + 1;
  many.u32(9).u64(n);
  for (uint64_t k = 0; k < n; ++k) many.u32(0).u64(0);
  EXPECT_REJECTED(many, "more than 1048576 nested arrays");
  // Keys: duplicate, too long, unprintable (escaped in the message).
  Bytes dup;
  dup.header(0, 2).str("a").u32(0).u8(1).str("a").u32(0).u8(2);
  EXPECT_REJECTED(dup, "duplicate metadata key 'a'");
  EXPECT_REJECTED(kv(std::string(70000, 'x'), 0).u8(1), "exceeds the limit of 65535 bytes");
  EXPECT_REJECTED(kv("bad\x01\x1b[2Jkey", 13), "key 'bad\\x01\\x1b[2Jkey': invalid value type 13");
}

TEST(GgufCorrupt, AlignmentProblems) {
  auto align = [](uint32_t type, uint64_t value, int width) {
    Bytes b;
    b.header(0, 1).str("general.alignment").u32(type);
    b.raw(&value, static_cast<size_t>(width));
    return b;
  };
  EXPECT_REJECTED(align(4, 0, 4), "general.alignment must be a power of two");
  EXPECT_REJECTED(align(4, 3, 4), "general.alignment must be a power of two");
  EXPECT_REJECTED(align(4, 1u << 21, 4), "general.alignment must be a power of two");
  EXPECT_REJECTED(align(5, 0xffffffe0u, 4), "(got int32 -32)");
  EXPECT_REJECTED(align(7, 1, 1), "(got bool value)");
  EXPECT_REJECTED(align(6, 0x42000000, 4), "(got float32 value)");
  EXPECT_EQ(parse_error(align(4, 1u << 20, 4).b), "<parsed>");
  EXPECT_EQ(parse_error(align(10, 64, 8).b), "<parsed>");  // any integer type is accepted
}

TEST(GgufCorrupt, TensorInfoProblems) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, uint64_t off, uint64_t data) {
    Bytes b;
    b.header(1, 0).tensor("w", std::move(dims), type, off).data(data);
    return b;
  };
  EXPECT_EQ(parse_error(one({4, 2}, 0, 0, 32).b), "<parsed>");
  EXPECT_REJECTED(one({}, 0, 0, 32), "tensor 'w': 0 dimensions (must be 1..4)");
  EXPECT_REJECTED(one({1, 1, 1, 1, 1}, 0, 0, 32), "tensor 'w': 5 dimensions");
  EXPECT_REJECTED(one({4, 0}, 0, 0, 32), "dimension 1 has invalid size 0");
  EXPECT_REJECTED(one({(1ull << 40) + 1}, 0, 0, 32), "dimension 0 has invalid size 1099511627777");
  // 2^40 * 2^40 * 2^40 * 2^8 = 2^128 wrapped to 0 in 128-bit arithmetic before the fix.
  EXPECT_REJECTED(one({1ull << 40, 1ull << 40, 1ull << 40, 256}, 0, 0, 32), "more than 2^62 elements");
  EXPECT_REJECTED(one({1ull << 31, 1ull << 31}, 0, 0, 32), "more than the whole file");
  EXPECT_REJECTED(one({4}, 5, 0, 32), "tensor 'w': unknown tensor type id 5");
  EXPECT_REJECTED(one({4}, 0xffffffffu, 0, 32), "unknown tensor type id 4294967295");
  EXPECT_REJECTED(one({33}, 8, 0, 64), "row length 33 is not a multiple of the Q8_0 block size 32");
  EXPECT_REJECTED(one({4}, 0, 16, 64), "offset 16 is not a multiple of the alignment 32");
  EXPECT_REJECTED(one({4}, 0, 32, 32), "data at offset 32 (16 bytes) extends past the end");
  EXPECT_REJECTED(one({4}, 0, ~0ull - 31, 32), "extends past the end");
  EXPECT_REJECTED(one({8}, 0, 0, 16), "data at offset 0 (32 bytes) extends past the end");
  Bytes noname;
  noname.header(1, 0).tensor("", {4}, 0, 0).data(16);
  EXPECT_REJECTED(noname, "tensor 0 has an empty name");
  // The data section must start inside the file.
  Bytes nodata;
  nodata.header(1, 0).tensor("w", {1}, 24, 0);
  EXPECT_REJECTED(nodata, "truncated: the data section would start at");
}

TEST(GgufCorrupt, TensorDataProblems) {
  Bytes dup;
  dup.header(2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).data(64);
  EXPECT_REJECTED(dup, "duplicate tensor name 'w'");
  Bytes overlap;
  overlap.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).data(96);
  EXPECT_REJECTED(overlap, "tensor 'b' data [32, 48) overlaps tensor 'a' data [0, 64)");
  Bytes same;
  same.header(2, 0).tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 0).data(64);
  EXPECT_REJECTED(same, "overlaps");
  // Out of order but disjoint is fine.
  Bytes order;
  order.header(2, 0).tensor("a", {4}, 0, 32).tensor("b", {4}, 0, 0).data(64);
  EXPECT_EQ(parse_error(order.b), "<parsed>");
}

TEST(GgufCorrupt, MessagesNameTheFile) {
  test::ScratchDir dir("corrupt");
  std::string path = dir.path("broken.gguf");
  test::write_bytes(path, Bytes().header(0, 0, 7).b);
  try {
    GgufFile::open(path);
    FAIL();
  } catch (const GgufError& e) {
    EXPECT_EQ(std::string(e.what()), path + ": unsupported GGUF version 7");
  }
}

}  // namespace
