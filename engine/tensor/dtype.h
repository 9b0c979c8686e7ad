// Tensor element types, numbered exactly as in GGUF files (ggml's type ids).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmesh {

enum class DType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};
inline constexpr uint32_t kDTypeIdLimit = 40;

struct DTypeTraits {
  const char* name = nullptr;  // nullptr: not a known type id
  int64_t block_elems = 0;     // elements per block
  int64_t block_bytes = 0;     // bytes per block
  bool computable = false;     // llmesh has dequantization and dot products for it
};

// Traits of a type id; `name == nullptr` when the id is unknown.
const DTypeTraits& dtype_traits(uint32_t id);
inline const DTypeTraits& dtype_traits(DType t) { return dtype_traits(static_cast<uint32_t>(t)); }
std::string dtype_name(uint32_t id);  // "Q4_K", or "type#31" for an unknown id
inline std::string dtype_name(DType t) { return dtype_name(static_cast<uint32_t>(t)); }
std::optional<DType> dtype_from_name(std::string_view name);  // case-insensitive

// Bytes of one row of `n` elements; nullopt when n is not a whole number of blocks.
std::optional<int64_t> dtype_row_bytes(DType t, int64_t n);

}  // namespace llmesh
