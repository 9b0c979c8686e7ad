#include "gossip/node_state.h"

#include "gossip/codec.h"

namespace llmesh::gossip {

using nlohmann::json;

const char* role_name(Role r) { return r == Role::client ? "client" : "server"; }

namespace {

json range_to_wire(const LayerRange& r) { return json::array({r.first, r.last}); }

LayerRange range_from_wire(const json& v, const char* key) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_unsigned() || !v[1].is_number_unsigned())
    throw WireError(std::string("field '") + key + "': expected [first, last]");
  auto first = v[0].get<std::uint64_t>(), last = v[1].get<std::uint64_t>();
  if (first > last || last > kMaxLayers)
    throw WireError(std::string("field '") + key + "': bad layer range");
  return {static_cast<std::uint32_t>(first), static_cast<std::uint32_t>(last)};
}

constexpr std::uint64_t kU32 = 0xffffffffu;

}  // namespace

// Short keys keep the record small: it rides in gossip messages (docs/gossip.md lists them).
json to_wire(const NodeState& s) {
  json hw = {{"c", s.hardware.cores}, {"ram", s.hardware.ram_bytes},
             {"fr", s.hardware.free_ram_bytes}, {"gf", s.hardware.matmul_gflops}};
  if (!s.hardware.accelerator.empty()) hw["acc"] = s.hardware.accelerator;
  json models = json::array();
  for (const auto& m : s.models) {
    json mj = {{"n", m.name}, {"L", m.total_layers}};
    if (!m.file_hash.empty()) mj["h"] = m.file_hash;
    if (m.loaded.last > m.loaded.first) mj["ld"] = range_to_wire(m.loaded);
    if (!m.on_disk.empty()) {
      json disk = json::array();
      for (const auto& r : m.on_disk) disk.push_back(range_to_wire(r));
      mj["dk"] = std::move(disk);
    }
    if (!m.aliases.empty()) mj["al"] = m.aliases;
    if (m.context_length != 0) mj["cx"] = m.context_length;
    if (m.created != 0) mj["cr"] = m.created;
    if (m.entry) mj["en"] = true;
    if (m.split) mj["sp"] = true;
    if (!m.plan.empty()) mj["pl"] = m.plan;
    if (!m.experts.plan.empty())
      mj["ex"] = {{"p", m.experts.plan}, {"i", m.experts.index}, {"n", m.experts.count}, {"c", m.experts.covers}};
    models.push_back(std::move(mj));
  }
  json load = {{"a", s.load.active_requests}, {"q", s.load.queued}, {"p", s.load.parallel_slots},
               {"t", s.load.tokens_per_second}};
  if (s.load.requests_total) load["n"] = s.load.requests_total;
  if (s.load.generated_tokens_total) load["g"] = s.load.generated_tokens_total;
  json out = {{"v", s.state_version}, {"r", static_cast<int>(s.role)}, {"pv", s.protocol_version},
              {"hw", std::move(hw)}, {"lo", std::move(load)}};
  if (!s.api_address.empty()) out["a"] = s.api_address;
  if (!s.mesh_address.empty()) out["m"] = s.mesh_address;
  if (!s.software_version.empty()) out["sw"] = s.software_version;
  if (!models.empty()) out["md"] = std::move(models);
  if (!s.wanted.empty()) out["wm"] = s.wanted;
  if (!s.links.empty()) {
    json links = json::array();
    for (const auto& l : s.links) links.push_back(json::array({l.peer, l.rtt_us}));
    out["lk"] = std::move(links);
  }
  return out;
}

NodeState node_state_from_wire(const json& v) {
  require_map(v, "state");
  NodeState s;
  s.state_version = read_uint(v, "v", UINT64_MAX, 0, true);
  auto role = read_uint(v, "r", 1);
  s.role = role == 1 ? Role::client : Role::server;
  s.protocol_version = static_cast<std::uint32_t>(read_uint(v, "pv", kU32, 1));
  s.api_address = read_string(v, "a", kMaxStateString);
  s.mesh_address = read_string(v, "m", kMaxStateString);
  s.software_version = read_string(v, "sw", kMaxStateString);
  if (auto it = v.find("hw"); it != v.end()) {
    const json& hw = require_map(*it, "hw");
    s.hardware.cores = static_cast<std::uint32_t>(read_uint(hw, "c", kU32));
    s.hardware.ram_bytes = read_uint(hw, "ram", UINT64_MAX);
    s.hardware.free_ram_bytes = read_uint(hw, "fr", UINT64_MAX);
    s.hardware.matmul_gflops = read_double(hw, "gf");
    s.hardware.accelerator = read_string(hw, "acc", kMaxStateString);
  }
  if (const json* wanted = read_array(v, "wm", kMaxWanted))
    for (const json& w : *wanted) {
      if (!w.is_string() || w.get_ref<const std::string&>().size() > kMaxStateString)
        throw WireError("field 'wm': expected model names of at most 256 bytes");
      s.wanted.push_back(w.get<std::string>());
    }
  if (const json* models = read_array(v, "md", kMaxModels)) {
    for (const json& mj : *models) {
      require_map(mj, "md[]");
      ModelInfo m;
      m.name = read_string(mj, "n", kMaxStateString, true);
      m.file_hash = read_string(mj, "h", kMaxStateString);
      m.total_layers = static_cast<std::uint32_t>(read_uint(mj, "L", kMaxLayers));
      if (auto it = mj.find("ld"); it != mj.end()) m.loaded = range_from_wire(*it, "ld");
      if (const json* disk = read_array(mj, "dk", kMaxLayerRanges))
        for (const json& r : *disk) m.on_disk.push_back(range_from_wire(r, "dk"));
      if (const json* aliases = read_array(mj, "al", kMaxAliases))
        for (const json& a : *aliases) {
          if (!a.is_string() || a.get_ref<const std::string&>().size() > kMaxStateString)
            throw WireError("field 'al': expected names of at most 256 bytes");
          m.aliases.push_back(a.get<std::string>());
        }
      m.context_length = static_cast<std::uint32_t>(read_uint(mj, "cx", kU32));
      if (auto it = mj.find("cr"); it != mj.end()) {
        if (it->is_number_unsigned() && it->get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX))
          m.created = static_cast<std::int64_t>(it->get<std::uint64_t>());
        else if (it->is_number_integer() && !it->is_number_unsigned())
          m.created = it->get<std::int64_t>();
        else
          throw WireError("field 'cr': expected a 64-bit integer");
      }
      m.entry = read_bool(mj, "en");
      m.split = read_bool(mj, "sp");
      m.plan = read_string(mj, "pl", kMaxStateString);
      if (auto it = mj.find("ex"); it != mj.end()) {
        const json& ex = require_map(*it, "ex");
        m.experts.plan = read_string(ex, "p", kMaxStateString, true);
        m.experts.count = static_cast<std::uint32_t>(read_uint(ex, "n", kMaxExpertShards, 0, true));
        m.experts.index = static_cast<std::uint32_t>(read_uint(ex, "i", kMaxExpertShards, 0, true));
        if (m.experts.plan.empty() || m.experts.count == 0 || m.experts.index >= m.experts.count)
          throw WireError("field 'ex': expected a plan digest and shard index < count");
        if (const json* covers = read_array(ex, "c", kMaxExpertShards)) {
          if (covers->size() != m.experts.count) throw WireError("field 'ex.c': expected one coverage per shard");
          for (const json& c : *covers) {
            if (!c.is_number_unsigned() || c.get<std::uint64_t>() > 1000)
              throw WireError("field 'ex.c': expected per-mille coverages 0..1000");
            m.experts.covers.push_back(static_cast<std::uint16_t>(c.get<std::uint64_t>()));
          }
        }
      }
      s.models.push_back(std::move(m));
    }
  }
  if (auto it = v.find("lo"); it != v.end()) {
    const json& lo = require_map(*it, "lo");
    s.load.active_requests = static_cast<std::uint32_t>(read_uint(lo, "a", kU32));
    s.load.queued = static_cast<std::uint32_t>(read_uint(lo, "q", kU32));
    s.load.parallel_slots = static_cast<std::uint32_t>(read_uint(lo, "p", kU32));
    s.load.tokens_per_second = read_double(lo, "t");
    s.load.requests_total = read_uint(lo, "n", UINT64_MAX);
    s.load.generated_tokens_total = read_uint(lo, "g", UINT64_MAX);
  }
  if (const json* links = read_array(v, "lk", kMaxLinks))
    for (const json& l : *links) {
      if (!l.is_array() || l.size() != 2 || !l[0].is_string() || !l[1].is_number_unsigned() ||
          l[0].get_ref<const std::string&>().size() != kLinkPeerChars || l[1].get<std::uint64_t>() > kU32)
        throw WireError("field 'lk': expected [16 hex characters of a node id, round trip in microseconds]");
      const std::string& peer = l[0].get_ref<const std::string&>();
      if (peer.find_first_not_of("0123456789abcdef") != std::string::npos)
        throw WireError("field 'lk': a peer must be 16 lowercase hex characters");
      s.links.push_back({peer, static_cast<std::uint32_t>(l[1].get<std::uint64_t>())});
    }
  return s;
}

std::vector<std::uint8_t> encode_node_state(const NodeState& s) { return json::to_msgpack(to_wire(s)); }

NodeState decode_node_state(std::span<const std::uint8_t> bytes) {
  ParseLimits limits;
  limits.max_bytes = 64 * 1024;
  return node_state_from_wire(parse_msgpack(bytes, limits));
}

json to_json(const NodeState& s) {
  json links = json::array();
  for (const auto& l : s.links) links.push_back({{"peer", l.peer}, {"rtt_ms", l.rtt_us / 1000.0}});
  json models = json::array();
  for (const auto& m : s.models) {
    json disk = json::array();
    for (const auto& r : m.on_disk) disk.push_back({r.first, r.last});
    models.push_back({{"name", m.name},
                      {"file_hash", m.file_hash},
                      {"total_layers", m.total_layers},
                      {"layers_loaded", {m.loaded.first, m.loaded.last}},
                      {"layers_on_disk", std::move(disk)},
                      {"aliases", m.aliases},
                      {"context_length", m.context_length},
                      {"created", m.created},
                      {"entry", m.entry},
                      {"split", m.split},
                      {"plan", m.plan},
                      {"expert_shard", m.experts.plan.empty() ? json(nullptr)
                                                              : json{{"plan", m.experts.plan},
                                                                     {"index", m.experts.index},
                                                                     {"count", m.experts.count},
                                                                     {"covers_permille", m.experts.covers}}}});
  }
  return {{"role", role_name(s.role)},
          {"api_address", s.api_address},
          {"mesh_address", s.mesh_address},
          {"software_version", s.software_version},
          {"protocol_version", s.protocol_version},
          {"hardware",
           {{"cores", s.hardware.cores},
            {"ram_bytes", s.hardware.ram_bytes},
            {"free_ram_bytes", s.hardware.free_ram_bytes},
            {"matmul_gflops", s.hardware.matmul_gflops},
            {"accelerator", s.hardware.accelerator}}},
          {"models", std::move(models)},
          {"load",
           {{"active_requests", s.load.active_requests},
            {"queued", s.load.queued},
            {"parallel_slots", s.load.parallel_slots},
            {"tokens_per_second", s.load.tokens_per_second},
            {"requests_total", s.load.requests_total},
            {"generated_tokens_total", s.load.generated_tokens_total}}},
          {"wanted", s.wanted},
          {"links", links},
          {"state_version", s.state_version}};
}

}  // namespace llmesh::gossip
