// GGUF (v2/v3) reader: the file is memory-mapped and every field is validated before use.
// Spec: docs/gguf.md. Every failure is a GgufError naming the file and what is wrong.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tensor/dtype.h"

namespace llmesh {

class GgufError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);
// Size in bytes of a scalar value type; 0 for STRING, ARRAY and invalid ids.
int gguf_scalar_size(GgufType t);

// Limits the reader enforces (and the writer respects); see docs/gguf.md.
namespace gguf_limits {
inline constexpr uint64_t kMaxKeyBytes = 65535;          // metadata key length
inline constexpr uint64_t kMaxTensorNameBytes = 65535;   // tensor name length
inline constexpr uint64_t kMaxStringBytes = 1ull << 30;  // any other string
inline constexpr uint64_t kMaxMetadataCount = 1ull << 20;
inline constexpr uint64_t kMaxTensorCount = 1ull << 20;
inline constexpr int kMaxArrayDepth = 4;                  // arrays of arrays of ...
inline constexpr uint64_t kMaxNestedArrays = 1ull << 20;  // inner arrays in the whole file
inline constexpr uint64_t kMaxDim = 1ull << 40;           // one tensor dimension
inline constexpr uint64_t kMaxElements = 1ull << 62;      // elements of one tensor
inline constexpr uint64_t kMaxAlignment = 1ull << 20;
inline constexpr uint64_t kDefaultAlignment = 32;
}  // namespace gguf_limits

// One metadata value. Scalars are widened (integers to int64/uint64, floats to double);
// strings and string arrays point into the mapped file; numeric arrays are decoded on access.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  uint64_t u = 0;       // unsigned integer types and BOOL
  int64_t i = 0;        // signed integer types
  double f = 0;         // FLOAT32 / FLOAT64
  std::string_view s;   // STRING
  // ARRAY
  GgufType elem = GgufType::UINT8;
  uint64_t count = 0;
  const uint8_t* raw = nullptr;           // first element (numeric arrays)
  std::vector<std::string_view> strings;  // STRING arrays
  std::vector<GgufValue> items;           // nested ARRAY arrays

  bool is_integer() const;
  bool is_float() const { return type == GgufType::FLOAT32 || type == GgufType::FLOAT64; }
  // Numeric element k of a numeric array, widened. Throw GgufError when k is out of range or
  // the array is not numeric. array_int saturates floats (NaN gives 0); array_uint gives the
  // two's-complement bits of negative integers.
  double array_number(uint64_t k) const;
  int64_t array_int(uint64_t k) const;
  uint64_t array_uint(uint64_t k) const;
  // Element k of a numeric array as a scalar GgufValue of type `elem`.
  GgufValue array_scalar(uint64_t k) const;
};

struct GgufTensor {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the row length (contiguous)
  DType type = DType::F32;
  uint64_t offset = 0;  // relative to the data section
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  uint64_t row_bytes() const { return nbytes / static_cast<uint64_t>(n_rows()); }
  std::string shape_string() const;
};

class GgufFile {
 public:
  // Memory-maps and parses `path`.
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parses a buffer the caller keeps alive (fuzzing, tests). `label` names it in errors.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size, std::string label);
  // Parses only the header (metadata and tensor infos) from the first bytes of a file whose
  // tensor data is not at hand (a remote GGUF read by byte ranges): tensors get offsets and
  // sizes, no data (GgufTensor::data is null). Throws GgufError when the bytes end before the
  // header does, like for any other defect; the caller may retry with more bytes.
  static std::unique_ptr<GgufFile> parse_header(const uint8_t* data, size_t size, std::string label);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* base() const { return base_; }

  // Metadata, in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }
  // Typed getters: throw GgufError when the key is missing or has an incompatible type.
  std::string get_string(std::string_view key) const;
  uint64_t get_uint(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  const GgufValue& get_array(std::string_view key) const;
  // Optional variants: nullopt when missing, GgufError when present with a wrong type.
  std::optional<std::string> opt_string(std::string_view key) const;
  std::optional<uint64_t> opt_uint(std::string_view key) const;
  std::optional<double> opt_float(std::string_view key) const;
  std::optional<bool> opt_bool(std::string_view key) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(std::string_view name) const;
  const GgufTensor& tensor(std::string_view name) const;  // throws when missing

  [[noreturn]] void fail(const std::string& what) const;

 private:
  GgufFile() = default;
  void parse_all();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;  // non-null when we own an mmap
  bool header_only_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string_view, size_t> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
};

}  // namespace llmesh
