#include "transport/frame.h"

#include <cstring>

namespace llmesh::mesh {

const char* frame_type_name(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::HELLO: return "HELLO";
    case FrameType::PING: return "PING";
    case FrameType::PONG: return "PONG";
    case FrameType::MSG: return "MSG";
    case FrameType::OPEN: return "OPEN";
    case FrameType::DATA: return "DATA";
    case FrameType::END: return "END";
    case FrameType::RESET: return "RESET";
    case FrameType::GOAWAY: return "GOAWAY";
    case FrameType::WINDOW: return "WINDOW";
  }
  return "UNKNOWN";
}

bool is_known_frame_type(uint8_t type) { return type >= 0x01 && type <= 0x0A; }

void put_u16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

uint16_t get_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) << 32 | get_u32(p + 4); }

void encode_frame(std::vector<uint8_t>& out, FrameType type, uint8_t flags, uint32_t stream_id,
                  std::span<const uint8_t> payload) {
  out.reserve(out.size() + kFrameHeaderSize + payload.size());
  put_u32(out, static_cast<uint32_t>(payload.size() + 6));
  out.push_back(static_cast<uint8_t>(type));
  out.push_back(flags);
  put_u32(out, stream_id);
  out.insert(out.end(), payload.begin(), payload.end());
}

std::vector<uint8_t> encode_frame(FrameType type, uint8_t flags, uint32_t stream_id,
                                  std::span<const uint8_t> payload) {
  std::vector<uint8_t> out;
  encode_frame(out, type, flags, stream_id, payload);
  return out;
}

FrameDecoder::FrameDecoder(uint32_t max_payload)
    : max_payload_(max_payload > kMaxMaxPayload ? kMaxMaxPayload : max_payload) {}

void FrameDecoder::feed(std::span<const uint8_t> bytes) {
  if (failed() || bytes.empty()) return;
  // Drop what was consumed before growing, so the buffer holds at most one partial frame
  // plus the newly fed bytes.
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ >= 64 * 1024)) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

std::optional<Frame> FrameDecoder::next() {
  if (failed()) return std::nullopt;
  size_t avail = buf_.size() - pos_;
  if (avail < 4) return std::nullopt;
  const uint8_t* p = buf_.data() + pos_;
  uint32_t length = get_u32(p);
  // Checked as soon as the length field is in, before any payload is buffered.
  if (length < 6) {
    error_ = "frame length " + std::to_string(length) + " is smaller than the 6-byte header";
    return std::nullopt;
  }
  if (length - 6 > max_payload_) {
    error_ = "frame payload of " + std::to_string(length - 6) + " bytes exceeds the limit of " +
             std::to_string(max_payload_);
    oversize_ = true;
    return std::nullopt;
  }
  if (avail < 4 + size_t(length)) return std::nullopt;
  Frame f;
  f.type = p[4];
  f.flags = p[5];
  f.stream_id = get_u32(p + 6);
  f.payload.assign(p + kFrameHeaderSize, p + 4 + length);
  pos_ += 4 + size_t(length);
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  return f;
}

}  // namespace llmesh::mesh
