// libFuzzer target for the GGUF reader: any input must parse (and then be safe to use) or throw
// GgufError. Built only with -DLLMESH_FUZZ=ON and clang; run it with scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "gguf/gguf.h"

namespace {

volatile uint64_t g_sink;

void touch(const llmesh::GgufValue& v) {
  using llmesh::GgufType;
  uint64_t s = 0;
  if (v.type == GgufType::STRING && !v.s.empty()) s += static_cast<uint8_t>(v.s.back());
  if (v.type == GgufType::ARRAY) {
    if (v.elem == GgufType::STRING) {
      if (v.strings.size() != v.count) std::abort();
      for (auto str : v.strings)
        if (!str.empty()) s += static_cast<uint8_t>(str.back());
    } else if (v.elem == GgufType::ARRAY) {
      if (v.items.size() != v.count) std::abort();
      for (const auto& it : v.items) touch(it);
    } else if (v.count > 0) {
      s += static_cast<uint64_t>(v.array_int(0)) + v.array_uint(v.count - 1) +
           static_cast<uint64_t>(v.array_number(v.count / 2) > 0);
    }
  }
  g_sink = g_sink + s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<llmesh::GgufFile> f;
  try {
    f = llmesh::GgufFile::parse(data, size, "fuzz");
  } catch (const llmesh::GgufError&) {
    return 0;  // rejected: fine
  }
  // Accepted: everything it exposes must be in bounds and consistent.
  for (const auto& [key, v] : f->metadata()) {
    if (f->find(key) != &v) std::abort();
    touch(v);
    try {
      g_sink = g_sink + f->opt_uint(key).value_or(0);
    } catch (const llmesh::GgufError&) {
    }
    try {
      g_sink = g_sink + static_cast<uint64_t>(f->opt_float(key).value_or(0) > 0);
    } catch (const llmesh::GgufError&) {
    }
  }
  if (f->data_offset() % f->alignment() != 0) std::abort();
  for (const auto& t : f->tensors()) {
    if (t.data < data + f->data_offset() || t.nbytes == 0 || t.nbytes > size ||
        t.data + t.nbytes > data + size)
      std::abort();
    g_sink = g_sink + t.data[0] + t.data[t.nbytes - 1] + static_cast<uint64_t>(t.n_elements()) +
             t.row_bytes() + t.shape_string().size();
    if (f->find_tensor(t.name) != &t) std::abort();
  }
  return 0;
}
