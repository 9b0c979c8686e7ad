// The wire format of node-to-node connections (docs/protocol.md, "Frames"): inside TLS, a
// sequence of frames, each a big-endian header
//   u32 length   (bytes after this field: 6 + payload size)
//   u8  type
//   u8  flags
//   u32 stream_id
// followed by the payload. Every frame is untrusted input: FrameDecoder accepts bytes in any
// pieces and either yields whole frames or reports, once, why the stream is malformed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace llmesh::mesh {

enum class FrameType : uint8_t {
  HELLO = 0x01,   // first frame each way: versions, node id, software, capabilities (msgpack)
  PING = 0x02,    // keepalive; 8 opaque bytes echoed by PONG
  PONG = 0x03,
  MSG = 0x04,     // one-shot message on stream 0: u16 kind, then the body
  OPEN = 0x05,    // opens stream_id; payload: the opener's header bytes
  DATA = 0x06,    // stream data; flag MORE: the message continues in the next DATA frame
  END = 0x07,     // the sender will send no more on this stream (half close)
  RESET = 0x08,   // aborts the stream both ways; payload: u32 reason code
  GOAWAY = 0x09,  // graceful close; payload: u32 reason code, then a UTF-8 message
  WINDOW = 0x0A,  // stream credit; payload: u32 bytes the sender may send in addition
};

namespace frame_flags {
inline constexpr uint8_t MORE = 0x01;  // MSG/DATA: this frame is not the last of its message
}

inline constexpr size_t kFrameHeaderSize = 10;       // length + type + flags + stream_id
inline constexpr uint32_t kDefaultMaxPayload = 1u << 20;   // 1 MiB
inline constexpr uint32_t kMaxMaxPayload = 16u << 20;      // the configurable ceiling: 16 MiB

const char* frame_type_name(uint8_t type);  // "DATA", ... or "UNKNOWN"
bool is_known_frame_type(uint8_t type);

struct Frame {
  uint8_t type = 0;  // a FrameType, or an unknown type from a newer version
  uint8_t flags = 0;
  uint32_t stream_id = 0;
  std::vector<uint8_t> payload;

  FrameType kind() const { return static_cast<FrameType>(type); }
  bool more() const { return flags & frame_flags::MORE; }
};

// Appends one encoded frame to out. payload.size() must fit the peer's limit (the caller splits).
void encode_frame(std::vector<uint8_t>& out, FrameType type, uint8_t flags, uint32_t stream_id,
                  std::span<const uint8_t> payload);
std::vector<uint8_t> encode_frame(FrameType type, uint8_t flags, uint32_t stream_id,
                                  std::span<const uint8_t> payload);

// Big-endian helpers for payload fields.
void put_u16(std::vector<uint8_t>& out, uint16_t v);
void put_u32(std::vector<uint8_t>& out, uint32_t v);
void put_u64(std::vector<uint8_t>& out, uint64_t v);
uint16_t get_u16(const uint8_t* p);
uint32_t get_u32(const uint8_t* p);
uint64_t get_u64(const uint8_t* p);

// Incremental decoder. feed() bytes as they arrive, then next() until it returns nullopt.
// After an error (length field smaller than the header, or a payload over max_payload) it
// stays failed: error() says why, and the connection must be closed.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_payload = kDefaultMaxPayload);

  void feed(std::span<const uint8_t> bytes);
  std::optional<Frame> next();

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  bool oversize() const { return oversize_; }  // the failure was a frame over the limit
  size_t buffered() const { return buf_.size() - pos_; }
  uint32_t max_payload() const { return max_payload_; }

 private:
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;  // start of the first undecoded byte in buf_
  uint32_t max_payload_;
  std::string error_;
  bool oversize_ = false;
};

}  // namespace llmesh::mesh
