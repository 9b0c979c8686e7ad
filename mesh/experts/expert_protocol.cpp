#include "experts/expert_protocol.h"

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "gossip/codec.h"

namespace llmesh::mesh::experts {
namespace {

using json = nlohmann::json;

json parse(std::span<const uint8_t> bytes, const char* what, size_t max_bytes) {
  if (bytes.size() > max_bytes)
    throw ExpertFormatError(fmt::format("{}: {} bytes, over the {} byte limit", what, bytes.size(), max_bytes));
  gossip::ParseLimits limits;
  limits.max_bytes = max_bytes;
  limits.max_depth = 4;
  limits.max_elements = 4 * kMaxCalls + 64;
  limits.max_string = max_bytes;
  json v;
  try {
    v = gossip::parse_msgpack(bytes, limits);
  } catch (const std::exception& e) {
    throw ExpertFormatError(fmt::format("{}: not a valid MessagePack map ({})", what, e.what()));
  }
  if (!v.is_object()) throw ExpertFormatError(fmt::format("{}: not a MessagePack map", what));
  return v;
}

uint64_t read_u64(const json& o, const char* key, const char* what, uint64_t max) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_unsigned() || it->get<uint64_t>() > max)
    throw ExpertFormatError(fmt::format("{}: \"{}\" must be an integer 0..{}", what, key, max));
  return it->get<uint64_t>();
}

std::string read_str(const json& o, const char* key, const char* what, size_t max) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_string() || it->get_ref<const std::string&>().size() > max)
    throw ExpertFormatError(fmt::format("{}: \"{}\" must be a string of at most {} bytes", what, key, max));
  return *it;
}

json floats_bin(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(float));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return json::binary(std::move(b));
}

std::vector<float> bin_floats(const json& v, size_t count, const std::string& what) {
  if (!v.is_binary()) throw ExpertFormatError(what + " is not binary");
  const auto& b = v.get_binary();
  if (b.size() != count * sizeof(float))
    throw ExpertFormatError(fmt::format("{} has {} bytes, expected {} ({} floats)", what, b.size(),
                                        count * sizeof(float), count));
  std::vector<float> out(count);
  if (count) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

}  // namespace

std::vector<uint8_t> encode_open(const ExpertsOpen& o) {
  return json::to_msgpack(json{{"t", kExpertsStreamType}, {"v", o.version}, {"plan", o.plan}});
}

ExpertsOpen decode_open(std::span<const uint8_t> bytes) {
  json v = parse(bytes, "experts OPEN", 4096);
  if (read_str(v, "t", "experts OPEN", 64) != kExpertsStreamType)
    throw ExpertFormatError("experts OPEN: \"t\" is not \"experts\"");
  ExpertsOpen o;
  o.version = static_cast<uint32_t>(read_u64(v, "v", "experts OPEN", UINT32_MAX));
  if (o.version < 1) throw ExpertFormatError("experts OPEN: version 0");
  o.plan = read_str(v, "plan", "experts OPEN", 256);
  return o;
}

bool is_experts_stream(std::span<const uint8_t> header) {
  try {
    json v = parse(header, "header", 4096);
    return v.contains("t") && v["t"] == kExpertsStreamType;
  } catch (...) {
    return false;
  }
}

std::vector<uint8_t> encode_request(const ExpertRequest& r) {
  json calls = json::array();
  for (const auto& c : r.calls) calls.push_back({{"e", c.expert}, {"n", c.n}, {"x", floats_bin(c.x)}});
  return json::to_msgpack(json{{"op", "run"}, {"id", r.id}, {"l", r.layer}, {"c", std::move(calls)}});
}

ExpertRequest decode_request(std::span<const uint8_t> bytes, int n_embd) {
  const char* what = "experts request";
  json v = parse(bytes, what, kMaxExpertMessage);
  if (read_str(v, "op", what, 16) != "run") throw ExpertFormatError("experts request: \"op\" is not \"run\"");
  ExpertRequest r;
  r.id = read_u64(v, "id", what, UINT64_MAX);
  r.layer = static_cast<int>(read_u64(v, "l", what, 1u << 20));
  auto it = v.find("c");
  if (it == v.end() || !it->is_array() || it->empty() || it->size() > static_cast<size_t>(kMaxCalls))
    throw ExpertFormatError(fmt::format("experts request: \"c\" must be an array of 1..{} calls", kMaxCalls));
  size_t total = 0;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& c = (*it)[i];
    const std::string cw = fmt::format("experts request: call {}", i);
    if (!c.is_object()) throw ExpertFormatError(cw + " is not a map");
    ExpertCall call;
    call.expert = static_cast<int>(read_u64(c, "e", cw.c_str(), 1u << 20));
    call.n = static_cast<int>(read_u64(c, "n", cw.c_str(), kMaxExpertMessage));
    if (call.n < 1) throw ExpertFormatError(cw + ": \"n\" must be at least 1");
    total += static_cast<size_t>(call.n) * static_cast<size_t>(n_embd) * sizeof(float);
    if (total > kMaxExpertMessage) throw ExpertFormatError("experts request: more rows than fit a message");
    auto x = c.find("x");
    if (x == c.end()) throw ExpertFormatError(cw + ": missing \"x\"");
    call.x = bin_floats(*x, static_cast<size_t>(call.n) * n_embd, cw + " \"x\"");
    r.calls.push_back(std::move(call));
  }
  return r;
}

std::vector<uint8_t> encode_reply(const ExpertReply& r) {
  if (!r.ok)
    return json::to_msgpack(json{{"op", "err"}, {"id", r.id}, {"code", r.code}, {"msg", r.message.substr(0, 1024)}});
  json outs = json::array();
  for (const auto& o : r.outputs) outs.push_back(floats_bin(o));
  return json::to_msgpack(json{{"op", "ok"}, {"id", r.id}, {"o", std::move(outs)}});
}

ExpertReply decode_reply(std::span<const uint8_t> bytes, const std::vector<int>& rows, int n_embd) {
  const char* what = "experts reply";
  json v = parse(bytes, what, kMaxExpertMessage);
  ExpertReply r;
  const std::string op = read_str(v, "op", what, 16);
  r.id = read_u64(v, "id", what, UINT64_MAX);
  if (op == "err") {
    r.ok = false;
    r.code = static_cast<uint32_t>(read_u64(v, "code", what, UINT32_MAX));
    r.message = read_str(v, "msg", what, 1024);
    return r;
  }
  if (op != "ok") throw ExpertFormatError("experts reply: \"op\" is neither \"ok\" nor \"err\"");
  auto it = v.find("o");
  if (it == v.end() || !it->is_array() || it->size() != rows.size())
    throw ExpertFormatError(fmt::format("experts reply: \"o\" must be an array of {} outputs", rows.size()));
  for (size_t i = 0; i < rows.size(); ++i)
    r.outputs.push_back(bin_floats((*it)[i], static_cast<size_t>(rows[i]) * n_embd, fmt::format("experts reply: output {}", i)));
  return r;
}

}  // namespace llmesh::mesh::experts
