// A node's part in serving a model split across the mesh (docs/stages.md): `serve --layers A..B`
// (this node runs layers [A, B) as a stage) or `serve --split` (the placement planner, run
// alike on every node from the gossiped view, says which layers this node runs; it fetches
// only those, loads them and swaps them in when the plan changes).
//
// Every such node is also an entry: it holds the tokenizer and the embeddings, and answers API
// requests for the model through a pipeline over the nodes holding the layers (its own stage
// in process). It tells the mesh it is an entry once a route over all layers exists.
#pragma once
#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/engine_options.h"
#include "fetch/peer_artifacts.h"
#include "gossip/node_state.h"
#include "node/mesh_node.h"
#include "package/manifest.h"
#include "planner/planner.h"
#include "scheduler/scheduler.h"
#include "stages/pipeline.h"
#include "stages/stage_server.h"

namespace llmesh::cli {

struct SplitOptions {
  std::string layers;        // --layers A..B
  bool split = false;        // --split
  std::string hidden = "f16";
  std::string memory;        // --memory: what this node offers the planner, e.g. "6G"
  std::string plan_lock;     // --plan-lock FILE: layer ranges pinned to nodes (with --split)
  int stage_ttl_s = 600;     // --stage-ttl: an idle session's KV on a stage is freed after this
  std::string name;          // the model id (serve --name); empty: the package's, or the file name
  bool enabled() const { return split || !layers.empty(); }
};
void add_split_options(CLI::App* sub, SplitOptions& o);

// "A..B" -> [A, B); throws std::invalid_argument naming the problem.
LayerRange parse_layer_range(const std::string& text, int n_layer);
// "512M", "6G", "1.5GiB", "2000000000" -> bytes; throws std::invalid_argument.
uint64_t parse_memory_size(const std::string& text);

// A plan lock file (docs/stages.md): {"model": ID, "stages": [{"node": 64 hex digits,
// "layers": [A, B]}, ...]}. The planner keeps those nodes on those ranges and places the rest
// around them. Throws std::invalid_argument naming the file and what is wrong.
struct PlanLock {
  std::string model;
  std::map<std::string, LayerRange> pins;  // node id (hex) -> range
};
PlanLock read_plan_lock(const std::string& path, int n_layer);

class SplitServing {
 public:
  // Loads the entry's part (tokenizer, embeddings) and, with --layers, the stage's layers.
  // -m must be a layer package (directory or URL) for --split; --layers also takes a GGUF file.
  SplitServing(const EngineOptions& engine, const SplitOptions& opt, int parallel, bool quiet);
  ~SplitServing();

  const std::string& model_id() const { return model_id_; }
  const Model& entry_model() const { return *entry_model_; }
  int n_layer() const { return entry_model_->config().n_layer; }
  int threads() const { return threads_; }
  // What the scheduler drives: the pipeline, once attach() made it.
  BatchModel& batch_model();

  // The mesh node is up: build the pipeline over its transport, start planning (--split).
  void attach(mesh::MeshNode& node);
  // Edits this node's gossip record (see LocalNode::describe).
  void describe(gossip::NodeState& s) const;
  // Takes stage streams; false for other streams.
  bool take_stream(std::shared_ptr<mesh::Stream>& s);
  nlohmann::json status_json() const;
  // Prometheus counters of the pipeline (this node as an entry) and of its stage.
  std::string metrics_text() const;
  // Empty when a route over all layers exists now; else why not (for 503 answers).
  std::string unavailable() const;
  void stop();

 private:
  class Adapter;
  struct Held {
    std::shared_ptr<mesh::stages::StageServer> server;
    LayerRange range{0, 0};  // [0, 0): nothing
  };
  std::shared_ptr<mesh::stages::StageServer> load_stage(LayerRange r);
  std::filesystem::path fetch_gguf(LayerRange r);  // a plain GGUF URL: the range's bytes
  // Nodes that should have an artifact of the package (the layer on disk, or any node of the
  // model for the metadata and embeddings), connected, nearest first.
  std::vector<mesh::NodeId> artifact_holders(const mesh::ArtifactRef& ref) const;
  void offer_package();  // serve this node's package files to peers
  std::vector<mesh::stages::StageCandidate> candidates() const;
  void plan_loop();
  void plan_once();
  uint64_t range_bytes(LayerRange r) const;
  void log(const std::string& line) const;

  EngineOptions engine_;
  SplitOptions opt_;
  bool quiet_;
  int parallel_;
  int threads_ = 1;
  std::string model_id_;
  std::string source_;        // -m as given
  std::string package_dir_;   // a local package directory (or the fetch cache's copy)
  std::string gguf_copy_;     // a plain GGUF URL: the sparse local copy
  std::optional<PackageManifest> manifest_;
  uint64_t memory_budget_ = 0;  // 0: no --memory
  std::optional<PlanLock> lock_;
  std::optional<LayerRange> pending_layers_;  // --layers from a package URL: loaded once joined (peers)
  std::vector<gossip::LayerRange> disk_ranges_;  // layer files of the package present here
  mesh::stages::HiddenFormat format_ = mesh::stages::HiddenFormat::F16;

  std::unique_ptr<Model> entry_model_;
  std::unique_ptr<KvCache> entry_cache_;
  std::unique_ptr<ThreadPool> entry_pool_;
  std::unique_ptr<Forward> entry_forward_;
  std::unique_ptr<Adapter> adapter_;
  mesh::ArtifactServer artifacts_;  // this node's package files, for peers fetching them
  std::unique_ptr<mesh::stages::PipelineBatchModel> pipeline_;
  mesh::MeshNode* node_ = nullptr;

  mutable std::mutex mu_;
  Held held_;
  std::optional<mesh::planner::Plan> plan_;
  std::string plan_error_;
  std::atomic<bool> route_ok_{false};
  std::atomic<bool> stopping_{false};
  std::thread planner_;
};

}  // namespace llmesh::cli
