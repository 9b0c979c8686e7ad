#include "cli/moe_shard_serving.h"

#include <cmath>
#include <cstdio>

#include "experts/expert_protocol.h"
#include "log/event_log.h"

namespace llmesh::cli {

MoeShardServing::MoeShardServing(moe::MoePlan plan, const MoeShardOptions& opt, const Model& model, int threads,
                                 bool quiet)
    : plan_(std::move(plan)), opt_(opt), model_(model), quiet_(quiet) {
  const auto& shards = plan_.shards();
  const auto& mine = shards[opt_.shard];
  for (const auto& layer : mine) held_ += layer.size();
  record_.plan = plan_.digest();
  record_.index = static_cast<uint32_t>(opt_.shard);
  record_.count = static_cast<uint32_t>(shards.size());
  for (const auto& other : shards)
    record_.covers.push_back(static_cast<uint16_t>(std::lround(1000 * moe::coverage(mine, other))));
  mesh::experts::ExpertServerOptions so;
  so.threads = std::max(1, threads);
  so.log = logs::line_sink("experts", quiet, "llmesh serve: ");
  server_ = std::make_unique<mesh::experts::ExpertServer>(model_, record_.plan, so);
}

MoeShardServing::~MoeShardServing() { stop(); }

void MoeShardServing::stop() {
  if (client_) client_->disable();
  if (server_) server_->stop();
}

bool MoeShardServing::take_stream(std::shared_ptr<mesh::Stream>& s) {
  if (!mesh::experts::is_experts_stream(s->header())) return false;
  server_->accept(s);
  return true;
}

void MoeShardServing::attach(mesh::MeshNode& node, Forward& forward) {
  if (!opt_.exact) return;
  mesh::experts::RemoteExpertOptions ro;
  ro.max_rtt = std::chrono::microseconds(static_cast<int64_t>(opt_.exact_max_rtt_ms * 1000));
  ro.log = logs::line_sink("experts", quiet_, "llmesh serve: ");
  const std::string digest = record_.plan;
  auto holders = [&node, digest] {
    std::vector<mesh::experts::ExpertHolder> out;
    for (const auto& v : node.members()) {
      if (v.self || !v.id || !v.member.has_state) continue;
      if (v.member.status != gossip::MemberStatus::alive) continue;
      for (const auto& m : v.member.state.models)
        if (m.experts.plan == digest) out.push_back({*v.id, m.experts.index});
    }
    return out;
  };
  client_ = std::make_unique<mesh::experts::RemoteExpertClient>(node.transport(), digest, plan_.shards(), opt_.shard,
                                                                model_.config().n_embd, holders, ro);
  forward.set_remote_experts(client_.get());
}

nlohmann::json MoeShardServing::status_json() const {
  nlohmann::json j = {{"plan", record_.plan},
                      {"shard", opt_.shard},
                      {"shards", plan_.shards().size()},
                      {"experts", held_},
                      {"experts_total", static_cast<size_t>(plan_.model.n_layer) * plan_.model.n_expert},
                      {"bytes", opt_.shard < static_cast<int>(plan_.shard_bytes.size()) ? plan_.shard_bytes[opt_.shard] : 0},
                      {"covers_permille", record_.covers},
                      {"exact", opt_.exact}};
  if (opt_.shard < static_cast<int>(plan_.chosen().quality.size()))
    j["quality"] = plan_.chosen().quality[opt_.shard].to_json(plan_.gate);
  auto ss = server_->stats();
  j["served_for_peers"] = {{"streams", ss.streams}, {"requests", ss.requests}, {"rows", ss.rows}, {"errors", ss.errors}};
  if (client_) {
    auto cs = client_->stats();
    j["asked_of_peers"] = {{"requests", cs.requests}, {"rows", cs.rows}, {"failures", cs.failures},
                           {"seconds", cs.seconds}, {"max_rtt_ms", opt_.exact_max_rtt_ms}};
  }
  return j;
}

}  // namespace llmesh::cli
