#include "stages/stage_server.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "gossip/codec.h"
#include "model/forward.h"
#include "model/kv_cache.h"

namespace llmesh::mesh::stages {

using Clock = std::chrono::steady_clock;

bool is_stage_stream(std::span<const uint8_t> header) {
  try {
    gossip::ParseLimits limits;
    limits.max_bytes = 4096;
    nlohmann::json v = gossip::parse_msgpack(header, limits);
    return v.is_object() && v.contains("t") && v["t"] == kStageStreamType;
  } catch (...) {
    return false;
  }
}

struct StageServer::Session {
  std::shared_ptr<Stream> stream;  // null: an in-process session
  StageOpen open;
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<Forward> forward;
  Batch batch;
};

struct LocalStageSession::Impl {
  std::shared_ptr<StageServer> server;
  std::shared_ptr<StageServer::Session> session;
};

LocalStageSession::~LocalStageSession() {
  if (impl_) impl_->server->release(impl_->session);
}

StepReply LocalStageSession::step(StepRequest& req) {
  if (impl_->server->stopping()) throw std::runtime_error("the local stage stopped (its layers moved)");
  return impl_->server->run_step(*impl_->session, req);
}

StageServer::StageServer(std::shared_ptr<const Model> model, std::string model_id, StageServerOptions opt)
    : model_(std::move(model)), model_id_(std::move(model_id)), opt_(std::move(opt)), pool_(opt_.threads) {}

StageServer::~StageServer() { stop(); }

void StageServer::log(const std::string& line) const {
  if (opt_.log) opt_.log(line);
}

bool StageServer::stopping() const {
  std::lock_guard lk(mu_);
  return stopping_;
}

void StageServer::stop() {
  std::unique_lock lk(mu_);
  stopping_ = true;
  for (auto& s : sessions_)
    if (s->stream) s->stream->reset(static_cast<ResetCode>(kResetStageStopping));
  cv_.wait(lk, [&] {
    for (auto& s : sessions_)
      if (s->stream) return false;
    return true;
  });
}

StageServerStats StageServer::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

std::string StageServer::check_open(const StageOpen& o, uint32_t& code) const {
  if (o.model != model_id_ || o.first != model_->first_layer() || o.last != model_->last_layer()) {
    code = kResetStageWrongModel;
    return fmt::format("asked for {} layers [{}, {}); this node runs {} [{}, {})", o.model, o.first, o.last, model_id_,
                       model_->first_layer(), model_->last_layer());
  }
  if (o.n_ctx > opt_.max_ctx || o.n_seq > opt_.max_seq) {
    code = kResetStageBusy;
    return fmt::format("asked for {} slots x {} positions; this stage allows {} x {}", o.n_seq, o.n_ctx, opt_.max_seq,
                       opt_.max_ctx);
  }
  return {};
}

std::shared_ptr<StageServer::Session> StageServer::make_session(const StageOpen& o, uint32_t& code, std::string& why) {
  why = check_open(o, code);
  if (!why.empty()) return nullptr;
  auto s = std::make_shared<Session>();
  s->open = o;
  try {
    KvCacheOptions kv;
    kv.n_ctx = o.n_ctx;
    kv.n_seq = o.n_seq;
    kv.type = opt_.kv_type;
    s->cache = std::make_unique<KvCache>(model_->config(), model_->first_layer(), model_->last_layer(), kv);
  } catch (const std::exception& e) {
    code = kResetStageBusy;
    why = fmt::format("KV cache: {}", e.what());
    return nullptr;
  }
  {
    std::lock_guard lk(mu_);
    if (stopping_) {
      code = kResetStageStopping;
      why = "stopping";
      return nullptr;
    }
    if (static_cast<int>(sessions_.size()) >= opt_.max_streams) {
      code = kResetStageBusy;
      why = fmt::format("{} sessions open already", sessions_.size());
      return nullptr;
    }
    if (stats_.kv_bytes + s->cache->bytes() > opt_.max_kv_bytes) {
      code = kResetStageBusy;
      why = fmt::format("KV of {} MiB would pass the {} MiB limit", s->cache->bytes() >> 20, opt_.max_kv_bytes >> 20);
      return nullptr;
    }
    stats_.kv_bytes += s->cache->bytes();
    ++stats_.streams;
    ++stats_.streams_total;
    sessions_.push_back(s);
  }
  s->forward = std::make_unique<Forward>(*model_, *s->cache, pool_);
  return s;
}

void StageServer::release(const std::shared_ptr<Session>& s) {
  std::lock_guard lk(mu_);
  stats_.kv_bytes -= s->cache->bytes();
  --stats_.streams;
  sessions_.remove(s);
  cv_.notify_all();
}

std::unique_ptr<LocalStageSession> StageServer::open_local(const StageOpen& open) {
  uint32_t code = 0;
  std::string why;
  auto s = make_session(open, code, why);
  if (!s) throw std::runtime_error(fmt::format("local stage refused: {}", why));
  std::unique_ptr<LocalStageSession> l(new LocalStageSession());
  l->impl_ = std::make_unique<LocalStageSession::Impl>();
  l->impl_->server = shared_from_this();
  l->impl_->session = std::move(s);
  log(fmt::format("stage: local session: {} layers [{}, {}), {} slots x {}", open.model, open.first, open.last,
                  open.n_seq, open.n_ctx));
  return l;
}

// The reason code of a stage stream's reset code, for log lines (docs/logging.md).
static const char* stage_reset_reason(uint32_t code) {
  switch (code) {
    case kResetStageBadRequest: return "stage_bad_request";
    case kResetStageWrongModel: return "stage_wrong_model";
    case kResetStageBusy: return "stage_busy";
    case kResetStageIdle: return "stage_idle";
    case kResetStageStopping: return "stage_stopping";
  }
  return "stage_refused";
}

void StageServer::accept(std::shared_ptr<Stream> stream) {
  auto refuse = [&](uint32_t code, const std::string& why) {
    log(fmt::format("stage: refused a stream from {}: {} (reason {})", stream->peer().short_hex(), why,
                    stage_reset_reason(code)));
    {
      std::lock_guard lk(mu_);
      ++stats_.errors;
    }
    stream->reset(static_cast<ResetCode>(code));
  };
  StageOpen o;
  try {
    o = decode_open(stream->header());
  } catch (const std::exception& e) {
    return refuse(kResetStageBadRequest, e.what());
  }
  uint32_t code = 0;
  std::string why;
  auto s = make_session(o, code, why);
  if (!s) return refuse(code, why);
  s->stream = stream;
  std::thread([this, s] {
    serve(s);
    release(s);
  }).detach();
}

StepReply StageServer::run_step(Session& s, StepRequest& step) {
  const ModelConfig& cfg = model_->config();
  const bool last = model_->has_head();
  Batch& batch = s.batch;
  StepReply reply;
  reply.id = step.id;
  const auto t0 = Clock::now();
  try {
    batch.clear();
    decode_hidden(step.hidden, static_cast<size_t>(step.n_tokens()), static_cast<size_t>(cfg.n_embd), s.open.format,
                  batch.hidden);
    batch.pos = std::move(step.pos);
    batch.seq = std::move(step.seq);
    batch.output = std::move(step.output);
    for (auto [seq, n] : step.truncate)
      if (n < s.cache->length(seq)) s.cache->truncate(seq, n);
    std::span<const float> out;
    {
      std::lock_guard lk(compute_mu_);
      out = s.forward->run(batch);
    }
    reply.compute_us =
        static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
    if (last) {
      const int V = cfg.n_vocab;
      size_t row = 0;
      for (int32_t k : step.out_top) {
        const float* r = out.data() + row * static_cast<size_t>(V);
        if (k <= 0 || k >= V) {
          reply.row_k.push_back(0);
          reply.logits.insert(reply.logits.end(), r, r + V);
        } else {
          reply.row_k.push_back(k);
          top_candidates(r, V, k, reply.ids, reply.logits);
        }
        ++row;
      }
    } else {
      reply.hidden = encode_hidden(out, static_cast<size_t>(cfg.n_embd), s.open.format);
    }
  } catch (const StageFormatError& e) {
    reply = {};
    reply.id = step.id;
    reply.error = kErrStepInvalid;
    reply.message = e.what();
  } catch (const std::invalid_argument& e) {
    reply = {};
    reply.id = step.id;
    reply.error = kErrStepInvalid;
    reply.message = e.what();
  } catch (const std::exception& e) {
    reply = {};
    reply.id = step.id;
    reply.error = kErrStepFailed;
    reply.message = e.what();
  }
  std::lock_guard lk(mu_);
  ++stats_.steps;
  if (reply.error) {
    ++stats_.errors;
  } else {
    stats_.tokens += static_cast<uint64_t>(batch.n_tokens());
  }
  return reply;
}

void StageServer::serve(const std::shared_ptr<Session>& s) {
  const StageOpen& o = s->open;
  const std::string who = s->stream->peer().short_hex();
  log(fmt::format("stage: session from {}: {} layers [{}, {}), {} slots x {}, hidden {}", who, o.model, o.first, o.last,
                  o.n_seq, o.n_ctx, hidden_format_name(o.format)));
  for (;;) {
    auto msg = s->stream->read(opt_.idle_ttl);
    if (msg.status == Stream::Status::TIMEOUT) {
      log(fmt::format("stage: session from {} idle for {} s: KV freed", who,
                      std::chrono::duration_cast<std::chrono::seconds>(opt_.idle_ttl).count()));
      s->stream->reset(static_cast<ResetCode>(kResetStageIdle));
      return;
    }
    if (msg.status != Stream::Status::OK) {
      if (msg.status == Stream::Status::END) s->stream->end();
      log(fmt::format("stage: session from {} ended", who));
      return;
    }
    StepRequest step;
    try {
      step = decode_step(msg.message, o, model_->config().n_embd);
    } catch (const std::exception& e) {
      log(fmt::format("stage: bad step from {}: {} (reason stage_bad_request)", who, e.what()));
      {
        std::lock_guard lk(mu_);
        ++stats_.errors;
      }
      s->stream->reset(static_cast<ResetCode>(kResetStageBadRequest));
      return;
    }
    const uint64_t id = step.id;
    StepReply reply = run_step(*s, step);
    std::vector<uint8_t> bytes = encode_reply(reply);
    {
      std::lock_guard lk(mu_);
      stats_.bytes_in += msg.message.size();
      stats_.bytes_out += bytes.size();
    }
    if (reply.error) log(fmt::format("stage: step {} from {} failed: {} (reason stage_step_failed)", id, who, reply.message));
    if (s->stream->write(bytes) != Stream::Status::OK) {
      log(fmt::format("stage: session from {} went away (reason stage_peer_gone)", who));
      return;
    }
  }
}

}  // namespace llmesh::mesh::stages
