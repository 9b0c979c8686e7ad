#include "kernels/scratch_buffer.h"

#include <new>

namespace llmesh::kernels {

constexpr std::align_val_t kScratchAlign{64};

ScratchBuffer::~ScratchBuffer() {
  if (buf_) ::operator delete[](buf_, kScratchAlign);
}

uint8_t* ScratchBuffer::get(size_t bytes) {
  if (bytes > cap_) {
    if (buf_) ::operator delete[](buf_, kScratchAlign);
    buf_ = nullptr;
    cap_ = bytes > 2 * cap_ ? bytes : 2 * cap_;
    buf_ = static_cast<uint8_t*>(::operator new[](cap_, kScratchAlign));
  }
  return buf_;
}

}  // namespace llmesh::kernels
