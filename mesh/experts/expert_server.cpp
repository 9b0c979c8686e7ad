#include "experts/expert_server.h"

#include <fmt/format.h>

#include "experts/expert_protocol.h"

namespace llmesh::mesh::experts {

ExpertServer::ExpertServer(const Model& model, std::string plan_digest, ExpertServerOptions opt)
    : model_(model), plan_(std::move(plan_digest)), opt_(std::move(opt)), pool_(std::max(1, opt_.threads)), ffn_(pool_) {}

ExpertServer::~ExpertServer() { stop(); }

void ExpertServer::stop() {
  if (stopping_.exchange(true)) return;
  std::vector<Worker> workers;
  {
    std::lock_guard lk(mu_);
    for (auto& s : streams_) s->reset(static_cast<ResetCode>(kResetExpertsStopping));
    workers.swap(workers_);
  }
  for (auto& w : workers) w.thread.join();
}

ExpertServerStats ExpertServer::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

void ExpertServer::accept(std::shared_ptr<Stream> stream) {
  std::string why;
  try {
    ExpertsOpen o = decode_open(stream->header());
    if (o.plan != plan_) why = fmt::format("plan {} (this node follows {})", o.plan, plan_);
  } catch (const ExpertFormatError& e) {
    why = e.what();
  }
  std::vector<Worker> finished;
  std::lock_guard lk(mu_);
  for (auto it = workers_.begin(); it != workers_.end();)
    if (*it->done) {
      finished.push_back(std::move(*it));
      it = workers_.erase(it);
    } else {
      ++it;
    }
  for (auto& w : finished) w.thread.join();  // already returned: joins at once
  if (stopping_ || !why.empty() || stats_.streams >= opt_.max_streams) {
    ++stats_.errors;
    if (opt_.log)
      opt_.log(stopping_       ? std::string("experts: refused a stream: stopping (reason experts_stopping)")
               : !why.empty() ? "experts: refused a stream: " + why + " (reason experts_bad_open)"
                              : fmt::format("experts: refused a stream: {} streams open already (reason experts_busy)",
                                            stats_.streams));
    stream->reset(static_cast<ResetCode>(stopping_ ? kResetExpertsStopping
                                         : !why.empty() ? kResetExpertsBadOpen
                                                        : kResetExpertsBusy));
    return;
  }
  ++stats_.streams;
  ++stats_.streams_total;
  streams_.push_back(stream);
  auto done = std::make_shared<std::atomic<bool>>(false);
  workers_.push_back({std::thread([this, stream, done] {
                        serve(stream);
                        *done = true;
                      }),
                      done});
}

void ExpertServer::serve(std::shared_ptr<Stream> stream) {
  const ModelConfig& c = model_.config();
  const int E = c.n_embd;
  std::vector<float> out;
  while (!stopping_) {
    auto r = stream->read(std::chrono::milliseconds(500));
    if (r.status == Stream::Status::TIMEOUT) continue;
    if (r.status != Stream::Status::OK) break;
    ExpertReply reply;
    try {
      ExpertRequest req = decode_request(r.message, E);
      reply.id = req.id;
      std::string bad;
      if (req.layer < model_.first_layer() || req.layer >= model_.last_layer())
        bad = fmt::format("layer {} is not held here", req.layer);
      const LayerWeights* w = bad.empty() ? &model_.layer(req.layer) : nullptr;
      uint64_t rows = 0;
      for (const auto& call : req.calls) {
        if (!bad.empty()) break;
        if (call.expert < 0 || call.expert >= c.n_expert || !w->held[call.expert])
          bad = fmt::format("expert {} of layer {} is not held here", call.expert, req.layer);
        rows += static_cast<uint64_t>(call.n);
      }
      if (!bad.empty()) {
        reply.ok = false;
        reply.code = kErrBadRequest;
        reply.message = bad;
      } else {
        std::lock_guard lk(compute_mu_);
        for (const auto& call : req.calls) {
          std::vector<float> y(static_cast<size_t>(call.n) * E);
          const auto& x = w->experts[call.expert];
          ffn_.run(x.gate, x.up, x.down, E, c.n_ff_expert, call.x.data(), call.n, y.data());
          reply.outputs.push_back(std::move(y));
        }
      }
      std::lock_guard lk(mu_);
      ++stats_.requests;
      stats_.rows += rows;
      if (!reply.ok) ++stats_.errors;
    } catch (const ExpertFormatError& e) {
      // A message that breaks the format: the stream is no longer trustworthy.
      if (opt_.log) opt_.log(std::string("experts: bad request, stream reset: ") + e.what() + " (reason experts_bad_request)");
      std::lock_guard lk(mu_);
      ++stats_.errors;
      stream->reset(ResetCode::PROTOCOL_ERROR);
      break;
    } catch (const std::exception& e) {
      reply.ok = false;
      reply.code = kErrFailed;
      reply.message = e.what();
      reply.outputs.clear();
    }
    if (stream->write(encode_reply(reply), std::chrono::seconds(10)) != Stream::Status::OK) break;
  }
  std::lock_guard lk(mu_);
  --stats_.streams;
  std::erase_if(streams_, [&](const std::shared_ptr<Stream>& s) { return s == stream; });
}

}  // namespace llmesh::mesh::experts
