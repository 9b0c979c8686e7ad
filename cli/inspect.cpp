// llmesh inspect MODEL.gguf: metadata and tensor table of a GGUF file.
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "gguf/gguf.h"

namespace llmesh::cli {
namespace {

struct InspectOptions {
  std::string model;
  bool json = false;
  size_t max_array = 8;
};

nlohmann::json scalar_json(const GgufValue& v) {
  switch (v.type) {
    case GgufType::BOOL: return v.u != 0;
    case GgufType::FLOAT32: case GgufType::FLOAT64: return v.f;
    case GgufType::STRING: return std::string(v.s);
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
      return v.u;
    default: return v.i;
  }
}

nlohmann::json value_json(const GgufValue& v, size_t max_array) {
  if (v.type != GgufType::ARRAY) return scalar_json(v);
  nlohmann::json a = nlohmann::json::array();
  uint64_t n = max_array ? std::min<uint64_t>(v.count, max_array) : v.count;
  for (uint64_t k = 0; k < n; ++k) {
    if (v.elem == GgufType::STRING) a.push_back(std::string(v.strings[k]));
    else if (v.elem == GgufType::ARRAY) a.push_back(value_json(v.items[k], max_array));
    else if (v.elem == GgufType::FLOAT32 || v.elem == GgufType::FLOAT64) a.push_back(v.array_number(k));
    else if (v.elem == GgufType::BOOL) a.push_back(v.array_int(k) != 0);
    else if (v.elem == GgufType::UINT64) a.push_back(static_cast<uint64_t>(v.array_number(k)));
    else a.push_back(v.array_int(k));
  }
  return a;
}

std::string value_text(const GgufValue& v, size_t max_array) {
  if (v.type == GgufType::STRING) {
    std::string s(v.s);
    if (s.size() > 120) s = s.substr(0, 117) + "...";
    return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  if (v.type == GgufType::ARRAY) {
    std::string body = value_json(v, max_array).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (body.size() > 160) body = body.substr(0, 157) + "...";
    return fmt::format("{}[{}] {}{}", gguf_type_name(v.elem), v.count, body,
                       max_array && v.count > max_array ? " ..." : "");
  }
  return scalar_json(v).dump();
}

int run_inspect(const InspectOptions& o) {
  auto f = GgufFile::open(o.model);
  uint64_t total_bytes = 0, total_params = 0;
  for (const auto& t : f->tensors()) {
    total_bytes += t.nbytes;
    total_params += static_cast<uint64_t>(t.n_elements());
  }
  if (o.json) {
    nlohmann::json j;
    j["path"] = f->path();
    j["version"] = f->version();
    j["file_size"] = f->file_size();
    j["alignment"] = f->alignment();
    j["data_offset"] = f->data_offset();
    j["tensor_bytes"] = total_bytes;
    j["parameters"] = total_params;
    nlohmann::json md = nlohmann::json::object();
    for (const auto& [k, v] : f->metadata()) md[k] = value_json(v, o.max_array);
    j["metadata"] = md;
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : f->tensors()) {
      nlohmann::json tj;
      tj["name"] = t.name;
      tj["type"] = dtype_name(t.type);
      tj["shape"] = std::vector<int64_t>(t.ne, t.ne + t.n_dims);
      tj["offset"] = t.offset;
      tj["bytes"] = t.nbytes;
      ts.push_back(tj);
    }
    j["tensors"] = ts;
    std::puts(j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  fmt::print("{}: GGUF v{}, {} bytes, alignment {}, data at {}\n", f->path(), f->version(),
             f->file_size(), f->alignment(), f->data_offset());
  fmt::print("{} parameters in {} tensors ({:.2f} MiB)\n\n", total_params, f->tensors().size(),
             total_bytes / 1048576.0);
  fmt::print("metadata ({} keys):\n", f->metadata().size());
  for (const auto& [k, v] : f->metadata())
    fmt::print("  {:<44} {:<8} {}\n", k, gguf_type_name(v.type), value_text(v, o.max_array));
  fmt::print("\ntensors:\n  {:<40} {:<8} {:<24} {:>14} {:>12}\n", "name", "type", "shape",
             "offset", "bytes");
  for (const auto& t : f->tensors())
    fmt::print("  {:<40} {:<8} {:<24} {:>14} {:>12}\n", t.name, dtype_name(t.type),
               t.shape_string(), t.offset, t.nbytes);
  return 0;
}

}  // namespace

Runner add_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  auto* sub = app.add_subcommand("inspect", "Print a GGUF file's metadata and tensor table");
  sub->add_option("model", o->model, "GGUF file")->required();
  sub->add_flag("--json", o->json, "Print one JSON object instead of text");
  sub->add_option("--max-array", o->max_array,
                  "Array elements shown per metadata value (0: all)")->capture_default_str();
  return [o] { return run_inspect(*o); };
}

}  // namespace llmesh::cli
