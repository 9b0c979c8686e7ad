// The per-ISA kernel tables and the public entry points that go through them.
// Each ISA's table is built once: the scalar entries first, then every wider ISA up to it
// registers what it has (overriding individual fields), so a missing SIMD kernel falls back to
// the next narrower one: avx512 -> avx2 -> scalar, neon -> scalar.
#include <array>
#include <stdexcept>
#include <string>

#include "kernels/registry.h"

namespace llmesh::kernels {
namespace {

constexpr int kIsaCount = 4;
using Table = std::array<TypeKernels, kDTypeIdLimit>;

std::array<Table, kIsaCount> build_tables() {
  std::array<Table, kIsaCount> tables{};
  for (int target = 0; target < kIsaCount; ++target) {
    Table& t = tables[target];
    const Isa chain_x86[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512};
    const Isa chain_neon[] = {Isa::Scalar, Isa::Neon};
    auto add = [&](Isa isa) {
      register_legacy_kernels(t.data(), isa);
      register_kquant_kernels(t.data(), isa);
    };
    if (static_cast<Isa>(target) == Isa::Neon) {
      for (Isa isa : chain_neon) add(isa);
    } else {
      for (Isa isa : chain_x86) {
        if (static_cast<int>(isa) > target) break;
        add(isa);
      }
    }
  }
  return tables;
}

const TypeKernels& kernels_or_throw(DType t) {
  const TypeKernels* k = type_kernels(t, active_isa());
  if (!k) throw std::runtime_error("tensor type " + dtype_name(t) + " is not supported by llmesh kernels");
  return *k;
}

}  // namespace

const TypeKernels* type_kernels(DType t, Isa isa) {
  static const std::array<Table, kIsaCount> tables = build_tables();
  const auto id = static_cast<uint32_t>(t);
  const auto i = static_cast<uint32_t>(isa);
  if (id >= kDTypeIdLimit || i >= static_cast<uint32_t>(kIsaCount)) return nullptr;
  const TypeKernels& k = tables[i][id];
  if (!k.vec_dot || !k.dequantize || !k.quantize_act) return nullptr;
  return &k;
}

bool is_computable(DType t) { return type_kernels(t, Isa::Scalar) != nullptr; }

void dequantize_row(DType t, const void* src, float* dst, int64_t n) { kernels_or_throw(t).dequantize(src, dst, n); }

DType act_type(DType w) { return kernels_or_throw(w).act; }

size_t act_row_bytes(DType w, int64_t n) {
  const DType a = kernels_or_throw(w).act;
  const auto bytes = dtype_row_bytes(a, n);
  if (!bytes)
    throw std::runtime_error("row of " + std::to_string(n) + " elements is not a whole number of " +
                             dtype_name(a) + " blocks");
  return static_cast<size_t>(*bytes);
}

void quantize_act_row(DType w, const float* x, void* dst, int64_t n) { kernels_or_throw(w).quantize_act(x, dst, n); }

float vec_dot(DType w, int64_t n, const void* w_row, const void* act_row) {
  return kernels_or_throw(w).vec_dot(n, w_row, act_row);
}

}  // namespace llmesh::kernels
