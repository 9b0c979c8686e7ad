// The bytes of an "experts" stream (docs/moe.md, "Exact mode"): a mixture-of-experts shard that
// routes a token to an expert it does not hold asks a node holding it to run the expert on the
// token's FFN input rows, and adds the returned rows with the router's weights itself.
//
//   asking shard                                  holding shard
//   OPEN {t:"experts", v:1, plan}   ->
//   DATA {op:"run", id, l, c:[{e, n, x}, ...]}  ->        x: n rows of n_embd f32 (little endian)
//                                                 <-  DATA {op:"ok", id, o:[y, ...]}   one y per call, n rows each
//                                                 <-  DATA {op:"err", id, code, msg}   the stream stays usable
//   ... one request at a time, for as long as the asking shard keeps the stream ...
//
// Every message is untrusted: decoding is bounded, checks each type and size, and names the
// field that is wrong. Unknown keys are ignored (the format is additive).
#pragma once
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmesh::mesh::experts {

inline constexpr uint32_t kExpertsVersion = 1;
inline constexpr const char* kExpertsStreamType = "experts";
inline constexpr size_t kMaxExpertMessage = 4u << 20;  // one request or reply (the transport window)
inline constexpr int kMaxCalls = 4096;                 // calls in one request
inline constexpr int kMaxEmbd = 1 << 16;

// Error codes of an "err" reply.
inline constexpr uint32_t kErrBadRequest = 1;   // a layer, expert or size this node cannot serve
inline constexpr uint32_t kErrFailed = 2;       // the computation failed

// Reset codes of experts streams.
inline constexpr uint32_t kResetExpertsBadOpen = 0x120;  // not an experts OPEN, or another plan
inline constexpr uint32_t kResetExpertsBusy = 0x121;     // at its limit of streams
inline constexpr uint32_t kResetExpertsStopping = 0x122; // shutting down

class ExpertFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ExpertsOpen {
  uint32_t version = kExpertsVersion;
  std::string plan;  // the plan digest both sides follow
};

struct ExpertCall {
  int expert = 0;
  int n = 0;
  std::vector<float> x;  // n * n_embd
};

struct ExpertRequest {
  uint64_t id = 0;
  int layer = 0;
  std::vector<ExpertCall> calls;
};

struct ExpertReply {
  uint64_t id = 0;
  bool ok = true;
  uint32_t code = 0;
  std::string message;
  std::vector<std::vector<float>> outputs;  // one per call
};

std::vector<uint8_t> encode_open(const ExpertsOpen& o);
ExpertsOpen decode_open(std::span<const uint8_t> bytes);  // throws ExpertFormatError
bool is_experts_stream(std::span<const uint8_t> header);

// n_embd: rows are checked against it (x has n * n_embd floats).
std::vector<uint8_t> encode_request(const ExpertRequest& r);
ExpertRequest decode_request(std::span<const uint8_t> bytes, int n_embd);
std::vector<uint8_t> encode_reply(const ExpertReply& r);
// `rows`: the rows each call of the request had, so each output is checked.
ExpertReply decode_reply(std::span<const uint8_t> bytes, const std::vector<int>& rows, int n_embd);

}  // namespace llmesh::mesh::experts
