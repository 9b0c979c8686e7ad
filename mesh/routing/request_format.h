// The bytes of a forwarded HTTP exchange on a mesh stream (docs/protocol.md, "Routing").
//
//   caller                                   serving node
//   OPEN  {t:"http", v:1, m, p, ct, h, n, o}  ->
//   DATA  body (one or more messages <= 1 MiB, n bytes in all)  ->
//   END   ->
//                                          <-  DATA {s:102} ...   (interim: still working)
//                                          <-  DATA {v:1, s:status, ct:content type}   (head)
//                                          <-  DATA body chunks as they come
//                                          <-  END
//
// A serving node that cannot take the request resets the stream before the head (reset codes
// below), so the caller can try another node. Every header is untrusted input: decoding is
// bounded and checks every type and size; unknown keys are ignored (the format is additive).
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmesh::mesh::routing {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr const char* kHttpStreamType = "http";

// Limits (the same on both sides; docs/protocol.md lists them).
inline constexpr size_t kMaxRequestHeadBytes = 64 * 1024;   // the OPEN payload
inline constexpr size_t kMaxResponseHeadBytes = 4 * 1024;   // the answer's head message
inline constexpr size_t kMaxBodyMessage = 1u << 20;         // one body message, either way
inline constexpr size_t kMaxMethod = 16;
inline constexpr size_t kMaxPath = 4096;
inline constexpr size_t kMaxContentType = 256;
inline constexpr size_t kMaxHeaders = 32;
inline constexpr size_t kMaxHeaderName = 64;
inline constexpr size_t kMaxHeaderValue = 4096;
inline constexpr size_t kMaxOrigin = 128;
inline constexpr uint64_t kMaxBodyLength = 1ull << 32;      // absolute cap; servers set lower

// Application reset codes of routing streams (transport codes 0-5 keep their meaning; REFUSED
// (1) = the serving node is at its limit of forwarded requests, or stopping).
inline constexpr uint32_t kResetBadRequest = 0x100;       // the header or body broke this format
inline constexpr uint32_t kResetLocalUnavailable = 0x101;  // the serving node's own API failed before answering
std::string describe_reset(uint32_t code);                 // "refused: busy or stopping (1)"

// The header names the API forwards; others are dropped on both sides. Auth, hop-by-hop and
// llmesh's own headers are never forwarded.
bool forwardable_header(const std::string& name);

class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RequestHead {
  uint32_t version = kFormatVersion;
  std::string method;        // "m": GET or POST
  std::string path;          // "p": /v1/...
  std::string content_type;  // "ct" (optional)
  std::map<std::string, std::string> headers;  // "h": forwarded headers (optional)
  uint64_t body_length = 0;  // "n": exact body bytes that follow
  std::string origin;        // "o": the calling node's id in hex (informative, logs)
};

struct ResponseHead {
  uint32_t status = 0;       // "s": 100-599; 1xx = interim (the serving node is still working)
  std::string content_type;  // "ct"
  bool interim() const { return status < 200; }
};

// Throws FormatError when a field is over its limit (the caller's own mistake).
std::vector<uint8_t> encode_request_head(const RequestHead& h);
// Throws FormatError naming the field: not a map, wrong type, over a limit, missing "t"/"m"/
// "p"/"n", "t" not "http", "v" < 1, a header name that is not an HTTP token, a control
// character in a value. Bodies over `max_body` are refused here too.
RequestHead decode_request_head(std::span<const uint8_t> bytes, uint64_t max_body = kMaxBodyLength);

std::vector<uint8_t> encode_response_head(const ResponseHead& h);
ResponseHead decode_response_head(std::span<const uint8_t> bytes);

// The "t" of a stream's OPEN header ("http"), or "" when it is not a map with a string "t":
// lets a node's on_stream callback dispatch streams of different kinds.
std::string stream_type(std::span<const uint8_t> header);

}  // namespace llmesh::mesh::routing
