// The bytes of a pipeline-stage stream (docs/stages.md): the entry node of a split model sends
// each forward step's hidden states to the node holding the next layer range and reads back
// either the hidden states after that range or, from the last stage, the logits sampling needs.
//
//   entry                                         stage node (layers [first, last))
//   OPEN {t:"stage", v:1, model, f, l, ns, nc, hf}  ->
//   DATA {op:"step", id, pos, seq, out, top, tr, h}  ->
//                                                 <-  DATA {op:"ok", id, h}            (a middle stage)
//                                                 <-  DATA {op:"ok", id, rk, ids, lv}  (the last stage)
//                                                 <-  DATA {op:"err", id, code, msg}   (the step failed)
//   ... one step at a time, for as long as the entry keeps the stream ...
//   END / reset: the stage frees the stream's KV cache.
//
// Every message is untrusted: decoding is bounded, checks each type and size, and names the
// field that is wrong. Unknown keys are ignored (the format is additive).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace llmesh::mesh::stages {

inline constexpr uint32_t kStageVersion = 1;
inline constexpr const char* kStageStreamType = "stage";

// Limits, the same on both sides.
inline constexpr size_t kMaxStageMessage = 4u << 20;  // one step or reply (the transport window)
inline constexpr int kMaxStepTokens = 8192;           // positions in one step
inline constexpr int kMaxEmbd = 1 << 16;              // hidden size
inline constexpr int kMaxSeq = 256;                   // sequence slots of one stream
inline constexpr int kMaxCtx = 1 << 20;               // positions per sequence
inline constexpr size_t kMaxModelId = 256;
inline constexpr size_t kMaxErrorMessage = 1024;

// Application reset codes of stage streams (transport codes 0-5 keep their meaning).
inline constexpr uint32_t kResetStageBadRequest = 0x110;   // a message broke this format
inline constexpr uint32_t kResetStageWrongModel = 0x111;   // this node holds another model or range
inline constexpr uint32_t kResetStageBusy = 0x112;         // at its limit of streams or memory
inline constexpr uint32_t kResetStageIdle = 0x113;         // the stream sat idle past the KV TTL
inline constexpr uint32_t kResetStageStopping = 0x114;     // the node is shutting down
std::string describe_stage_reset(uint32_t code);

// Error codes of an "err" reply (the stream stays usable).
inline constexpr uint32_t kErrStepInvalid = 1;   // the step does not fit the KV (gap, out of room, bad seq)
inline constexpr uint32_t kErrStepFailed = 2;    // the forward pass failed

class StageFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How hidden states travel (docs/stages.md, "Hidden states"):
//   F32  4 bytes per value, exact: a split model computes bit for bit what one node computes.
//   F16  2 bytes per value (IEEE half, round to nearest even); the default.
//   Q8   per token, blocks of 32 values: an F16 scale d = max|x| / 127 and 32 int8 q = round(x/d);
//        34 bytes per 32 values, error at most d/2 per value.
enum class HiddenFormat : uint8_t { F32 = 0, F16 = 1, Q8 = 2 };
const char* hidden_format_name(HiddenFormat f);
std::optional<HiddenFormat> parse_hidden_format(const std::string& name);  // "f32", "f16", "q8"
size_t hidden_bytes(HiddenFormat f, size_t n_tokens, size_t n_embd);
std::vector<uint8_t> encode_hidden(std::span<const float> x, size_t n_embd, HiddenFormat f);
// Throws StageFormatError when `bytes` is not exactly n_tokens x n_embd values of the format
// (or holds a non-finite scale).
void decode_hidden(std::span<const uint8_t> bytes, size_t n_tokens, size_t n_embd, HiddenFormat f,
                   std::vector<float>& out);

struct StageOpen {
  uint32_t version = kStageVersion;
  std::string model;     // the package's model id
  int first = 0, last = 0;  // the layer range the entry expects this node to run
  int n_seq = 1;         // sequence slots (the entry's KV slots)
  int n_ctx = 0;         // positions per slot
  HiddenFormat format = HiddenFormat::F16;
};
std::vector<uint8_t> encode_open(const StageOpen& o);
StageOpen decode_open(std::span<const uint8_t> bytes);

struct StepRequest {
  uint64_t id = 0;
  std::vector<int32_t> pos, seq;
  std::vector<uint8_t> output;    // per token: 1 = the last stage returns logits for it
  std::vector<int32_t> out_top;   // per output token: candidates wanted (0: the whole row)
  std::vector<std::pair<int32_t, int32_t>> truncate;  // (seq, n): keep KV [0, n) first
  std::vector<uint8_t> hidden;    // encoded in the stream's format, pos.size() tokens
  int n_tokens() const { return static_cast<int>(pos.size()); }
};
std::vector<uint8_t> encode_step(const StepRequest& s);
// Checks sizes against each other and the open stream's n_seq / n_ctx / hidden size.
StepRequest decode_step(std::span<const uint8_t> bytes, const StageOpen& open, int n_embd);

struct StepReply {
  uint64_t id = 0;
  // A middle stage: the hidden states after its layers (same format and token count).
  std::vector<uint8_t> hidden;
  // The last stage, per output row in batch order: row_k[r] candidates (ids + logits), or
  // row_k[r] == 0 for a whole row of n_vocab logits (values only).
  std::vector<int32_t> row_k;
  std::vector<int32_t> ids;
  std::vector<float> logits;
  uint32_t compute_us = 0;  // time the stage spent in the forward pass (diagnostics)
  // An "err" reply.
  uint32_t error = 0;
  std::string message;
};
std::vector<uint8_t> encode_reply(const StepReply& r);
// `last`: the stage has the head (expects row_k/ids/logits), else hidden states for n_tokens.
StepReply decode_reply(std::span<const uint8_t> bytes, bool last, int n_tokens, int n_out, int n_embd,
                       int n_vocab, HiddenFormat f);

// The n largest values of a row with their ids (ties: lower id first), as the sampler orders them.
void top_candidates(const float* row, int n_vocab, int k, std::vector<int32_t>& ids, std::vector<float>& vals);

}  // namespace llmesh::mesh::stages
