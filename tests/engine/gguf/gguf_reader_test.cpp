// The reader on the real models in ../shared/models, cross-checked key by key and tensor by
// tensor against the independent Python reader (../shared/tools/gguf_inspect.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "gguf_test_util.h"
#include "test_paths.h"

using namespace llmesh;

namespace {

const char* kModels[] = {
    "stories260K-f32.gguf",          "stories260K-q4_0.gguf",
    "stories260K-q8_0.gguf",         "stories260K-draft-2L-f32.gguf",
    "stories260K-draft-skip3-f32.gguf", "stories260K-moe4x2-f32.gguf",
    "stories260K-moe4x2-noisy-f32.gguf", "llama-2-tiny-random.gguf",
    "qwen3-tiny-q8_0.gguf",
};

// Runs gguf_inspect.read_gguf on `path` and returns its result as JSON. Strings come back as
// hex (so invalid UTF-8 compares exactly) and floats as float.hex() (so they compare bit-exact).
std::optional<nlohmann::json> python_dump(const std::string& path) {
  std::string tools = test::shared_dir() + "/tools";
  std::string script =
      "import sys, json\n"
      "sys.path.insert(0, sys.argv[1])\n"
      "import gguf_inspect as g\n"
      "class S(str): pass\n"
      "def string(self):\n"
      "    b = self.read(self.unpack('<Q'))\n"
      "    s = S(b.decode('utf-8', errors='replace'))\n"
      "    s.raw = b.hex()\n"
      "    return s\n"
      "g.Reader.string = string\n"
      "def conv(v):\n"
      "    if isinstance(v, S): return {'hex': v.raw}\n"
      "    if isinstance(v, tuple):\n"
      "        return {'arr': v[1], 'n': v[2], 'items': [conv(x) for x in v[3]]}\n"
      "    if isinstance(v, bool): return {'bool': v}\n"
      "    if isinstance(v, float): return {'float': v.hex()}\n"
      "    return v\n"
      "ver, kv, tensors, ds, size = g.read_gguf(sys.argv[2])\n"
      "print(json.dumps({'version': ver, 'kv': [[k, conv(v)] for k, v in kv.items()],\n"
      "  'tensors': [[n, d, t, o] for n, d, t, o in tensors], 'data_offset': ds, 'size': size}))\n";
  test::ScratchDir dir("pydump");
  std::string py = dir.path("dump.py");
  {
    std::ofstream(py) << script;
  }
  std::string cmd = "python3 '" + py + "' '" + tools + "' '" + path + "' 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) return std::nullopt;
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe.get())) > 0) out.append(buf, n);
  if (out.empty()) return std::nullopt;
  return nlohmann::json::parse(out);
}

std::string hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string h;
  for (unsigned char c : s) {
    h += d[c >> 4];
    h += d[c & 15];
  }
  return h;
}

double parse_hex_float(const std::string& s) { return std::strtod(s.c_str(), nullptr); }

// Compares one of our values with the Python reader's JSON for it.
void expect_same(const GgufValue& v, const nlohmann::json& j, const std::string& where) {
  SCOPED_TRACE(where);
  switch (v.type) {
    case GgufType::STRING: EXPECT_EQ(hex(v.s), j.at("hex").get<std::string>()); return;
    case GgufType::BOOL: EXPECT_EQ(v.u != 0, j.at("bool").get<bool>()); return;
    case GgufType::FLOAT32: case GgufType::FLOAT64: {
      double want = parse_hex_float(j.at("float").get<std::string>());
      if (std::isnan(want)) EXPECT_TRUE(std::isnan(v.f));
      else EXPECT_EQ(v.f, want);
      return;
    }
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
      EXPECT_EQ(v.u, j.get<uint64_t>());
      return;
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      EXPECT_EQ(v.i, j.get<int64_t>());
      return;
    case GgufType::ARRAY: break;
  }
  ASSERT_EQ(v.count, j.at("n").get<uint64_t>());
  const auto& items = j.at("items");
  ASSERT_EQ(items.size(), v.count);
  for (uint64_t k = 0; k < v.count; ++k) {
    const auto& e = items[k];
    if (v.elem == GgufType::STRING) {
      ASSERT_EQ(hex(v.strings[k]), e.at("hex").get<std::string>()) << where << "[" << k << "]";
    } else if (v.elem == GgufType::ARRAY) {
      expect_same(v.items[k], e, where + "[" + std::to_string(k) + "]");
    } else {
      GgufValue s = v.array_scalar(k);
      if (s.type == GgufType::BOOL) ASSERT_EQ(s.u != 0, e.at("bool").get<bool>());
      else if (s.is_float()) {
        double want = parse_hex_float(e.at("float").get<std::string>());
        if (std::isnan(want)) ASSERT_TRUE(std::isnan(s.f));
        else ASSERT_EQ(s.f, want) << where << "[" << k << "]";
      } else if (s.type == GgufType::UINT64 || s.type == GgufType::UINT32 ||
                 s.type == GgufType::UINT16 || s.type == GgufType::UINT8) {
        ASSERT_EQ(s.u, e.get<uint64_t>()) << where << "[" << k << "]";
      } else {
        ASSERT_EQ(s.i, e.get<int64_t>()) << where << "[" << k << "]";
      }
    }
  }
}

class GgufRealModel : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufRealModel, MatchesPythonReader) {
  std::string path = test::model_path(GetParam());
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "missing " << path;
  auto py = python_dump(path);
  if (!py) GTEST_SKIP() << "python3 or gguf_inspect.py unavailable";
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), (*py)["version"].get<uint32_t>());
  EXPECT_EQ(f->file_size(), (*py)["size"].get<uint64_t>());
  EXPECT_EQ(f->data_offset(), (*py)["data_offset"].get<uint64_t>());

  const auto& kv = (*py)["kv"];
  ASSERT_EQ(f->metadata().size(), kv.size());
  for (size_t k = 0; k < kv.size(); ++k) {
    const auto& [key, value] = f->metadata()[k];
    ASSERT_EQ(key, kv[k][0].get<std::string>());
    expect_same(value, kv[k][1], key);
    EXPECT_EQ(f->find(key), &value);
  }

  const auto& ts = (*py)["tensors"];
  ASSERT_EQ(f->tensors().size(), ts.size());
  uint64_t prev_end = 0;
  for (size_t k = 0; k < ts.size(); ++k) {
    const GgufTensor& t = f->tensors()[k];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, ts[k][0].get<std::string>());
    auto dims = ts[k][1].get<std::vector<int64_t>>();
    ASSERT_EQ(t.n_dims, dims.size());
    for (size_t d = 0; d < dims.size(); ++d) EXPECT_EQ(t.ne[d], dims[d]);
    EXPECT_EQ(static_cast<uint32_t>(t.type), ts[k][2].get<uint32_t>());
    EXPECT_EQ(t.offset, ts[k][3].get<uint64_t>());
    const auto& tr = dtype_traits(t.type);
    EXPECT_EQ(t.nbytes, static_cast<uint64_t>(t.n_elements() / tr.block_elems * tr.block_bytes));
    EXPECT_EQ(t.data, f->base() + f->data_offset() + t.offset);
    EXPECT_EQ(t.offset % f->alignment(), 0u);
    EXPECT_GE(t.offset, prev_end);  // the real files store tensors in order
    prev_end = t.offset + t.nbytes;
    EXPECT_EQ(f->find_tensor(t.name), &t);
  }
  EXPECT_LE(f->data_offset() + prev_end, f->file_size());
}

INSTANTIATE_TEST_SUITE_P(Models, GgufRealModel, ::testing::ValuesIn(kModels),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(GgufReader, OpensStories260K) {
  auto f = GgufFile::open(test::model_path("stories260K-f32.gguf"));
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset(), 14304u);
  EXPECT_EQ(f->metadata().size(), 23u);
  EXPECT_EQ(f->tensors().size(), 48u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_string("general.name"), "stories260K");
  EXPECT_EQ(f->get_uint("llama.block_count"), 5u);
  EXPECT_EQ(f->get_uint("llama.context_length"), 512u);
  EXPECT_EQ(f->get_uint("llama.embedding_length"), 64u);
  EXPECT_EQ(f->get_uint("llama.feed_forward_length"), 172u);
  EXPECT_EQ(f->get_uint("llama.attention.head_count"), 8u);
  EXPECT_EQ(f->get_uint("llama.attention.head_count_kv"), 4u);
  EXPECT_FLOAT_EQ(static_cast<float>(f->get_float("llama.attention.layer_norm_rms_epsilon")),
                  1e-5f);
  EXPECT_EQ(f->get_float("llama.rope.freq_base"), 10000.0);
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f->get_bool("tokenizer.ggml.add_eos_token"));
  const auto& tok = f->get_array("tokenizer.ggml.tokens");
  EXPECT_EQ(tok.elem, GgufType::STRING);
  ASSERT_EQ(tok.count, 512u);
  EXPECT_EQ(tok.strings[0], "<unk>");
  EXPECT_EQ(tok.strings[1], "<s>");
  EXPECT_EQ(tok.strings[2], "</s>");
  EXPECT_EQ(tok.strings[3], "<0x00>");
  const auto& tt = f->get_array("tokenizer.ggml.token_type");
  EXPECT_EQ(tt.elem, GgufType::INT32);
  EXPECT_EQ(tt.array_int(0), 2);
  EXPECT_EQ(tt.array_int(3), 6);
  EXPECT_THROW(tt.array_int(512), GgufError);
  EXPECT_THROW(tok.array_int(0), GgufError);  // not numeric
  const auto& emb = f->tensor("token_embd.weight");
  EXPECT_EQ(emb.type, DType::F32);
  EXPECT_EQ(emb.ne[0], 64);
  EXPECT_EQ(emb.ne[1], 512);
  EXPECT_EQ(emb.offset, 0u);
  EXPECT_EQ(emb.nbytes, 64u * 512u * 4u);
  EXPECT_EQ(emb.row_bytes(), 256u);
  EXPECT_EQ(emb.shape_string(), "[64, 512]");
  EXPECT_THROW(f->tensor("nope"), GgufError);
  EXPECT_THROW(f->get_uint("general.architecture"), GgufError);
  EXPECT_THROW(f->get_string("missing.key"), GgufError);
  EXPECT_FALSE(f->opt_uint("missing.key").has_value());
}

TEST(GgufReader, QuantizedTensorSizes) {
  auto q4 = GgufFile::open(test::model_path("stories260K-q4_0.gguf"));
  auto q8 = GgufFile::open(test::model_path("stories260K-q8_0.gguf"));
  size_t n_q4 = 0, n_q8 = 0;
  for (const auto& t : q4->tensors())
    if (t.type == DType::Q4_0) {
      ++n_q4;
      EXPECT_EQ(t.nbytes, static_cast<uint64_t>(t.n_elements() / 32 * 18)) << t.name;
    }
  for (const auto& t : q8->tensors())
    if (t.type == DType::Q8_0) {
      ++n_q8;
      EXPECT_EQ(t.nbytes, static_cast<uint64_t>(t.n_elements() / 32 * 34)) << t.name;
    }
  EXPECT_GT(n_q4, 0u);
  EXPECT_GT(n_q8, 0u);
}

TEST(GgufReader, MissingFileNamesThePath) {
  try {
    GgufFile::open("/nonexistent/model.gguf");
    FAIL();
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
  }
}

TEST(GgufReader, DirectoryAndEmptyFileAreErrors) {
  test::ScratchDir dir("reader");
  EXPECT_THROW(GgufFile::open(dir.dir().string()), GgufError);
  std::string empty = dir.path("empty.gguf");
  test::write_bytes(empty, {});
  try {
    GgufFile::open(empty);
    FAIL();
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("empty file"), std::string::npos) << e.what();
  }
}

TEST(GgufReader, Version2ParsesLikeVersion3) {
  auto bytes = test::read_bytes(test::model_path("stories260K-q8_0.gguf"));
  bytes[4] = 2;
  auto f = GgufFile::parse(bytes.data(), bytes.size(), "v2");
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->tensors().size(), 48u);
  EXPECT_EQ(f->get_uint("llama.block_count"), 5u);
}

TEST(GgufReader, Version1IsRejected) {
  auto bytes = test::read_bytes(test::model_path("stories260K-q8_0.gguf"));
  bytes[4] = 1;
  try {
    GgufFile::parse(bytes.data(), bytes.size(), "v1");
    FAIL();
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("version 1 is not supported"), std::string::npos);
  }
}

TEST(GgufReader, ArrayAccessorsDoNotInvokeUndefinedBehaviour) {
  GgufValue a;
  a.type = GgufType::ARRAY;
  a.elem = GgufType::FLOAT64;
  double vals[] = {NAN, 1e300, -1e300, 42.9, -0.5};
  a.raw = reinterpret_cast<const uint8_t*>(vals);
  a.count = 5;
  EXPECT_EQ(a.array_int(0), 0);
  EXPECT_EQ(a.array_int(1), INT64_MAX);
  EXPECT_EQ(a.array_int(2), INT64_MIN);
  EXPECT_EQ(a.array_int(3), 42);
  EXPECT_EQ(a.array_uint(1), UINT64_MAX);
  EXPECT_EQ(a.array_uint(4), 0u);
  uint8_t b[] = {0, 1, 7};
  GgufValue bools = a;
  bools.elem = GgufType::BOOL;
  bools.raw = b;
  bools.count = 3;
  EXPECT_EQ(bools.array_int(0), 0);
  EXPECT_EQ(bools.array_int(1), 1);
  EXPECT_EQ(bools.array_uint(2), 7u);
  uint64_t big[] = {UINT64_MAX};
  GgufValue u = a;
  u.elem = GgufType::UINT64;
  u.raw = reinterpret_cast<const uint8_t*>(big);
  u.count = 1;
  EXPECT_EQ(u.array_uint(0), UINT64_MAX);
}

}  // namespace

namespace llmesh {
namespace {

// The header alone (a remote file read by byte ranges): offsets and sizes of every tensor, no
// data; bytes that end inside the header are an error like any truncation, never a crash.
TEST(GgufHeaderOnly, ParsesTheHeaderWithoutTheData) {
  auto whole = GgufFile::open(test::model_path("stories260K-f32.gguf"));
  std::vector<uint8_t> head(whole->base(), whole->base() + whole->data_offset());
  auto h = GgufFile::parse_header(head.data(), head.size(), "header");
  ASSERT_EQ(h->tensors().size(), whole->tensors().size());
  EXPECT_EQ(h->data_offset(), whole->data_offset());
  for (size_t i = 0; i < h->tensors().size(); ++i) {
    EXPECT_EQ(h->tensors()[i].name, whole->tensors()[i].name);
    EXPECT_EQ(h->tensors()[i].offset, whole->tensors()[i].offset);
    EXPECT_EQ(h->tensors()[i].nbytes, whole->tensors()[i].nbytes);
    EXPECT_EQ(h->tensors()[i].data, nullptr);
  }
  EXPECT_EQ(h->get_uint("llama.block_count"), 5u);
  for (size_t n : {size_t{0}, size_t{4}, size_t{24}, head.size() / 2, head.size() - 200})
    EXPECT_THROW(GgufFile::parse_header(head.data(), n, "short"), GgufError) << n;
}

}  // namespace
}  // namespace llmesh
