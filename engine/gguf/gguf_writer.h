// GGUF v3 writer: metadata of every value type (nested arrays included) and tensors whose data
// is streamed from caller memory (or another mapped GgufFile) straight into the file, so a model
// is never held in RAM. The file appears atomically (temp file + rename). Layout: docs/gguf.md.
// Every failure is a GgufError saying what is wrong.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "gguf/gguf.h"

namespace llmesh {

// An owned metadata value to write. Build it with the factories; arrays of arrays may mix
// element types and nest up to gguf_limits::kMaxArrayDepth levels.
class GgufMetaValue {
 public:
  static GgufMetaValue u8(uint8_t v) { return scalar(GgufType::UINT8, &v, 1); }
  static GgufMetaValue i8(int8_t v) { return scalar(GgufType::INT8, &v, 1); }
  static GgufMetaValue u16(uint16_t v) { return scalar(GgufType::UINT16, &v, 2); }
  static GgufMetaValue i16(int16_t v) { return scalar(GgufType::INT16, &v, 2); }
  static GgufMetaValue u32(uint32_t v) { return scalar(GgufType::UINT32, &v, 4); }
  static GgufMetaValue i32(int32_t v) { return scalar(GgufType::INT32, &v, 4); }
  static GgufMetaValue u64(uint64_t v) { return scalar(GgufType::UINT64, &v, 8); }
  static GgufMetaValue i64(int64_t v) { return scalar(GgufType::INT64, &v, 8); }
  static GgufMetaValue f32(float v) { return scalar(GgufType::FLOAT32, &v, 4); }
  static GgufMetaValue f64(double v) { return scalar(GgufType::FLOAT64, &v, 8); }
  static GgufMetaValue boolean(bool v);
  static GgufMetaValue string(std::string_view v);
  // Numeric array: `count` elements of scalar type `elem` (little-endian bytes, e.g. a
  // std::vector<float>'s data()). BOOL arrays hold one byte per element.
  static GgufMetaValue array(GgufType elem, const void* data, uint64_t count);
  template <typename T>
  static GgufMetaValue array(std::span<const T> v);
  static GgufMetaValue string_array(std::span<const std::string> v);
  static GgufMetaValue string_array(std::span<const std::string_view> v);
  // Array of arrays: every item must itself be an array.
  static GgufMetaValue array_of_arrays(std::vector<GgufMetaValue> items);
  // A deep copy of a value read from another file.
  static GgufMetaValue from(const GgufValue& v);

  GgufType type() const { return type_; }
  GgufType elem() const { return elem_; }
  uint64_t count() const { return count_; }
  // Bytes this value takes in the file (type tag excluded).
  uint64_t encoded_size() const;
  // Appends the encoding (type tag excluded) to `out`.
  void encode(std::string& out) const;
  // Arrays inside this value (an array of 3 flat arrays has 3).
  uint64_t nested_arrays() const;

 private:
  static GgufMetaValue scalar(GgufType t, const void* p, size_t n);
  GgufType type_ = GgufType::UINT8;
  GgufType elem_ = GgufType::UINT8;
  uint64_t count_ = 0;
  std::string bytes_;                 // scalar or numeric-array payload, or the string itself
  std::vector<std::string> strings_;  // STRING arrays
  std::vector<GgufMetaValue> items_;  // arrays of arrays
  int depth_ = 0;                     // array nesting below this value (1 for a flat array)
};

template <typename T>
GgufMetaValue GgufMetaValue::array(std::span<const T> v) {
  GgufType t;
  if constexpr (std::is_same_v<T, uint8_t>) t = GgufType::UINT8;
  else if constexpr (std::is_same_v<T, int8_t>) t = GgufType::INT8;
  else if constexpr (std::is_same_v<T, uint16_t>) t = GgufType::UINT16;
  else if constexpr (std::is_same_v<T, int16_t>) t = GgufType::INT16;
  else if constexpr (std::is_same_v<T, uint32_t>) t = GgufType::UINT32;
  else if constexpr (std::is_same_v<T, int32_t>) t = GgufType::INT32;
  else if constexpr (std::is_same_v<T, uint64_t>) t = GgufType::UINT64;
  else if constexpr (std::is_same_v<T, int64_t>) t = GgufType::INT64;
  else if constexpr (std::is_same_v<T, float>) t = GgufType::FLOAT32;
  else if constexpr (std::is_same_v<T, double>) t = GgufType::FLOAT64;
  else static_assert(sizeof(T) == 0, "unsupported GGUF array element type");
  return array(t, v.data(), v.size());
}

class GgufWriter {
 public:
  // Produces `count` bytes of a tensor starting at byte `offset` of its data into `dst`.
  // Called repeatedly with consecutive ranges while the file is written.
  using Fill = std::function<void(uint8_t* dst, uint64_t offset, uint64_t count)>;

  GgufWriter() = default;

  // Sets a metadata key, replacing an earlier value of the same key in place (keys keep the
  // order of their first set). `general.alignment` must be a UINT32 power of two up to
  // gguf_limits::kMaxAlignment; it sets the alignment of every tensor.
  void set(std::string_view key, GgufMetaValue value);
  void set_u8(std::string_view key, uint8_t v) { set(key, GgufMetaValue::u8(v)); }
  void set_i8(std::string_view key, int8_t v) { set(key, GgufMetaValue::i8(v)); }
  void set_u16(std::string_view key, uint16_t v) { set(key, GgufMetaValue::u16(v)); }
  void set_i16(std::string_view key, int16_t v) { set(key, GgufMetaValue::i16(v)); }
  void set_u32(std::string_view key, uint32_t v) { set(key, GgufMetaValue::u32(v)); }
  void set_i32(std::string_view key, int32_t v) { set(key, GgufMetaValue::i32(v)); }
  void set_u64(std::string_view key, uint64_t v) { set(key, GgufMetaValue::u64(v)); }
  void set_i64(std::string_view key, int64_t v) { set(key, GgufMetaValue::i64(v)); }
  void set_f32(std::string_view key, float v) { set(key, GgufMetaValue::f32(v)); }
  void set_f64(std::string_view key, double v) { set(key, GgufMetaValue::f64(v)); }
  void set_bool(std::string_view key, bool v) { set(key, GgufMetaValue::boolean(v)); }
  void set_string(std::string_view key, std::string_view v) { set(key, GgufMetaValue::string(v)); }
  // Copies every metadata key of `src` (in its order), general.alignment included.
  void copy_metadata(const GgufFile& src);
  bool has(std::string_view key) const { return kv_index_.count(std::string(key)) != 0; }
  // Removes a key; false when it was not set.
  bool remove(std::string_view key);

  // Adds a tensor whose `nbytes` bytes of data are at `data`, which must stay valid until
  // write() returns. `shape[0]` is the row length; 1..4 dims.
  void add_tensor(std::string_view name, DType type, std::span<const int64_t> shape,
                  const void* data, uint64_t nbytes);
  // Adds a tensor whose data `fill` produces while the file is written.
  void add_tensor(std::string_view name, DType type, std::span<const int64_t> shape, Fill fill);
  // Copies a tensor of another file (its name unless `name` is given). The source GgufFile
  // must stay open until write() returns; its data is streamed from the mapping.
  void add_tensor(const GgufTensor& src, std::string_view name = {});

  size_t tensor_count() const { return tensors_.size(); }
  size_t metadata_count() const { return kv_.size(); }
  uint64_t alignment() const { return alignment_; }

  // Writes the file to `path` atomically: a temporary file in the same directory, flushed,
  // fsync'd, then renamed over `path`. Returns the file size. The writer can write again.
  uint64_t write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    DType type;
    uint32_t n_dims;
    int64_t ne[4];
    uint64_t nbytes;
    const uint8_t* data;  // or
    Fill fill;
  };
  void add(std::string_view name, DType type, std::span<const int64_t> shape, const void* data,
           uint64_t nbytes, Fill fill);

  std::vector<std::pair<std::string, GgufMetaValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  uint64_t alignment_ = gguf_limits::kDefaultAlignment;
};

}  // namespace llmesh
