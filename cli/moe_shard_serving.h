// What `serve --moe-plan P --moe-shard I` adds to a node (docs/moe.md): its gossip record and
// /health block, an ExpertServer that runs its experts for the other shards of the plan, and
// with --moe-exact a RemoteExpertClient so its own forward pass routes over every expert.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/moe_shard_options.h"
#include "experts/expert_server.h"
#include "experts/remote_experts.h"
#include "gossip/node_state.h"
#include "node/mesh_node.h"

namespace llmesh::cli {

class MoeShardServing {
 public:
  MoeShardServing(moe::MoePlan plan, const MoeShardOptions& opt, const Model& model, int threads, bool quiet);
  ~MoeShardServing();

  const gossip::ExpertShard& record() const { return record_; }
  size_t experts_held() const { return held_; }
  // Takes "experts" streams (the mesh's stream handler); false for any other stream.
  bool take_stream(std::shared_ptr<mesh::Stream>& s);
  // With --moe-exact: ask the plan's other shards, known from the node's gossip, for the experts
  // this one lacks. Call before requests arrive.
  void attach(mesh::MeshNode& node, Forward& forward);
  nlohmann::json status_json() const;
  void stop();

 private:
  moe::MoePlan plan_;
  MoeShardOptions opt_;
  const Model& model_;
  bool quiet_;
  gossip::ExpertShard record_;
  size_t held_ = 0;
  std::unique_ptr<mesh::experts::ExpertServer> server_;
  std::unique_ptr<mesh::experts::RemoteExpertClient> client_;
};

}  // namespace llmesh::cli
