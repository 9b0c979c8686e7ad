// Helpers shared by the GGUF tests: file I/O, a scratch directory, a synthetic file that uses
// every metadata type, and an independent walker that records where each header field lies.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"

namespace llmesh::test {

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// A fresh directory under the system temp dir, removed with its contents on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    static int seq = 0;
    dir_ = std::filesystem::temp_directory_path() /
           ("llmesh-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(seq++));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

// A writer holding one key of every metadata type (nested arrays too) and tensors of several
// types with deterministic contents. `storage` keeps the tensor data alive until written.
inline GgufWriter synthetic_writer(std::vector<std::vector<uint8_t>>& storage,
                                   uint32_t alignment = 32) {
  GgufWriter w;
  if (alignment != 32) w.set_u32("general.alignment", alignment);
  w.set_string("general.architecture", "synthetic");
  w.set_u8("t.u8", 200);
  w.set_i8("t.i8", -100);
  w.set_u16("t.u16", 60000);
  w.set_i16("t.i16", -30000);
  w.set_u32("t.u32", 4000000000u);
  w.set_i32("t.i32", -2000000000);
  w.set_u64("t.u64", 18000000000000000000ull);
  w.set_i64("t.i64", -9000000000000000000ll);
  w.set_f32("t.f32", 1.5f);
  w.set_f64("t.f64", -2.25e300);
  w.set_bool("t.bool_true", true);
  w.set_bool("t.bool_false", false);
  w.set_string("t.string", "hello \xe4\xbd\xa0\xe5\xa5\xbd");
  w.set_string("t.empty_string", "");
  std::vector<float> f = {0.5f, -1.0f, 3.25f};
  w.set("t.arr_f32", GgufMetaValue::array(std::span<const float>(f)));
  std::vector<int32_t> i = {1, -2, 3, -4};
  w.set("t.arr_i32", GgufMetaValue::array(std::span<const int32_t>(i)));
  std::vector<uint64_t> u = {0, 1, 18446744073709551615ull};
  w.set("t.arr_u64", GgufMetaValue::array(std::span<const uint64_t>(u)));
  std::vector<uint8_t> b = {1, 0, 1};
  w.set("t.arr_bool", GgufMetaValue::array(GgufType::BOOL, b.data(), b.size()));
  w.set("t.arr_empty", GgufMetaValue::array(GgufType::INT16, nullptr, 0));
  std::vector<std::string> s = {"a", "", "ccc"};
  w.set("t.arr_str", GgufMetaValue::string_array(std::span<const std::string>(s)));
  std::vector<int8_t> i8 = {-1, 2};
  std::vector<double> f64 = {1e-300};
  auto inner = GgufMetaValue::array_of_arrays(
      {GgufMetaValue::array(std::span<const int8_t>(i8)),
       GgufMetaValue::string_array(std::span<const std::string>(s))});
  w.set("t.arr_nested", GgufMetaValue::array_of_arrays(
                            {inner, GgufMetaValue::array(std::span<const double>(f64)),
                             GgufMetaValue::array_of_arrays({})}));

  auto add = [&](const char* name, DType t, std::vector<int64_t> shape) {
    const auto& tr = dtype_traits(t);
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<uint8_t> data(static_cast<size_t>(n / tr.block_elems * tr.block_bytes));
    for (size_t k = 0; k < data.size(); ++k) data[k] = static_cast<uint8_t>(k * 31 + name[0]);
    storage.push_back(std::move(data));
    w.add_tensor(name, t, shape, storage.back().data(), storage.back().size());
  };
  storage.reserve(8);
  add("f32.vec", DType::F32, {7});
  add("f16.mat", DType::F16, {6, 3});
  add("q4_0.mat", DType::Q4_0, {64, 2});
  add("q8_0.cube", DType::Q8_0, {32, 2, 3});
  add("q4_k.4d", DType::Q4_K, {256, 1, 2, 1});
  add("i8.one", DType::I8, {1});
  return w;
}

// Where each header field of a GGUF file lies, found by a small parser independent of the
// reader (it trusts the file: use it on valid files only).
struct GgufField {
  enum Kind {
    kMagic, kVersion, kTensorCount, kKvCount, kKeyLen, kValueType, kStrLen, kScalar,
    kElemType, kArrayCount, kNameLen, kNDims, kDim, kTensorType, kTensorOffset,
  };
  Kind kind;
  uint64_t pos;
  int width;  // 4 or 8 (1/2 for small scalars)
};

struct GgufLayout {
  std::vector<GgufField> fields;
  uint64_t header_end = 0;  // end of the tensor infos (before padding)
};

inline GgufLayout walk_gguf(const std::vector<uint8_t>& b) {
  GgufLayout L;
  uint64_t p = 0;
  auto u32 = [&](GgufField::Kind k) {
    L.fields.push_back({k, p, 4});
    uint32_t v;
    std::memcpy(&v, &b.at(p + 3) - 3, 4);
    p += 4;
    return v;
  };
  auto u64 = [&](GgufField::Kind k) {
    L.fields.push_back({k, p, 8});
    uint64_t v;
    std::memcpy(&v, &b.at(p + 7) - 7, 8);
    p += 8;
    return v;
  };
  auto str = [&](GgufField::Kind k) { p += u64(k); };
  auto sizes = [](uint32_t t) -> int {
    return gguf_scalar_size(static_cast<GgufType>(t));
  };
  u32(GgufField::kMagic);
  u32(GgufField::kVersion);
  uint64_t nt = u64(GgufField::kTensorCount);
  uint64_t nkv = u64(GgufField::kKvCount);
  auto value = [&](auto& self, uint32_t t) -> void {
    if (t == 8) {
      str(GgufField::kStrLen);
    } else if (t == 9) {
      uint32_t et = u32(GgufField::kElemType);
      uint64_t n = u64(GgufField::kArrayCount);
      if (sizes(et) > 0) {
        p += n * static_cast<uint64_t>(sizes(et));
      } else {
        for (uint64_t k = 0; k < n; ++k) self(self, et);
      }
    } else {
      L.fields.push_back({GgufField::kScalar, p, sizes(t)});
      p += static_cast<uint64_t>(sizes(t));
    }
  };
  for (uint64_t k = 0; k < nkv; ++k) {
    str(GgufField::kKeyLen);
    uint32_t t = u32(GgufField::kValueType);
    value(value, t);
  }
  for (uint64_t k = 0; k < nt; ++k) {
    str(GgufField::kNameLen);
    uint32_t nd = u32(GgufField::kNDims);
    for (uint32_t d = 0; d < nd; ++d) u64(GgufField::kDim);
    u32(GgufField::kTensorType);
    u64(GgufField::kTensorOffset);
  }
  L.header_end = p;
  return L;
}

}  // namespace llmesh::test
