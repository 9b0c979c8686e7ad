// libFuzzer target for the transport's frame decoder and HELLO parser: any bytes, fed in any
// pieces, must yield frames within the limit or one clear error; HELLO payloads must parse or
// be refused. Built only with -DLLMESH_FUZZ=ON and clang:
//   build-fuzz/bin/llmesh_frame_fuzz -max_total_time=60 -max_len=65536
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "transport/frame.h"
#include "transport/protocol.h"

namespace {
volatile uint64_t g_sink;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The first two bytes choose the limit and how the rest is cut into reads.
  uint32_t max_payload = 64u + (uint32_t(data[0]) << 8);
  size_t step = 1 + data[1];
  std::span<const uint8_t> rest(data + 2, size - 2);
  llmesh::mesh::FrameDecoder dec(max_payload);
  size_t frames = 0, bytes = 0;
  for (size_t off = 0; off < rest.size(); off += step) {
    dec.feed(rest.subspan(off, std::min(step, rest.size() - off)));
    while (auto f = dec.next()) {
      if (f->payload.size() > max_payload) std::abort();
      ++frames;
      bytes += f->payload.size() + llmesh::mesh::kFrameHeaderSize;
      if (f->kind() == llmesh::mesh::FrameType::HELLO) {
        std::string err;
        auto h = llmesh::mesh::decode_hello(f->payload, &err);
        if (!h && err.empty()) std::abort();  // a refusal always says why
        if (h) g_sink = g_sink + h->version_max + h->software.size();
      }
    }
    if (dec.failed()) {
      if (dec.error().empty()) std::abort();
      break;
    }
  }
  if (bytes > rest.size()) std::abort();  // never invents bytes
  g_sink = g_sink + frames;
  return 0;
}
