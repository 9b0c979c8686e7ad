#include "stages/stage_protocol.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include <nlohmann/json.hpp>

#include "gossip/codec.h"
#include "kernels/fp16.h"
#include "sampling/sampler.h"

namespace llmesh::mesh::stages {

using nlohmann::json;

std::string describe_stage_reset(uint32_t code) {
  switch (code) {
    case kResetStageBadRequest: return fmt::format("bad stage message ({:#x})", code);
    case kResetStageWrongModel: return fmt::format("the node holds another model or layer range ({:#x})", code);
    case kResetStageBusy: return fmt::format("the stage is at its limit of streams or memory ({:#x})", code);
    case kResetStageIdle: return fmt::format("idle past the KV time-to-live ({:#x})", code);
    case kResetStageStopping: return fmt::format("the stage node is stopping ({:#x})", code);
    default: return fmt::format("reset code {:#x}", code);
  }
}

const char* hidden_format_name(HiddenFormat f) {
  switch (f) {
    case HiddenFormat::F32: return "f32";
    case HiddenFormat::F16: return "f16";
    case HiddenFormat::Q8: return "q8";
  }
  return "?";
}

std::optional<HiddenFormat> parse_hidden_format(const std::string& name) {
  if (name == "f32") return HiddenFormat::F32;
  if (name == "f16") return HiddenFormat::F16;
  if (name == "q8") return HiddenFormat::Q8;
  return std::nullopt;
}

namespace {

constexpr size_t kQ8Block = 32;
constexpr size_t kQ8BlockBytes = 2 + kQ8Block;

size_t q8_row_bytes(size_t n_embd) { return (n_embd + kQ8Block - 1) / kQ8Block * kQ8BlockBytes; }

}  // namespace

size_t hidden_bytes(HiddenFormat f, size_t n_tokens, size_t n_embd) {
  switch (f) {
    case HiddenFormat::F32: return n_tokens * n_embd * 4;
    case HiddenFormat::F16: return n_tokens * n_embd * 2;
    case HiddenFormat::Q8: return n_tokens * q8_row_bytes(n_embd);
  }
  return 0;
}

std::vector<uint8_t> encode_hidden(std::span<const float> x, size_t n_embd, HiddenFormat f) {
  if (n_embd == 0 || x.size() % n_embd != 0)
    throw std::invalid_argument(fmt::format("hidden states: {} values are not rows of {}", x.size(), n_embd));
  const size_t n_tokens = x.size() / n_embd;
  std::vector<uint8_t> out(hidden_bytes(f, n_tokens, n_embd));
  switch (f) {
    case HiddenFormat::F32:
      std::memcpy(out.data(), x.data(), out.size());
      break;
    case HiddenFormat::F16:
      for (size_t i = 0; i < x.size(); ++i) {
        uint16_t h = kernels::float_to_half(x[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      break;
    case HiddenFormat::Q8: {
      uint8_t* o = out.data();
      for (size_t t = 0; t < n_tokens; ++t) {
        const float* row = x.data() + t * n_embd;
        for (size_t b = 0; b < n_embd; b += kQ8Block) {
          const size_t n = std::min(kQ8Block, n_embd - b);
          float amax = 0;
          for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(row[b + i]));
          const float d = amax / 127.0f;
          const uint16_t dh = kernels::float_to_half(d);
          // Quantize against the scale the receiver will see (the F16-rounded one).
          const float dr = kernels::half_to_float(dh);
          const float inv = dr > 0 ? 1.0f / dr : 0.0f;
          std::memcpy(o, &dh, 2);
          auto* q = reinterpret_cast<int8_t*>(o + 2);
          for (size_t i = 0; i < kQ8Block; ++i) {
            float v = i < n ? std::nearbyint(row[b + i] * inv) : 0.0f;
            q[i] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
          }
          o += kQ8BlockBytes;
        }
      }
      break;
    }
  }
  return out;
}

void decode_hidden(std::span<const uint8_t> bytes, size_t n_tokens, size_t n_embd, HiddenFormat f,
                   std::vector<float>& out) {
  const size_t want = hidden_bytes(f, n_tokens, n_embd);
  if (bytes.size() != want)
    throw StageFormatError(fmt::format("hidden states: {} bytes, expected {} ({} tokens x {} in {})", bytes.size(),
                                       want, n_tokens, n_embd, hidden_format_name(f)));
  out.resize(n_tokens * n_embd);
  switch (f) {
    case HiddenFormat::F32:
      std::memcpy(out.data(), bytes.data(), want);
      break;
    case HiddenFormat::F16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = kernels::half_to_float(h);
      }
      break;
    case HiddenFormat::Q8: {
      const uint8_t* p = bytes.data();
      for (size_t t = 0; t < n_tokens; ++t) {
        float* row = out.data() + t * n_embd;
        for (size_t b = 0; b < n_embd; b += kQ8Block) {
          uint16_t dh;
          std::memcpy(&dh, p, 2);
          const float d = kernels::half_to_float(dh);
          if (!std::isfinite(d)) throw StageFormatError("hidden states: a q8 block scale is not finite");
          const auto* q = reinterpret_cast<const int8_t*>(p + 2);
          const size_t n = std::min(kQ8Block, n_embd - b);
          for (size_t i = 0; i < n; ++i) row[b + i] = d * static_cast<float>(q[i]);
          p += kQ8BlockBytes;
        }
      }
      break;
    }
  }
  for (float v : out)
    if (!std::isfinite(v)) throw StageFormatError("hidden states hold a non-finite value");
}

namespace {

json parse(std::span<const uint8_t> bytes, const char* what) {
  if (bytes.size() > kMaxStageMessage)
    throw StageFormatError(fmt::format("{}: {} bytes, over the {} byte limit", what, bytes.size(), kMaxStageMessage));
  gossip::ParseLimits limits;
  limits.max_bytes = kMaxStageMessage;
  limits.max_depth = 3;
  limits.max_elements = 4096;
  limits.max_string = kMaxStageMessage;
  json v;
  try {
    v = gossip::parse_msgpack(bytes, limits);
  } catch (const std::exception& e) {
    throw StageFormatError(fmt::format("{}: not a valid MessagePack map ({})", what, e.what()));
  }
  if (!v.is_object()) throw StageFormatError(fmt::format("{}: not a MessagePack map", what));
  return v;
}

template <typename F>
auto field(const char* what, F&& f) {
  try {
    return f();
  } catch (const StageFormatError&) {
    throw;
  } catch (const std::exception& e) {
    throw StageFormatError(fmt::format("{}: {}", what, e.what()));
  }
}

json bin(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return json::binary(std::vector<uint8_t>(b, b + n));
}

template <typename T>
json bin_of(const std::vector<T>& v) {
  return bin(v.data(), v.size() * sizeof(T));
}

const std::vector<uint8_t>* read_bin(const json& obj, const char* key, const char* what, bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) throw StageFormatError(fmt::format("{}: missing \"{}\"", what, key));
    return nullptr;
  }
  if (!it->is_binary()) throw StageFormatError(fmt::format("{}: \"{}\" is not binary", what, key));
  return &it->get_binary();
}

template <typename T>
std::vector<T> read_array_bin(const json& obj, const char* key, const char* what, size_t count, bool required) {
  const auto* b = read_bin(obj, key, what, required);
  std::vector<T> out;
  if (!b) {
    if (count != 0) throw StageFormatError(fmt::format("{}: missing \"{}\"", what, key));
    return out;
  }
  if (b->size() != count * sizeof(T))
    throw StageFormatError(fmt::format("{}: \"{}\" has {} bytes, expected {} values of {} bytes", what, key,
                                       b->size(), count, sizeof(T)));
  out.resize(count);
  if (count) std::memcpy(out.data(), b->data(), b->size());
  return out;
}

std::string read_op(const json& v, const char* what) {
  return field(what, [&] { return gossip::read_string(v, "op", 16, true); });
}

}  // namespace

std::vector<uint8_t> encode_open(const StageOpen& o) {
  json v = {{"t", kStageStreamType}, {"v", o.version}, {"model", o.model}, {"f", o.first}, {"l", o.last},
            {"ns", o.n_seq},         {"nc", o.n_ctx},   {"hf", static_cast<int>(o.format)}};
  return json::to_msgpack(v);
}

StageOpen decode_open(std::span<const uint8_t> bytes) {
  const char* what = "stage OPEN";
  if (bytes.size() > 4096) throw StageFormatError(fmt::format("{}: {} bytes, over 4096", what, bytes.size()));
  json v = parse(bytes, what);
  return field(what, [&] {
    StageOpen o;
    if (gossip::read_string(v, "t", 16, true) != kStageStreamType) throw StageFormatError("stage OPEN: \"t\" is not \"stage\"");
    o.version = static_cast<uint32_t>(gossip::read_uint(v, "v", 1u << 20, 0, true));
    if (o.version < 1) throw StageFormatError("stage OPEN: \"v\" must be at least 1");
    o.model = gossip::read_string(v, "model", kMaxModelId, true);
    o.first = static_cast<int>(gossip::read_uint(v, "f", 100000, 0, true));
    o.last = static_cast<int>(gossip::read_uint(v, "l", 100000, 0, true));
    if (o.last <= o.first) throw StageFormatError(fmt::format("stage OPEN: empty layer range [{}, {})", o.first, o.last));
    o.n_seq = static_cast<int>(gossip::read_uint(v, "ns", kMaxSeq, 0, true));
    o.n_ctx = static_cast<int>(gossip::read_uint(v, "nc", kMaxCtx, 0, true));
    if (o.n_seq < 1 || o.n_ctx < 1) throw StageFormatError("stage OPEN: \"ns\" and \"nc\" must be at least 1");
    const uint64_t hf = gossip::read_uint(v, "hf", 255, 1);
    if (hf > 2) throw StageFormatError(fmt::format("stage OPEN: unknown hidden-state format {}", hf));
    o.format = static_cast<HiddenFormat>(hf);
    return o;
  });
}

std::vector<uint8_t> encode_step(const StepRequest& s) {
  json tr = json::array();
  for (auto [seq, n] : s.truncate) tr.push_back(json::array({seq, n}));
  json v = {{"op", "step"},       {"id", s.id},           {"pos", bin_of(s.pos)}, {"seq", bin_of(s.seq)},
            {"out", bin_of(s.output)}, {"top", bin_of(s.out_top)}, {"h", bin_of(s.hidden)}};
  if (!tr.empty()) v["tr"] = std::move(tr);
  return json::to_msgpack(v);
}

StepRequest decode_step(std::span<const uint8_t> bytes, const StageOpen& open, int n_embd) {
  const char* what = "stage step";
  json v = parse(bytes, what);
  if (read_op(v, what) != "step") throw StageFormatError("stage step: \"op\" is not \"step\"");
  StepRequest s;
  s.id = field(what, [&] { return gossip::read_uint(v, "id", UINT64_MAX, 0, true); });
  const auto* posb = read_bin(v, "pos", what, true);
  if (posb->size() % 4 != 0 || posb->empty())
    throw StageFormatError(fmt::format("stage step: \"pos\" has {} bytes, not a non-empty int32 array", posb->size()));
  const size_t T = posb->size() / 4;
  if (T > static_cast<size_t>(kMaxStepTokens))
    throw StageFormatError(fmt::format("stage step: {} tokens, over the {} limit", T, kMaxStepTokens));
  s.pos = read_array_bin<int32_t>(v, "pos", what, T, true);
  s.seq = read_array_bin<int32_t>(v, "seq", what, T, true);
  s.output = read_array_bin<uint8_t>(v, "out", what, T, true);
  size_t n_out = 0;
  for (size_t t = 0; t < T; ++t) {
    if (s.pos[t] < 0 || s.pos[t] >= open.n_ctx)
      throw StageFormatError(fmt::format("stage step: position {} outside the stream's context of {}", s.pos[t], open.n_ctx));
    if (s.seq[t] < 0 || s.seq[t] >= open.n_seq)
      throw StageFormatError(fmt::format("stage step: sequence {} outside the stream's {} slots", s.seq[t], open.n_seq));
    if (s.output[t] > 1) throw StageFormatError("stage step: \"out\" values must be 0 or 1");
    n_out += s.output[t];
  }
  if (v.contains("top"))
    s.out_top = read_array_bin<int32_t>(v, "top", what, n_out, true);
  else
    s.out_top.assign(n_out, 0);  // absent: whole rows
  for (int32_t k : s.out_top)
    if (k < 0) throw StageFormatError(fmt::format("stage step: \"top\" value {} is negative", k));
  if (const json* tr = field(what, [&] { return gossip::read_array(v, "tr", static_cast<size_t>(open.n_seq)); })) {
    for (const json& e : *tr) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() || !e[1].is_number_unsigned())
        throw StageFormatError("stage step: \"tr\" entries must be [seq, n] pairs of unsigned integers");
      const uint64_t seq = e[0].get<uint64_t>(), n = e[1].get<uint64_t>();
      if (seq >= static_cast<uint64_t>(open.n_seq) || n > static_cast<uint64_t>(open.n_ctx))
        throw StageFormatError(fmt::format("stage step: truncate [{}, {}] outside the stream's slots or context", seq, n));
      s.truncate.emplace_back(static_cast<int32_t>(seq), static_cast<int32_t>(n));
    }
  }
  const auto* h = read_bin(v, "h", what, true);
  const size_t want = hidden_bytes(open.format, T, static_cast<size_t>(n_embd));
  if (h->size() != want)
    throw StageFormatError(fmt::format("stage step: hidden states of {} bytes, expected {} ({} tokens x {} in {})",
                                       h->size(), want, T, n_embd, hidden_format_name(open.format)));
  s.hidden = *h;
  return s;
}

std::vector<uint8_t> encode_reply(const StepReply& r) {
  json v;
  if (r.error != 0) {
    v = {{"op", "err"}, {"id", r.id}, {"code", r.error}, {"msg", r.message.substr(0, kMaxErrorMessage)}};
  } else {
    v = {{"op", "ok"}, {"id", r.id}, {"us", r.compute_us}};
    if (!r.row_k.empty()) {
      v["rk"] = bin_of(r.row_k);
      v["ids"] = bin_of(r.ids);
      v["lv"] = bin_of(r.logits);
    } else {
      v["h"] = bin_of(r.hidden);
    }
  }
  return json::to_msgpack(v);
}

StepReply decode_reply(std::span<const uint8_t> bytes, bool last, int n_tokens, int n_out, int n_embd, int n_vocab,
                       HiddenFormat f) {
  const char* what = "stage reply";
  json v = parse(bytes, what);
  const std::string op = read_op(v, what);
  StepReply r;
  r.id = field(what, [&] { return gossip::read_uint(v, "id", UINT64_MAX, 0, true); });
  if (op == "err") {
    field(what, [&] {
      r.error = static_cast<uint32_t>(gossip::read_uint(v, "code", UINT32_MAX, 0, true));
      r.message = gossip::read_string(v, "msg", kMaxErrorMessage);
      return 0;
    });
    if (r.error == 0) throw StageFormatError("stage reply: an error with code 0");
    return r;
  }
  if (op != "ok") throw StageFormatError(fmt::format("stage reply: unknown \"op\" \"{}\"", op));
  r.compute_us = static_cast<uint32_t>(field(what, [&] { return gossip::read_uint(v, "us", UINT32_MAX, 0); }));
  if (!last) {
    const auto* h = read_bin(v, "h", what, true);
    const size_t want = hidden_bytes(f, static_cast<size_t>(n_tokens), static_cast<size_t>(n_embd));
    if (h->size() != want)
      throw StageFormatError(fmt::format("stage reply: hidden states of {} bytes, expected {}", h->size(), want));
    r.hidden = *h;
    return r;
  }
  r.row_k = read_array_bin<int32_t>(v, "rk", what, static_cast<size_t>(n_out), n_out > 0);
  size_t n_ids = 0, n_vals = 0;
  for (int32_t k : r.row_k) {
    if (k < 0 || k > n_vocab) throw StageFormatError(fmt::format("stage reply: row of {} candidates (vocabulary {})", k, n_vocab));
    n_ids += static_cast<size_t>(k);
    n_vals += static_cast<size_t>(k == 0 ? n_vocab : k);
  }
  r.ids = read_array_bin<int32_t>(v, "ids", what, n_ids, false);
  r.logits = read_array_bin<float>(v, "lv", what, n_vals, false);
  for (int32_t id : r.ids)
    if (id < 0 || id >= n_vocab) throw StageFormatError(fmt::format("stage reply: token id {} outside the vocabulary", id));
  return r;
}

void top_candidates(const float* row, int n_vocab, int k, std::vector<int32_t>& ids, std::vector<float>& vals) {
  k = std::clamp(k, 1, n_vocab);
  if (k == 1) {  // greedy, every token: no index array
    const int32_t best = argmax(row, n_vocab);
    ids.push_back(best);
    vals.push_back(row[best]);
    return;
  }
  std::vector<int32_t> idx(static_cast<size_t>(n_vocab));
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  for (int i = 0; i < k; ++i) {
    ids.push_back(idx[static_cast<size_t>(i)]);
    vals.push_back(row[idx[static_cast<size_t>(i)]]);
  }
}

}  // namespace llmesh::mesh::stages
