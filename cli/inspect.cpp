// llmesh inspect MODEL.gguf: metadata and tensor table of a GGUF file.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "gguf/gguf.h"

namespace llmesh::cli {
namespace {

using Json = nlohmann::ordered_json;  // keeps the file's key order

struct InspectOptions {
  std::string model;
  bool json = false;
  size_t max_array = 8;
};

// A float32 printed as the shortest decimal that reads back as the same float (1e-05, not
// 9.999999747378752e-06), then held as a double.
double tidy_float(GgufType t, double v) {
  if (t != GgufType::FLOAT32 || !std::isfinite(v)) return v;
  return std::strtod(fmt::format("{}", static_cast<float>(v)).c_str(), nullptr);
}

Json scalar_json(const GgufValue& v) {
  switch (v.type) {
    case GgufType::BOOL: return v.u != 0;
    case GgufType::FLOAT32: case GgufType::FLOAT64: return tidy_float(v.type, v.f);
    case GgufType::STRING: return std::string(v.s);
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
      return v.u;
    default: return v.i;
  }
}

Json value_json(const GgufValue& v, size_t max_array) {
  if (v.type != GgufType::ARRAY) return scalar_json(v);
  Json a = Json::array();
  uint64_t n = max_array ? std::min<uint64_t>(v.count, max_array) : v.count;
  for (uint64_t k = 0; k < n; ++k) {
    if (v.elem == GgufType::STRING) a.push_back(std::string(v.strings[k]));
    else if (v.elem == GgufType::ARRAY) a.push_back(value_json(v.items[k], max_array));
    else a.push_back(scalar_json(v.array_scalar(k)));
  }
  return a;
}

// "uint32", or "string[512]" for an array ("array[3]" for an array of arrays).
std::string type_text(const GgufValue& v) {
  if (v.type != GgufType::ARRAY) return gguf_type_name(v.type);
  return fmt::format("{}[{}]", gguf_type_name(v.elem), v.count);
}

std::string dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string value_text(const GgufValue& v, size_t max_array) {
  std::string s;
  if (v.type == GgufType::STRING) {
    std::string_view sv = v.s;
    bool cut = sv.size() > 100;
    s = dump(std::string(cut ? sv.substr(0, 100) : sv));
    if (cut) s += fmt::format(" ... ({} bytes)", sv.size());
    return s;
  }
  if (v.type != GgufType::ARRAY) return dump(scalar_json(v));
  Json a = value_json(v, max_array);
  std::string body;
  for (size_t k = 0; k < a.size(); ++k) body += (k ? ", " : "") + dump(a[k]);
  if (body.size() > 140) body = body.substr(0, 137) + "...";
  bool more = max_array && v.count > max_array;
  return "[" + body + (more ? ", ...]" : "]");
}

int run_inspect(const InspectOptions& o) {
  auto f = GgufFile::open(o.model);
  uint64_t total_bytes = 0, total_params = 0;
  std::map<std::string, size_t> type_counts;
  for (const auto& t : f->tensors()) {
    total_bytes += t.nbytes;
    total_params += static_cast<uint64_t>(t.n_elements());
    ++type_counts[dtype_name(t.type)];
  }
  if (o.json) {
    Json j;
    j["path"] = f->path();
    j["version"] = f->version();
    j["file_size"] = f->file_size();
    j["alignment"] = f->alignment();
    j["data_offset"] = f->data_offset();
    j["tensor_bytes"] = total_bytes;
    j["parameters"] = total_params;
    Json md = Json::object(), types = Json::object();
    for (const auto& [k, v] : f->metadata()) {
      md[k] = value_json(v, o.max_array);
      types[k] = type_text(v);
    }
    j["metadata"] = md;
    j["metadata_types"] = types;
    Json ts = Json::array();
    for (const auto& t : f->tensors()) {
      Json tj;
      tj["name"] = t.name;
      tj["type"] = dtype_name(t.type);
      tj["shape"] = std::vector<int64_t>(t.ne, t.ne + t.n_dims);
      tj["offset"] = t.offset;
      tj["bytes"] = t.nbytes;
      ts.push_back(tj);
    }
    j["tensors"] = ts;
    std::puts(j.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    return 0;
  }

  fmt::print("{}\n  GGUF v{}, {} bytes, alignment {}, tensor data at offset {}\n", f->path(),
             f->version(), f->file_size(), f->alignment(), f->data_offset());
  std::string types;
  for (const auto& [name, n] : type_counts) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, name);
  fmt::print("  {} parameters in {} tensors ({:.2f} MiB: {})\n", total_params,
             f->tensors().size(), total_bytes / 1048576.0, types.empty() ? "none" : types);

  size_t kw = 3, tw = 4;
  for (const auto& [k, v] : f->metadata()) {
    kw = std::max(kw, k.size());
    tw = std::max(tw, type_text(v).size());
  }
  kw = std::min<size_t>(kw, 60);
  fmt::print("\nmetadata ({} keys)\n", f->metadata().size());
  fmt::print("  {:<{}}  {:<{}}  {}\n", "key", kw, "type", tw, "value");
  for (const auto& [k, v] : f->metadata()) {
    std::string key = dump(Json(k));  // quoted and escaped: keys come from the file
    key = key.substr(1, key.size() - 2);
    fmt::print("  {:<{}}  {:<{}}  {}\n", key, kw, type_text(v), tw, value_text(v, o.max_array));
  }

  size_t nw = 4, sw = 5;
  for (const auto& t : f->tensors()) {
    nw = std::max(nw, t.name.size());
    sw = std::max(sw, t.shape_string().size());
  }
  nw = std::min<size_t>(nw, 60);
  fmt::print("\ntensors ({})\n", f->tensors().size());
  fmt::print("  {:<{}}  {:<7}  {:<{}}  {:>12}  {:>12}\n", "name", nw, "type", "shape", sw,
             "offset", "bytes");
  for (const auto& t : f->tensors()) {
    std::string name = dump(Json(t.name));
    name = name.substr(1, name.size() - 2);
    fmt::print("  {:<{}}  {:<7}  {:<{}}  {:>12}  {:>12}\n", name, nw, dtype_name(t.type),
               t.shape_string(), sw, t.offset, t.nbytes);
  }
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
