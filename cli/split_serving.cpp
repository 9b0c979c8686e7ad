#include "cli/split_serving.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fetch/fetch_progress.h"
#include "log/event_log.h"
#include "fetch/gguf_ranges.h"
#include "fetch/package_fetch.h"
#include "package/package_model.h"

namespace llmesh::cli {

using namespace std::chrono_literals;
namespace stages = mesh::stages;

void add_split_options(CLI::App* sub, SplitOptions& o) {
  sub->add_option("--layers", o.layers,
                  "Run only layers A..B (A inclusive, B exclusive) of the model as a pipeline stage; the mesh "
                  "holds the rest (docs/stages.md)");
  sub->add_flag("--split", o.split,
                "Split the model over the mesh: the placement planner gives this node layers to run "
                "(-m must be a layer package)");
  sub->add_option("--hidden", o.hidden, "Hidden states between stages: f16, f32 (exact) or q8")
      ->check(CLI::IsMember({"f16", "f32", "q8"}))
      ->capture_default_str();
  sub->add_option("--memory", o.memory,
                  "Memory this node offers a split model, e.g. 6G (default: what the machine has free)");
  sub->add_option("--plan-lock", o.plan_lock,
                  "With --split: a JSON file pinning layer ranges to nodes, {\"model\": ID, \"stages\": [{\"node\": ID, \"layers\": [A, B]}]} (docs/stages.md)")
      ->check(CLI::ExistingFile);
  sub->add_option("--stage-ttl", o.stage_ttl_s, "Seconds an idle entry's KV is kept on this node's stage")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
}

LayerRange parse_layer_range(const std::string& text, int n_layer) {
  const auto dots = text.find("..");
  auto number = [&](const std::string& s) {
    if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      throw std::invalid_argument(fmt::format("--layers {}: expected A..B with whole numbers, e.g. 0..11", text));
    return std::stoi(s);
  };
  if (dots == std::string::npos)
    throw std::invalid_argument(fmt::format("--layers {}: expected A..B (first layer, end layer), e.g. 0..11", text));
  LayerRange r{number(text.substr(0, dots)), number(text.substr(dots + 2))};
  if (r.first >= r.last || r.last > n_layer)
    throw std::invalid_argument(
        fmt::format("--layers {}: the range must be non-empty and within the model's {} layers (0..{})", text,
                    n_layer, n_layer));
  return r;
}

uint64_t parse_memory_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) throw std::invalid_argument(fmt::format("--memory {}: expected a size like 512M or 6G", text));
  double v = 0;
  try {
    v = std::stod(text.substr(0, i));
  } catch (...) {
    throw std::invalid_argument(fmt::format("--memory {}: expected a size like 512M or 6G", text));
  }
  std::string unit = text.substr(i);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") mult = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") mult = 1024.0 * 1024 * 1024 * 1024;
  else throw std::invalid_argument(fmt::format("--memory {}: unknown unit '{}' (use K, M, G or T)", text, unit));
  const double bytes = v * mult;
  if (!std::isfinite(bytes) || bytes < 1 || bytes > 1e18)
    throw std::invalid_argument(fmt::format("--memory {}: out of range", text));
  return static_cast<uint64_t>(bytes);
}

PlanLock read_plan_lock(const std::string& path, int n_layer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(fmt::format("--plan-lock {}: cannot read the file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (1u << 20)) throw std::invalid_argument(fmt::format("--plan-lock {}: over 1 MiB", path));
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  auto bad = [&](const std::string& why) {
    return std::invalid_argument(fmt::format("--plan-lock {}: {}", path, why));
  };
  if (j.is_discarded() || !j.is_object()) throw bad("not a JSON object");
  PlanLock lock;
  if (!j.contains("model") || !j["model"].is_string() || j["model"].get<std::string>().empty())
    throw bad("\"model\" must be the model id (a non-empty string)");
  lock.model = j["model"].get<std::string>();
  if (!j.contains("stages") || !j["stages"].is_array() || j["stages"].empty() || j["stages"].size() > 1024)
    throw bad("\"stages\" must be a non-empty array of {\"node\", \"layers\"}");
  for (const auto& st : j["stages"]) {
    if (!st.is_object() || !st.contains("node") || !st["node"].is_string())
      throw bad("each stage needs \"node\": a node id (64 hex digits, `llmesh status --json`)");
    auto id = mesh::NodeId::from_hex(st["node"].get<std::string>());
    if (!id) throw bad(fmt::format("\"{}\" is not a node id (64 hex digits)", st["node"].get<std::string>()));
    const auto& l = st.value("layers", nlohmann::json());
    if (!l.is_array() || l.size() != 2 || !l[0].is_number_unsigned() || !l[1].is_number_unsigned())
      throw bad(fmt::format("node {}: \"layers\" must be [first, last) as two whole numbers", id->short_hex()));
    LayerRange r{static_cast<int>(std::min<uint64_t>(l[0].get<uint64_t>(), 1u << 20)),
                 static_cast<int>(std::min<uint64_t>(l[1].get<uint64_t>(), 1u << 20))};
    if (r.first >= r.last || r.last > n_layer)
      throw bad(fmt::format("node {}: layers [{}, {}) are not a non-empty range within the model's {} layers",
                            id->short_hex(), r.first, r.last, n_layer));
    for (const auto& [other, o] : lock.pins)
      if (r.first < o.last && o.first < r.last)
        throw bad(fmt::format("node {}: layers [{}, {}) overlap node {}'s [{}, {})", id->short_hex(), r.first, r.last,
                              other.substr(0, 12), o.first, o.last));
    if (!lock.pins.emplace(id->hex(), r).second) throw bad(fmt::format("node {} is listed twice", id->short_hex()));
  }
  return lock;
}

// The scheduler is made before the mesh node (its record reports the scheduler's load), the
// pipeline after (it needs the node's transport): this forwards to the pipeline once it exists.
class SplitServing::Adapter : public BatchModel {
 public:
  explicit Adapter(SplitServing& s) : s_(s) {}
  int n_vocab() const override { return s_.entry_model_->config().n_vocab; }
  int n_ctx() const override { return s_.entry_cache_->n_ctx(); }
  int n_slots() const override { return s_.entry_cache_->n_seq(); }
  std::span<const float> run(const Batch& b) override {
    if (!s_.pipeline_) throw std::runtime_error("the split model is not attached to the mesh yet");
    return s_.pipeline_->run(b);
  }
  void truncate(int slot, int n) override {
    if (s_.pipeline_)
      s_.pipeline_->truncate(slot, n);
    else
      s_.entry_cache_->truncate(slot, n);
  }

 private:
  SplitServing& s_;
};

SplitServing::SplitServing(const EngineOptions& engine, const SplitOptions& opt, int parallel, bool quiet)
    : engine_(engine), opt_(opt), quiet_(quiet), parallel_(parallel), source_(engine.model) {
  if (opt_.split && !opt_.layers.empty())
    throw std::invalid_argument("--split and --layers exclude each other: let the planner place layers, or pin them");
  auto f = stages::parse_hidden_format(opt_.hidden);
  if (!f) throw std::invalid_argument("--hidden must be f16, f32 or q8");
  format_ = *f;
  if (!opt_.memory.empty()) memory_budget_ = parse_memory_size(opt_.memory);
  threads_ = engine.threads > 0 ? engine.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  ModelOptions entry_layers;
  entry_layers.layers = {0, 0};
  if (mesh::is_gguf_url(source_)) {
    // A plain GGUF over http(s): the header, the embeddings and later the stage's layers are
    // read by byte ranges into a sparse local copy.
    if (opt_.split)
      throw std::invalid_argument(
          "--split needs a layer package (a directory or URL): make one with `llmesh package MODEL.gguf DIR`; "
          "a plain GGUF URL works with --layers");
    gguf_copy_ = fetch_gguf(LayerRange{0, 0}).string();
  } else if (mesh::is_url(source_)) {
    mesh::PackageFetchOptions fo;
    fo.cache_root = engine.fetch_cache;
    if (!quiet_) fo.progress = mesh::stderr_progress();
    mesh::FetchedPackage p = mesh::fetch_package(source_, {0, 0}, fo);
    package_dir_ = p.dir.string();
    manifest_ = p.manifest;
  } else if (std::filesystem::is_directory(source_)) {
    if (!is_package_dir(source_))
      throw std::runtime_error(source_ + " is a directory without a manifest.json (not a layer package)");
    package_dir_ = source_;
    manifest_ = read_manifest(source_);
  } else if (opt_.split) {
    throw std::invalid_argument(
        "--split needs a layer package (a directory or URL): make one with `llmesh package MODEL.gguf DIR`");
  }
  if (manifest_) {
    PackageLoadOptions lo;
    lo.layers = {0, 0};
    entry_model_ = load_package_model(package_dir_, *manifest_, lo);
  } else {
    entry_model_ = Model::load(gguf_copy_.empty() ? source_ : gguf_copy_, entry_layers);
  }
  offer_package();
  model_id_ = !opt_.name.empty() ? opt_.name
              : manifest_        ? manifest_->model_id
                                 : std::filesystem::path(source_).stem().string();
  const ModelConfig& c = entry_model_->config();
  KvCacheOptions kv;
  kv.n_ctx = engine.ctx > 0 ? engine.ctx : std::min(4096, c.n_ctx_train);
  kv.n_seq = parallel;
  kv.type = engine.kv_type == "f32" ? DType::F32 : DType::F16;
  entry_cache_ = std::make_unique<KvCache>(c, 0, 0, kv);
  entry_pool_ = std::make_unique<ThreadPool>(1);
  entry_forward_ = std::make_unique<Forward>(*entry_model_, *entry_cache_, *entry_pool_);
  adapter_ = std::make_unique<Adapter>(*this);
  if (!opt_.plan_lock.empty()) {
    if (!opt_.split) throw std::invalid_argument("--plan-lock goes with --split (it pins ranges for the planner)");
    lock_ = read_plan_lock(opt_.plan_lock, c.n_layer);
    if (lock_->model != model_id_)
      throw std::invalid_argument(fmt::format("--plan-lock {}: it is for model {}, this node serves {}", opt_.plan_lock,
                                              lock_->model, model_id_));
  }
  if (!opt_.layers.empty()) {
    LayerRange r = parse_layer_range(opt_.layers, c.n_layer);
    if (mesh::is_url(source_) && gguf_copy_.empty())
      pending_layers_ = r;  // fetched once the node has joined: from peers first
    else
      held_ = {load_stage(r), r};
  }
}

SplitServing::~SplitServing() { stop(); }

BatchModel& SplitServing::batch_model() { return *adapter_; }

// Lines end with " (reason code)" on a refusal or failure (docs/logging.md); quiet keeps only those.
void SplitServing::log(const std::string& line) const {
  logs::LogEvent e = logs::from_line("split", line);
  if (!quiet_ || e.level >= logs::Level::warn) logs::emit(e);
}

void SplitServing::stop() {
  stopping_ = true;
  if (planner_.joinable()) planner_.join();
  std::shared_ptr<stages::StageServer> s;
  {
    std::lock_guard lk(mu_);
    s = held_.server;
  }
  if (s) s->stop();
  artifacts_.stop();
}

std::shared_ptr<stages::StageServer> SplitServing::load_stage(LayerRange r) {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Model> m;
  if (!gguf_copy_.empty()) {
    fetch_gguf(r);
  } else if (mesh::is_url(source_)) {
    mesh::PackageFetchOptions fo;
    fo.cache_root = engine_.fetch_cache;
    if (!quiet_) fo.progress = mesh::stderr_progress();
    // From the mesh's nodes that hold these files first, from the URL for the rest.
    mesh::FetchedPackage p;
    if (node_) {
      auto peers = std::make_shared<mesh::PeerSource>(
          node_->transport(), [this](const mesh::ArtifactRef& ref) { return artifact_holders(ref); });
      mesh::FallbackSource src({peers, std::shared_ptr<mesh::ArtifactSource>(mesh::make_source(source_))});
      p = mesh::fetch_package(src, source_, r, fo);
    } else {
      p = mesh::fetch_package(source_, r, fo);
    }
    log(fmt::format("llmesh: layers [{}, {}) of {}: {} fetched, {} from the cache", r.first, r.last, model_id_,
                    mesh::human_bytes(static_cast<double>(p.bytes_fetched)),
                    mesh::human_bytes(static_cast<double>(p.bytes_cached))));
    package_dir_ = p.dir.string();
    manifest_ = p.manifest;
  }
  if (manifest_) {
    PackageLoadOptions lo;
    lo.layers = r;
    m = load_package_model(package_dir_, *manifest_, lo);
  } else {
    ModelOptions mo;
    mo.layers = r;
    m = Model::load(gguf_copy_.empty() ? source_ : gguf_copy_, mo);
  }
  offer_package();
  stages::StageServerOptions so;
  so.threads = threads_;
  so.max_ctx = 1 << 17;
  so.max_seq = stages::kMaxSeq;
  so.kv_type = engine_.kv_type == "f32" ? DType::F32 : DType::F16;
  so.idle_ttl = std::chrono::seconds(opt_.stage_ttl_s);
  so.log = logs::line_sink("stage", quiet_);
  log(fmt::format("llmesh: running layers [{}, {}) of {} ({} layers) as a stage; loaded in {:.2f} s", r.first, r.last,
                  model_id_, n_layer(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()));
  return std::make_shared<stages::StageServer>(std::shared_ptr<const Model>(std::move(m)), model_id_, so);
}

std::filesystem::path SplitServing::fetch_gguf(LayerRange r) {
  mesh::PackageFetchOptions fo;
  fo.cache_root = engine_.fetch_cache;
  if (!quiet_) fo.progress = mesh::stderr_progress();
  mesh::FetchedGguf g = mesh::fetch_gguf_layers(source_, r, fo);
  log(fmt::format("llmesh: {}: layers [{}, {}) of {}: {} fetched by byte ranges, {} from the cache", source_, r.first,
                  r.last, g.n_layer, mesh::human_bytes(static_cast<double>(g.bytes_fetched)),
                  mesh::human_bytes(static_cast<double>(g.bytes_cached))));
  return g.path;
}

void SplitServing::offer_package() {
  if (!manifest_ || package_dir_.empty()) return;
  try {
    artifacts_.add_package(package_dir_, *manifest_);
  } catch (const std::exception& e) {
    log(fmt::format("llmesh: not offering {} to peers: {} (reason package_offer_failed)", package_dir_, e.what()));
  }
  // Which layer files are here (gossiped as "on disk": peers ask this node for them).
  // A layer of an MoE package with expert artifacts is here only with every one of its experts.
  std::vector<bool> have(static_cast<size_t>(manifest_->n_layer), false);
  std::vector<bool> lacks_expert(static_cast<size_t>(manifest_->n_layer), false);
  for (const Artifact& a : manifest_->artifacts) {
    std::error_code ec;
    if ((a.kind != "layer" && a.kind != "expert") || a.layer < 0 || a.layer >= manifest_->n_layer) continue;
    const bool present = std::filesystem::file_size(std::filesystem::path(package_dir_) / a.path, ec) == a.bytes && !ec;
    if (a.kind == "layer" && present) have[static_cast<size_t>(a.layer)] = true;
    if (a.kind == "expert" && !present) lacks_expert[static_cast<size_t>(a.layer)] = true;
  }
  for (size_t i = 0; i < have.size(); ++i) have[i] = have[i] && !lacks_expert[i];
  std::vector<gossip::LayerRange> runs;
  for (int i = 0; i < manifest_->n_layer;) {
    if (!have[static_cast<size_t>(i)]) {
      ++i;
      continue;
    }
    int j = i;
    while (j < manifest_->n_layer && have[static_cast<size_t>(j)]) ++j;
    runs.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(j)});
    i = j;
  }
  std::lock_guard lk(mu_);
  disk_ranges_ = std::move(runs);
}

std::vector<mesh::NodeId> SplitServing::artifact_holders(const mesh::ArtifactRef& ref) const {
  if (!node_ || !manifest_) return {};
  const Artifact* art = nullptr;
  for (const Artifact& a : manifest_->artifacts)
    if (a.path == ref.path) art = &a;
  if (!art) return {};
  std::vector<std::pair<double, mesh::NodeId>> found;
  for (const auto& v : node_->members()) {
    if (v.self || !v.id || !v.connected || !v.member.has_state) continue;
    if (v.member.status != gossip::MemberStatus::alive) continue;
    for (const auto& m : v.member.state.models) {
      if (m.name != model_id_ || static_cast<int>(m.total_layers) != n_layer()) continue;
      bool has = art->kind == "metadata" || art->kind == "embeddings";  // every node of a split model holds them
      for (const auto& r : m.on_disk) {
        if ((art->kind == "layer" || art->kind == "expert") && art->layer >= static_cast<int>(r.first) &&
            art->layer < static_cast<int>(r.last))
          has = true;
        if (art->kind == "output" && static_cast<int>(r.last) == n_layer()) has = true;
      }
      if (has) found.emplace_back(v.rtt ? static_cast<double>(v.rtt->count()) : 1e12, *v.id);
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<mesh::NodeId> out;
  for (const auto& [rtt, id] : found) out.push_back(id);
  return out;
}

uint64_t SplitServing::range_bytes(LayerRange r) const {
  if (!manifest_ || r.last <= r.first) return 0;
  uint64_t total = 0;
  for (const Artifact* a : manifest_->needed_for(r.first, r.last))
    if (a->kind == "layer" || a->kind == "expert" || a->kind == "output") total += a->bytes;
  return total;
}

std::vector<stages::StageCandidate> SplitServing::candidates() const {
  std::vector<stages::StageCandidate> out;
  for (const auto& v : node_->members()) {
    if (v.self || !v.id || !v.member.has_state) continue;
    if (v.member.status == gossip::MemberStatus::dead || v.member.status == gossip::MemberStatus::left) continue;
    for (const auto& m : v.member.state.models) {
      if (m.name != model_id_ || static_cast<int>(m.total_layers) != n_layer() || m.loaded.last <= m.loaded.first)
        continue;
      double rtt = v.rtt ? static_cast<double>(v.rtt->count()) / 1000.0 : 0.0;
      out.push_back({*v.id, static_cast<int>(m.loaded.first), static_cast<int>(m.loaded.last), rtt});
    }
  }
  std::lock_guard lk(mu_);
  if (held_.server && held_.range.last > held_.range.first)
    out.push_back({node_->id(), held_.range.first, held_.range.last, 0.001});  // this node: no network
  return out;
}

void SplitServing::attach(mesh::MeshNode& node) {
  node_ = &node;
  stages::PipelineOptions po;
  po.model_id = model_id_;
  po.format = format_;
  po.log = logs::line_sink("pipeline", quiet_);
  po.open_local = [this](const stages::StageOpen& o) -> std::unique_ptr<stages::LocalStageSession> {
    std::shared_ptr<stages::StageServer> s;
    {
      std::lock_guard lk(mu_);
      s = held_.server;
    }
    return s ? s->open_local(o) : nullptr;
  };
  auto alive = [this](const mesh::NodeId& id) {
    for (const auto& v : node_->members())
      if (v.id && *v.id == id)
        return v.member.status != gossip::MemberStatus::dead && v.member.status != gossip::MemberStatus::left;
    return false;
  };
  pipeline_ = std::make_unique<stages::PipelineBatchModel>(*entry_forward_, node.transport(),
                                                           [this] { return candidates(); }, alive, po);
  planner_ = std::thread([this] {
    if (pending_layers_) {
      // Wait (a little) for the mesh, so the layers come from peers that hold them.
      const auto until = std::chrono::steady_clock::now() + 3s;
      while (!stopping_ && node_->members().size() < 2 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(50ms);
      try {
        auto server = load_stage(*pending_layers_);
        std::lock_guard lk(mu_);
        held_ = {server, *pending_layers_};
      } catch (const std::exception& e) {
        log(fmt::format("llmesh: cannot load layers [{}, {}): {} (reason stage_load_failed)", pending_layers_->first,
                        pending_layers_->last, e.what()));
      }
    }
    while (!stopping_) {
      try {
        route_ok_ = pipeline_->route_available();
        if (opt_.split) plan_once();
      } catch (const std::exception& e) {
        log(fmt::format("llmesh: split: {} (reason split_failed)", e.what()));
      }
      for (int i = 0; i < 5 && !stopping_; ++i) std::this_thread::sleep_for(100ms);
    }
  });
}

void SplitServing::plan_once() {
  namespace pl = mesh::planner;
  const std::string self = node_->id().hex();
  std::vector<gossip::Member> members;
  std::vector<std::pair<std::string, gossip::LayerRange>> loaded;
  uint64_t max_epoch = 0;
  auto consider = [&](gossip::Member m) {
    if (!m.has_state) return;
    const gossip::ModelInfo* info = nullptr;
    for (const auto& mi : m.state.models)
      if (mi.name == model_id_ && mi.split && static_cast<int>(mi.total_layers) == n_layer()) info = &mi;
    if (!info) return;
    if (auto slash = info->plan.find('/'); slash != std::string::npos) {
      try {
        max_epoch = std::max<uint64_t>(max_epoch, std::stoull(info->plan.substr(0, slash)));
      } catch (...) {
      }
    }
    if (m.status == gossip::MemberStatus::alive && info->loaded.last > info->loaded.first)
      loaded.emplace_back(m.id, info->loaded);
    // What it could hold: its free memory plus what it holds already.
    m.state.hardware.free_ram_bytes += range_bytes({static_cast<int>(info->loaded.first), static_cast<int>(info->loaded.last)});
    members.push_back(std::move(m));
  };
  for (const auto& v : node_->members())
    if (!v.self) consider(v.member);
  gossip::Member me;
  me.id = self;
  me.status = gossip::MemberStatus::alive;
  me.has_state = true;
  me.state = node_->state();
  describe(me.state);
  consider(me);

  pl::ModelShape shape;
  shape.model = model_id_;
  shape.n_layer = n_layer();
  shape.layer_bytes.assign(static_cast<size_t>(n_layer()), 0);
  for (const Artifact& a : manifest_->artifacts) {
    // A layer of an MoE package is its layer file and its expert files.
    if ((a.kind == "layer" || a.kind == "expert") && a.layer >= 0 && a.layer < n_layer())
      shape.layer_bytes[static_cast<size_t>(a.layer)] += a.bytes;
    if (a.kind == "output") shape.output_bytes += a.bytes;
  }
  const ModelConfig& c = entry_model_->config();
  shape.kv_bytes_per_token_per_layer = 2ull * static_cast<uint64_t>(c.kv_dim()) * (engine_.kv_type == "f32" ? 4 : 2);
  shape.ctx_tokens = entry_cache_->n_ctx();
  shape.sessions = parallel_;
  pl::PlanOptions po;
  if (memory_budget_) {  // --memory is what the user spares: no further headroom
    po.memory_headroom_bytes = 0;
    po.memory_headroom_fraction = 0;
  }
  auto cands = pl::candidates_from(members);
  if (lock_)
    for (auto& cand : cands)
      if (auto it = lock_->pins.find(cand.id); it != lock_->pins.end())
        cand.pinned = gossip::LayerRange{static_cast<uint32_t>(it->second.first), static_cast<uint32_t>(it->second.last)};

  // The plan the mesh follows now, read from what the split nodes have loaded.
  std::optional<pl::Plan> current;
  std::sort(loaded.begin(), loaded.end(), [](const auto& a, const auto& b) { return a.second.first < b.second.first; });
  if (!loaded.empty()) {
    pl::Plan p;
    p.epoch = std::max<uint64_t>(1, max_epoch);
    p.model = model_id_;
    p.n_layer = static_cast<uint32_t>(n_layer());
    uint32_t at = 0;
    for (const auto& [id, r] : loaded) {
      if (r.first != at) break;
      p.stages.push_back({id, r, 0, 0});
      at = r.last;
    }
    if (at == static_cast<uint32_t>(n_layer())) {
      p.digest = pl::plan_digest(p);
      current = p;
    }
  }
  // Layers of a node that left are not loaded anywhere: re-plan from the last plan then, so the
  // nodes that stay keep their layers (every node had the same last plan).
  if (!current) {
    std::lock_guard lk(mu_);
    if (plan_) current = plan_;
  }
  pl::PlanResult res = current ? pl::replan(*current, shape, cands, {}, po) : pl::plan(shape, cands, {}, po, max_epoch + 1);
  if (res && current) {
    // The same placement as the mesh follows: keep its epoch (replan compares byte figures too,
    // which the loaded ranges do not carry).
    bool same = res.plan->stages.size() == current->stages.size();
    for (size_t i = 0; same && i < current->stages.size(); ++i)
      same = res.plan->stages[i].node == current->stages[i].node && res.plan->stages[i].layers == current->stages[i].layers;
    if (same) {
      res.plan->epoch = current->epoch;
      res.plan->digest = pl::plan_digest(*res.plan);
    }
  }
  if (!res) {
    std::lock_guard lk(mu_);
    if (res.error != plan_error_) log(fmt::format("llmesh: split: no plan yet: {} (reason no_plan)", res.error));
    plan_error_ = res.error;
    return;
  }
  const pl::Plan& plan = *res.plan;
  LayerRange target{0, 0};
  for (const auto& st : plan.stages)
    if (st.node == self) target = {static_cast<int>(st.layers.first), static_cast<int>(st.layers.last)};
  LayerRange have;
  {
    std::lock_guard lk(mu_);
    plan_error_.clear();
    if (!plan_ || plan_->digest != plan.digest) {
      std::string desc;
      for (const auto& st : plan.stages)
        desc += fmt::format(" {}[{},{})", st.node.substr(0, 12), st.layers.first, st.layers.last);
      log(fmt::format("llmesh: split: plan epoch {}:{}", plan.epoch, desc));
    }
    plan_ = plan;
    have = held_.range;
  }
  if (target.first == have.first && target.last == have.last) return;
  if (target.last <= target.first) {
    // Not in the plan any more: keep serving until another node has these layers loaded.
    for (const auto& [id, r] : loaded)
      if (id != self && static_cast<int>(r.first) <= have.first && static_cast<int>(r.last) >= have.last) {
        std::shared_ptr<stages::StageServer> old;
        {
          std::lock_guard lk(mu_);
          old = std::move(held_.server);
          held_ = {};
        }
        log(fmt::format("llmesh: split: layers [{}, {}) are held elsewhere now; dropping them", have.first, have.last));
        if (old) old->stop();
        return;
      }
    return;
  }
  auto server = load_stage(target);
  std::shared_ptr<stages::StageServer> old;
  {
    std::lock_guard lk(mu_);
    old = std::move(held_.server);
    held_ = {server, target};
  }
  if (old) old->stop();  // its sessions reset: their entries re-route to the new holders
}

void SplitServing::describe(gossip::NodeState& s) const {
  gossip::ModelInfo* m = nullptr;
  for (auto& mi : s.models)
    if (mi.name == model_id_) m = &mi;
  if (!m) {
    s.models.emplace_back();
    m = &s.models.back();
    m->name = model_id_;
  }
  std::lock_guard lk(mu_);
  m->total_layers = static_cast<uint32_t>(n_layer());
  m->loaded = {static_cast<uint32_t>(held_.range.first), static_cast<uint32_t>(held_.range.last)};
  m->on_disk = disk_ranges_;
  if (m->on_disk.empty() && held_.range.last > held_.range.first) m->on_disk.push_back(m->loaded);
  m->split = opt_.split;
  m->entry = route_ok_.load();
  m->plan = plan_ ? fmt::format("{}/{}", plan_->epoch, plan_->digest.substr(0, 16)) : std::string();
  if (memory_budget_) {
    const uint64_t used = range_bytes(held_.range);
    s.hardware.free_ram_bytes = std::min<uint64_t>(s.hardware.free_ram_bytes, memory_budget_ > used ? memory_budget_ - used : 0);
  }
}

std::string SplitServing::metrics_text() const {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, v);
  };
  if (pipeline_) {
    auto p = pipeline_->stats();
    metric("llmesh_pipeline_steps_total", "counter", "Forward passes of this entry through the stages.", static_cast<double>(p.steps));
    metric("llmesh_pipeline_stage_messages_total", "counter", "Step messages this entry sent to stages on other nodes.",
           static_cast<double>(p.stage_messages));
    metric("llmesh_pipeline_bytes_sent_total", "counter", "Bytes of step messages sent to stages.", static_cast<double>(p.bytes_sent));
    metric("llmesh_pipeline_bytes_received_total", "counter", "Bytes of stage replies received.", static_cast<double>(p.bytes_received));
    metric("llmesh_pipeline_recoveries_total", "counter", "Steps recovered after a stage failed.", static_cast<double>(p.recoveries));
    metric("llmesh_pipeline_replayed_tokens_total", "counter", "Positions re-run to rebuild a lost stage's KV.",
           static_cast<double>(p.replayed_tokens));
    metric("llmesh_pipeline_route_stages", "gauge", "Stages of the current route (0: none yet).", static_cast<double>(p.route.size()));
  }
  std::shared_ptr<stages::StageServer> server;
  LayerRange r;
  {
    std::lock_guard lk(mu_);
    server = held_.server;
    r = held_.range;
  }
  metric("llmesh_stage_layers", "gauge", "Layers this node runs as a stage.", static_cast<double>(r.last - r.first));
  if (server) {
    auto s = server->stats();
    metric("llmesh_stage_sessions", "gauge", "Entry sessions open on this node's stage.", s.streams);
    metric("llmesh_stage_steps_total", "counter", "Steps this node's stage ran.", static_cast<double>(s.steps));
    metric("llmesh_stage_tokens_total", "counter", "Positions this node's stage computed.", static_cast<double>(s.tokens));
    metric("llmesh_stage_errors_total", "counter", "Refused streams and failed steps.", static_cast<double>(s.errors));
    metric("llmesh_stage_kv_bytes", "gauge", "KV cache reserved by the stage's sessions.", static_cast<double>(s.kv_bytes));
  }
  return out;
}

std::string SplitServing::unavailable() const {
  if (!pipeline_) return "the node has not joined its mesh yet";
  if (pipeline_->route_available()) return {};
  std::string have;
  for (const auto& c : candidates())
    have += fmt::format("{}{}[{},{})", have.empty() ? "" : ", ", c.node.short_hex(), c.first, c.last);
  return fmt::format("no route through the mesh for layers [0, {}) of {} (nodes holding layers: {})", n_layer(),
                     model_id_, have.empty() ? "none" : have);
}

bool SplitServing::take_stream(std::shared_ptr<mesh::Stream>& s) {
  if (mesh::ArtifactServer::is_artifact_stream(s->header())) {
    artifacts_.serve(s);
    return true;
  }
  if (!stages::is_stage_stream(s->header())) return false;
  std::shared_ptr<stages::StageServer> server;
  {
    std::lock_guard lk(mu_);
    server = held_.server;
  }
  if (server)
    server->accept(s);
  else
    s->reset(static_cast<mesh::ResetCode>(stages::kResetStageWrongModel));
  return true;
}

nlohmann::json SplitServing::status_json() const {
  nlohmann::json j = {{"model", model_id_}, {"n_layer", n_layer()}, {"split", opt_.split},
                      {"hidden", stages::hidden_format_name(format_)}, {"entry", route_ok_.load()}};
  std::shared_ptr<stages::StageServer> server;
  {
    std::lock_guard lk(mu_);
    j["layers"] = {held_.range.first, held_.range.last};
    if (plan_) j["plan"] = mesh::planner::to_json(*plan_);
    if (!plan_error_.empty()) j["plan_error"] = plan_error_;
    server = held_.server;
  }
  if (memory_budget_) j["memory_budget"] = memory_budget_;
  auto as = artifacts_.stats();
  j["artifacts_served"] = {{"files", artifacts_.size()}, {"streams", as.streams}, {"bytes", as.bytes_sent}};
  if (server) {
    auto st = server->stats();
    j["stage"] = {{"sessions", st.streams}, {"sessions_total", st.streams_total}, {"steps", st.steps},
                  {"tokens", st.tokens},    {"bytes_in", st.bytes_in},        {"bytes_out", st.bytes_out},
                  {"errors", st.errors},    {"kv_bytes", st.kv_bytes}};
  }
  if (pipeline_) {
    auto ps = pipeline_->stats();
    nlohmann::json route = nlohmann::json::array();
    for (const auto& h : ps.route) route.push_back({{"node", h.node.hex()}, {"layers", {h.first, h.last}}});
    j["pipeline"] = {{"route", route},
                     {"steps", ps.steps},
                     {"stage_messages", ps.stage_messages},
                     {"bytes_sent", ps.bytes_sent},
                     {"bytes_received", ps.bytes_received},
                     {"recoveries", ps.recoveries},
                     {"replayed_tokens", ps.replayed_tokens},
                     {"last_recovery_ms", ps.last_recovery_ms},
                     {"last_failure", ps.last_failure}};
  }
  return j;
}

}  // namespace llmesh::cli
