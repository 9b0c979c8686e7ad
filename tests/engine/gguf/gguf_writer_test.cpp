// GgufWriter: round trips of every value type, tensor copies of real models, validation.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "gguf_test_util.h"
#include "test_paths.h"

using namespace llmesh;

namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const GgufError& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_ERROR(stmt, text)                                         \
  do {                                                                   \
    std::string msg_ = error_of([&] { stmt; });                          \
    EXPECT_NE(msg_.find(text), std::string::npos) << "message: " << msg_; \
  } while (0)

// Two read values are identical (type, bits, nested structure).
void expect_identical(const GgufValue& a, const GgufValue& b, const std::string& where) {
  SCOPED_TRACE(where);
  ASSERT_EQ(a.type, b.type);
  switch (a.type) {
    case GgufType::STRING: EXPECT_EQ(a.s, b.s); return;
    case GgufType::FLOAT32: case GgufType::FLOAT64:
      EXPECT_EQ(std::memcmp(&a.f, &b.f, sizeof(double)), 0);
      return;
    case GgufType::ARRAY: break;
    default: EXPECT_EQ(a.u, b.u); EXPECT_EQ(a.i, b.i); return;
  }
  ASSERT_EQ(a.elem, b.elem);
  ASSERT_EQ(a.count, b.count);
  if (a.elem == GgufType::STRING) {
    for (uint64_t k = 0; k < a.count; ++k) ASSERT_EQ(a.strings[k], b.strings[k]);
  } else if (a.elem == GgufType::ARRAY) {
    for (uint64_t k = 0; k < a.count; ++k)
      expect_identical(a.items[k], b.items[k], where + "[" + std::to_string(k) + "]");
  } else {
    size_t n = a.count * static_cast<uint64_t>(gguf_scalar_size(a.elem));
    if (n) {
      EXPECT_EQ(std::memcmp(a.raw, b.raw, n), 0);
    }
  }
}

TEST(GgufWriter, RoundTripsEveryValueType) {
  test::ScratchDir dir("writer");
  std::vector<std::vector<uint8_t>> storage;
  GgufWriter w = test::synthetic_writer(storage);
  std::string path = dir.path("synthetic.gguf");
  uint64_t size = w.write(path);
  EXPECT_EQ(size, std::filesystem::file_size(path));
  EXPECT_EQ(size % 32, 0u);

  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture"), "synthetic");
  EXPECT_EQ(f->find("t.u8")->type, GgufType::UINT8);
  EXPECT_EQ(f->get_uint("t.u8"), 200u);
  EXPECT_EQ(f->find("t.i8")->type, GgufType::INT8);
  EXPECT_EQ(f->get_int("t.i8"), -100);
  EXPECT_EQ(f->find("t.u16")->type, GgufType::UINT16);
  EXPECT_EQ(f->get_uint("t.u16"), 60000u);
  EXPECT_EQ(f->find("t.i16")->type, GgufType::INT16);
  EXPECT_EQ(f->get_int("t.i16"), -30000);
  EXPECT_EQ(f->find("t.u32")->type, GgufType::UINT32);
  EXPECT_EQ(f->get_uint("t.u32"), 4000000000u);
  EXPECT_EQ(f->find("t.i32")->type, GgufType::INT32);
  EXPECT_EQ(f->get_int("t.i32"), -2000000000);
  EXPECT_EQ(f->find("t.u64")->type, GgufType::UINT64);
  EXPECT_EQ(f->get_uint("t.u64"), 18000000000000000000ull);
  EXPECT_EQ(f->find("t.i64")->type, GgufType::INT64);
  EXPECT_EQ(f->get_int("t.i64"), -9000000000000000000ll);
  EXPECT_EQ(f->find("t.f32")->type, GgufType::FLOAT32);
  EXPECT_EQ(f->get_float("t.f32"), 1.5);
  EXPECT_EQ(f->find("t.f64")->type, GgufType::FLOAT64);
  EXPECT_EQ(f->get_float("t.f64"), -2.25e300);
  EXPECT_EQ(f->find("t.bool_true")->type, GgufType::BOOL);
  EXPECT_TRUE(f->get_bool("t.bool_true"));
  EXPECT_FALSE(f->get_bool("t.bool_false"));
  EXPECT_EQ(f->get_string("t.string"), "hello \xe4\xbd\xa0\xe5\xa5\xbd");
  EXPECT_EQ(f->get_string("t.empty_string"), "");

  const auto& af = f->get_array("t.arr_f32");
  ASSERT_EQ(af.elem, GgufType::FLOAT32);
  ASSERT_EQ(af.count, 3u);
  EXPECT_EQ(af.array_number(0), 0.5);
  EXPECT_EQ(af.array_number(1), -1.0);
  EXPECT_EQ(af.array_number(2), 3.25);
  const auto& ai = f->get_array("t.arr_i32");
  ASSERT_EQ(ai.count, 4u);
  EXPECT_EQ(ai.array_int(3), -4);
  const auto& au = f->get_array("t.arr_u64");
  EXPECT_EQ(au.elem, GgufType::UINT64);
  EXPECT_EQ(au.array_uint(2), 18446744073709551615ull);
  const auto& ab = f->get_array("t.arr_bool");
  EXPECT_EQ(ab.elem, GgufType::BOOL);
  EXPECT_EQ(ab.array_int(0), 1);
  EXPECT_EQ(ab.array_int(1), 0);
  const auto& ae = f->get_array("t.arr_empty");
  EXPECT_EQ(ae.elem, GgufType::INT16);
  EXPECT_EQ(ae.count, 0u);
  const auto& as = f->get_array("t.arr_str");
  ASSERT_EQ(as.count, 3u);
  EXPECT_EQ(as.strings[0], "a");
  EXPECT_EQ(as.strings[1], "");
  EXPECT_EQ(as.strings[2], "ccc");
  const auto& an = f->get_array("t.arr_nested");
  ASSERT_EQ(an.elem, GgufType::ARRAY);
  ASSERT_EQ(an.count, 3u);
  const auto& inner = an.items[0];
  ASSERT_EQ(inner.elem, GgufType::ARRAY);
  ASSERT_EQ(inner.count, 2u);
  EXPECT_EQ(inner.items[0].elem, GgufType::INT8);
  EXPECT_EQ(inner.items[0].array_int(0), -1);
  EXPECT_EQ(inner.items[0].array_int(1), 2);
  EXPECT_EQ(inner.items[1].elem, GgufType::STRING);
  EXPECT_EQ(inner.items[1].strings[2], "ccc");
  EXPECT_EQ(an.items[1].elem, GgufType::FLOAT64);
  EXPECT_EQ(an.items[1].array_number(0), 1e-300);
  EXPECT_EQ(an.items[2].elem, GgufType::ARRAY);
  EXPECT_EQ(an.items[2].count, 0u);

  ASSERT_EQ(f->tensors().size(), storage.size());
  for (size_t k = 0; k < storage.size(); ++k) {
    const auto& t = f->tensors()[k];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.offset % 32, 0u);
    ASSERT_EQ(t.nbytes, storage[k].size());
    EXPECT_EQ(std::memcmp(t.data, storage[k].data(), t.nbytes), 0);
  }
  EXPECT_EQ(f->tensor("q8_0.cube").shape_string(), "[32, 2, 3]");
  EXPECT_EQ(f->tensor("q4_k.4d").n_dims, 4u);

  // Writing what was read gives the same bytes.
  GgufWriter again;
  again.copy_metadata(*f);
  for (const auto& t : f->tensors()) again.add_tensor(t);
  std::string path2 = dir.path("again.gguf");
  again.write(path2);
  EXPECT_EQ(test::read_bytes(path), test::read_bytes(path2));
}

TEST(GgufWriter, HonoursGeneralAlignment) {
  for (uint32_t align : {1u, 8u, 64u, 4096u}) {
    SCOPED_TRACE(align);
    test::ScratchDir dir("align");
    std::vector<std::vector<uint8_t>> storage;
    GgufWriter w = test::synthetic_writer(storage, align);
    EXPECT_EQ(w.alignment(), align);
    std::string path = dir.path("a.gguf");
    uint64_t size = w.write(path);
    EXPECT_EQ(size % align, 0u);
    auto f = GgufFile::open(path);
    EXPECT_EQ(f->alignment(), align);
    EXPECT_EQ(f->data_offset() % align, 0u);
    for (const auto& t : f->tensors()) EXPECT_EQ(t.offset % align, 0u);
    EXPECT_EQ(f->tensors().size(), storage.size());
  }
}

TEST(GgufWriter, CopiesRealModelsTensorForTensor) {
  for (const char* name : {"stories260K-q4_0.gguf", "stories260K-f32.gguf",
                           "llama-2-tiny-random.gguf", "qwen3-tiny-q8_0.gguf"}) {
    SCOPED_TRACE(name);
    std::string src_path = test::model_path(name);
    auto src = GgufFile::open(src_path);
    GgufWriter w;
    w.copy_metadata(*src);
    for (const auto& t : src->tensors()) w.add_tensor(t);
    test::ScratchDir dir("copy");
    std::string out = dir.path("copy.gguf");
    w.write(out);
    auto dst = GgufFile::open(out);
    ASSERT_EQ(dst->metadata().size(), src->metadata().size());
    for (size_t k = 0; k < src->metadata().size(); ++k) {
      EXPECT_EQ(dst->metadata()[k].first, src->metadata()[k].first);
      expect_identical(dst->metadata()[k].second, src->metadata()[k].second,
                       src->metadata()[k].first);
    }
    ASSERT_EQ(dst->tensors().size(), src->tensors().size());
    for (size_t k = 0; k < src->tensors().size(); ++k) {
      const auto& a = src->tensors()[k];
      const auto& b = dst->tensors()[k];
      EXPECT_EQ(a.name, b.name);
      EXPECT_EQ(a.type, b.type);
      EXPECT_EQ(a.n_dims, b.n_dims);
      EXPECT_EQ(std::memcmp(a.ne, b.ne, sizeof(a.ne)), 0);
      ASSERT_EQ(a.nbytes, b.nbytes);
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name;
    }
    // These files were written by llama.cpp's packer with the same layout rules, so the copy
    // is byte-identical.
    EXPECT_EQ(test::read_bytes(out), test::read_bytes(src_path));
  }
}

TEST(GgufWriter, SplitsALayerIntoItsOwnFile) {
  auto src = GgufFile::open(test::model_path("stories260K-q8_0.gguf"));
  GgufWriter w;
  w.copy_metadata(*src);
  w.set_u32("llmesh.layer", 2);
  size_t n = 0;
  for (const auto& t : src->tensors())
    if (t.name.rfind("blk.2.", 0) == 0) {
      w.add_tensor(t);
      ++n;
    }
  ASSERT_GT(n, 0u);
  test::ScratchDir dir("split");
  w.write(dir.path("layer2.gguf"));
  auto f = GgufFile::open(dir.path("layer2.gguf"));
  EXPECT_EQ(f->tensors().size(), n);
  EXPECT_EQ(f->get_uint("llmesh.layer"), 2u);
  const auto& a = src->tensor("blk.2.attn_q.weight");
  const auto& b = f->tensor("blk.2.attn_q.weight");
  ASSERT_EQ(a.nbytes, b.nbytes);
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0);
}

TEST(GgufWriter, FillCallbackStreamsData) {
  GgufWriter w;
  std::vector<uint64_t> calls;
  int64_t shape[] = {1 << 20, 3};  // 12 MiB of F32: several chunks
  w.add_tensor("big", DType::F32, shape, [&](uint8_t* dst, uint64_t off, uint64_t n) {
    calls.push_back(off);
    for (uint64_t k = 0; k < n; ++k) dst[k] = static_cast<uint8_t>((off + k) % 251);
  });
  test::ScratchDir dir("fill");
  w.write(dir.path("f.gguf"));
  EXPECT_GT(calls.size(), 1u);
  auto f = GgufFile::open(dir.path("f.gguf"));
  const auto& t = f->tensor("big");
  ASSERT_EQ(t.nbytes, (1u << 20) * 3u * 4u);
  for (uint64_t k = 0; k < t.nbytes; k += 4099) ASSERT_EQ(t.data[k], k % 251) << k;
}

TEST(GgufWriter, SetReplacesAndRemoveDeletes) {
  GgufWriter w;
  w.set_u32("a", 1);
  w.set_string("b", "x");
  w.set_u32("a", 7);  // replaced in place
  EXPECT_EQ(w.metadata_count(), 2u);
  EXPECT_TRUE(w.remove("b"));
  EXPECT_FALSE(w.remove("b"));
  w.set_u32("general.alignment", 64);
  EXPECT_EQ(w.alignment(), 64u);
  EXPECT_TRUE(w.remove("general.alignment"));
  EXPECT_EQ(w.alignment(), 32u);
  test::ScratchDir dir("set");
  w.write(dir.path("s.gguf"));
  auto f = GgufFile::open(dir.path("s.gguf"));
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->get_uint("a"), 7u);
  EXPECT_TRUE(f->tensors().empty());
}

TEST(GgufWriter, ValidatesInputs) {
  GgufWriter w;
  std::vector<uint8_t> buf(4096);
  int64_t ok[] = {32, 2};
  w.add_tensor("t", DType::Q8_0, ok, buf.data(), 2 * 34);
  EXPECT_ERROR(w.add_tensor("t", DType::Q8_0, ok, buf.data(), 2 * 34), "duplicate tensor name 't'");
  int64_t bad_row[] = {33, 2};
  EXPECT_ERROR(w.add_tensor("u", DType::Q8_0, bad_row, buf.data(), 68),
               "row length 33 is not a multiple of the Q8_0 block size 32");
  EXPECT_ERROR(w.add_tensor("u", DType::Q8_0, ok, buf.data(), 67),
               "67 bytes given, but Q8_0 [32, 2] takes 68 bytes");
  EXPECT_ERROR(w.add_tensor("u", DType::F32, std::span<const int64_t>(), buf.data(), 0),
               "0 dimensions");
  int64_t five[] = {1, 1, 1, 1, 1};
  EXPECT_ERROR(w.add_tensor("u", DType::F32, five, buf.data(), 4), "5 dimensions");
  int64_t zero[] = {0};
  EXPECT_ERROR(w.add_tensor("u", DType::F32, zero, buf.data(), 0), "invalid size 0");
  int64_t neg[] = {4, -1};
  EXPECT_ERROR(w.add_tensor("u", DType::F32, neg, buf.data(), 0), "invalid size -1");
  int64_t huge[] = {1ll << 40, 1ll << 40};
  EXPECT_ERROR(w.add_tensor("u", DType::F32, huge, buf.data(), 0), "more than 2^62 elements");
  int64_t one[] = {1};
  EXPECT_ERROR(w.add_tensor("", DType::F32, one, buf.data(), 4), "tensor name is empty");
  EXPECT_ERROR(w.add_tensor("u", static_cast<DType>(4), one, buf.data(), 4), "unknown type id 4");
  EXPECT_ERROR(w.add_tensor("u", DType::F32, one, nullptr, 4), "null data");
  EXPECT_ERROR(w.set_u32("", 1), "metadata key is empty");
  EXPECT_ERROR(w.set_u64("general.alignment", 64), "general.alignment must be a uint32");
  EXPECT_ERROR(w.set_u32("general.alignment", 48), "not a power of two");
  EXPECT_ERROR(w.set_u32("general.alignment", 0), "not a power of two");
  EXPECT_ERROR(w.set_u32("general.alignment", 1u << 21), "not a power of two");
  EXPECT_ERROR(GgufMetaValue::array(GgufType::STRING, buf.data(), 1), "not a numeric scalar type");
  EXPECT_ERROR(GgufMetaValue::array_of_arrays({GgufMetaValue::u8(1)}), "not an array");
  auto deep = GgufMetaValue::array(GgufType::UINT8, buf.data(), 1);
  for (int d = 1; d < gguf_limits::kMaxArrayDepth; ++d) deep = GgufMetaValue::array_of_arrays({deep});
  EXPECT_ERROR(GgufMetaValue::array_of_arrays({deep}), "nested 5 deep");
  EXPECT_EQ(w.tensor_count(), 1u);  // failed adds leave nothing behind
}

TEST(GgufWriter, WritesAtomically) {
  test::ScratchDir dir("atomic");
  std::string path = dir.path("model.gguf");
  test::write_bytes(path, {'o', 'l', 'd'});
  GgufWriter w;
  int64_t shape[] = {1024};
  w.add_tensor("t", DType::F32, shape, [](uint8_t*, uint64_t off, uint64_t) {
    throw GgufError("source went away");
  });
  EXPECT_ERROR(w.write(path), "source went away");
  // The old file is untouched and no temporary file is left behind.
  EXPECT_EQ(test::read_bytes(path), (std::vector<uint8_t>{'o', 'l', 'd'}));
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.dir())) ++entries;
  EXPECT_EQ(entries, 1u);
  EXPECT_ERROR(GgufWriter().write(dir.path("no/such/dir/x.gguf")), "cannot create a temporary file");
}

TEST(GgufWriter, OutputReadsInPython) {
  test::ScratchDir dir("py");
  std::vector<std::vector<uint8_t>> storage;
  GgufWriter w = test::synthetic_writer(storage, 64);
  std::string path = dir.path("s.gguf");
  w.write(path);
  std::string cmd = "python3 '" + test::shared_dir() + "/tools/gguf_inspect.py' '" + path +
                    "' --all-kv --all-tensors 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  if (rc != 0 && out.find("python3") != std::string::npos) GTEST_SKIP() << out;
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("GGUF v3  tensors=6  kv=23"), std::string::npos) << out;
  EXPECT_NE(out.find("last tensor ends at"), std::string::npos) << out;
  EXPECT_NE(out.find("-> OK"), std::string::npos) << out;
}

}  // namespace
