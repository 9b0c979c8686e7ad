// Grow-only, 64-byte aligned scratch memory, one per thread and use (activations quantized for a
// matmul call, a packed weight panel). Defined in scratch_buffer.cpp, compiled for the baseline
// ISA, so no AVX-512 copy of it can be linked into code that runs on any x86-64.
#pragma once
#include <cstddef>
#include <cstdint>

namespace llmesh::kernels {

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer();
  // At least `bytes` bytes, 64-byte aligned; earlier contents are not kept when it grows.
  uint8_t* get(size_t bytes);

 private:
  uint8_t* buf_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace llmesh::kernels
