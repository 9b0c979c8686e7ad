#include "stages/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

namespace llmesh::mesh::stages {

using Clock = std::chrono::steady_clock;

std::optional<std::vector<StageHop>> find_route(const std::vector<StageCandidate>& candidates, int first,
                                                int n_layer, const std::set<NodeId>& avoid) {
  std::vector<StageHop> route;
  int cur = first;
  while (cur < n_layer) {
    const StageCandidate* best = nullptr;
    for (const auto& c : candidates) {
      if (c.first != cur || c.last <= cur || c.last > n_layer || avoid.count(c.node)) continue;
      if (!best) {
        best = &c;
        continue;
      }
      auto rtt = [](const StageCandidate& x) { return x.rtt_ms > 0 ? x.rtt_ms : std::numeric_limits<double>::max(); };
      if (c.last != best->last) {
        if (c.last > best->last) best = &c;
      } else if (rtt(c) != rtt(*best)) {
        if (rtt(c) < rtt(*best)) best = &c;
      } else if (c.node < best->node) {
        best = &c;
      }
    }
    if (!best) return std::nullopt;
    route.push_back({best->node, best->first, best->last});
    cur = best->last;
  }
  return route;
}

struct PipelineBatchModel::Link {
  StageHop hop;
  std::shared_ptr<Stream> stream;            // a stage on another node
  std::unique_ptr<LocalStageSession> local;  // the stage on this node
  HiddenFormat format = HiddenFormat::F16;   // of the hidden states this hop takes and returns
};

PipelineBatchModel::PipelineBatchModel(Forward& local, Transport& transport, CandidateSource candidates,
                                       AliveCheck alive, PipelineOptions opt)
    : local_(local),
      transport_(transport),
      candidates_(std::move(candidates)),
      alive_(std::move(alive)),
      opt_(std::move(opt)),
      cfg_(local.model().config()) {
  if (!local_.model().has_embedding() || local_.model().has_head())
    throw std::invalid_argument(fmt::format("a pipeline entry runs layers [0, k) with k < {}; this model has [{}, {})",
                                            cfg_.n_layer, local_.model().first_layer(), local_.model().last_layer()));
  history_.resize(static_cast<size_t>(local_.cache().n_seq()));
  remote_len_.assign(history_.size(), 0);
}

PipelineBatchModel::~PipelineBatchModel() {
  for (auto& l : links_)
    if (l && l->stream) l->stream->reset(ResetCode::CANCEL);
}

int PipelineBatchModel::n_vocab() const { return cfg_.n_vocab; }
int PipelineBatchModel::n_ctx() const { return local_.cache().n_ctx(); }
int PipelineBatchModel::n_slots() const { return local_.cache().n_seq(); }

PipelineStats PipelineBatchModel::stats() const {
  std::lock_guard lk(stats_mu_);
  return stats_;
}

bool PipelineBatchModel::route_available() const {
  return find_route(candidates_(), local_.model().last_layer(), cfg_.n_layer).has_value();
}

void PipelineBatchModel::truncate(int slot, int n) {
  local_.cache().truncate(slot, n);
  auto& h = history_.at(static_cast<size_t>(slot));
  if (static_cast<size_t>(n) < h.size()) h.resize(static_cast<size_t>(n));
  remote_len_[static_cast<size_t>(slot)] = std::min(remote_len_[static_cast<size_t>(slot)], n);
  for (auto& [s, len] : pending_truncate_)
    if (s == slot) {
      len = std::min(len, n);
      return;
    }
  pending_truncate_.emplace_back(slot, n);
}

void PipelineBatchModel::drop_route(const std::string& why) {
  for (auto& l : links_)
    if (l && l->stream) l->stream->reset(ResetCode::CANCEL);
  links_.clear();  // and local sessions: their KV is freed
  route_.clear();
  std::fill(remote_len_.begin(), remote_len_.end(), 0);
  pending_truncate_.clear();  // the next stages start empty
  std::lock_guard lk(stats_mu_);
  stats_.route.clear();
  stats_.last_failure = why;
}

void PipelineBatchModel::ensure_route(bool recovering) {
  if (!route_.empty()) return;
  const int first = local_.model().last_layer();
  const auto deadline = Clock::now() + (recovering ? opt_.recovery_timeout : opt_.route_wait);
  for (;;) {
    const auto now = Clock::now();
    std::set<NodeId> avoid;
    for (auto it = avoid_.begin(); it != avoid_.end();) {
      if (now - it->second > opt_.avoid_for) {
        it = avoid_.erase(it);
      } else {
        avoid.insert(it->first);
        ++it;
      }
    }
    const auto cands = candidates_();
    auto r = find_route(cands, first, cfg_.n_layer, avoid);
    if (!r && !avoid.empty()) {
      // Only through a node that failed lately: take it again if it is connected (it came back).
      std::set<NodeId> gone;
      for (const auto& id : avoid)
        if (!transport_.connected(id)) gone.insert(id);
      r = find_route(cands, first, cfg_.n_layer, gone);
    }
    if (r) {
      route_ = *r;
      links_.clear();
      for (const auto& hop : route_) {
        auto l = std::make_unique<Link>();
        l->hop = hop;
        links_.push_back(std::move(l));
      }
      std::fill(remote_len_.begin(), remote_len_.end(), 0);
      std::string desc;
      for (const auto& h : route_) desc += fmt::format(" {}[{},{})", h.node.short_hex(), h.first, h.last);
      if (opt_.log) opt_.log(fmt::format("pipeline: route for layers [{}, {}):{}", first, cfg_.n_layer, desc));
      std::lock_guard lk(stats_mu_);
      stats_.route = route_;
      return;
    }
    if (now >= deadline) {
      std::string have;
      for (const auto& c : cands)
        have += fmt::format("{}{}[{},{}){}", have.empty() ? "" : ", ", c.node.short_hex(), c.first, c.last,
                            avoid.count(c.node) ? " (failed)" : "");
      throw std::runtime_error(fmt::format("no route through the mesh for layers [{}, {}) of {} (nodes: {})", first,
                                           cfg_.n_layer, opt_.model_id, have.empty() ? "none" : have));
    }
    std::this_thread::sleep_for(opt_.poll);
  }
}

PipelineBatchModel::Link& PipelineBatchModel::link(size_t i) {
  Link& l = *links_.at(i);
  if (l.stream || l.local) return l;
  StageOpen o;
  o.model = opt_.model_id;
  o.first = l.hop.first;
  o.last = l.hop.last;
  o.n_seq = local_.cache().n_seq();
  o.n_ctx = local_.cache().n_ctx();
  if (l.hop.node == transport_.id()) {
    o.format = l.format = HiddenFormat::F32;  // no network: exact
    try {
      if (opt_.open_local) l.local = opt_.open_local(o);
    } catch (const std::exception& e) {
      throw StageFailure(l.hop.node, fmt::format("this node's own stage [{}, {}): {}", o.first, o.last, e.what()));
    }
    if (!l.local)
      throw StageFailure(l.hop.node, fmt::format("this node no longer runs layers [{}, {})", o.first, o.last));
    return l;
  }
  if (!transport_.connected(l.hop.node) && opt_.connect) opt_.connect(l.hop.node);
  o.format = l.format = opt_.format;
  l.stream = transport_.open_stream(l.hop.node, encode_open(o));
  if (!l.stream) throw StageFailure(l.hop.node, fmt::format("stage {} is not connected", l.hop.node.short_hex()));
  return l;
}

// One step on one hop: in process for this node's own stage, else over the hop's stream,
// watching the node's liveness while waiting.
StepReply PipelineBatchModel::exchange(Link& l, const StepRequest& req, bool last, int n_out) {
  const NodeId node = l.hop.node;
  StepReply rep;
  if (l.local) {
    StepRequest copy = req;
    try {
      rep = l.local->step(copy);
    } catch (const std::exception& e) {
      throw StageFailure(node, e.what());
    }
  } else {
    std::vector<uint8_t> msg = encode_step(req);
    auto st = l.stream->write(msg, opt_.step_timeout);
    if (st != Stream::Status::OK) {
      auto code = l.stream->reset_code();
      throw StageFailure(node, fmt::format("stage {} [{}, {}): sending the step failed ({})", node.short_hex(),
                                           l.hop.first, l.hop.last,
                                           code ? describe_stage_reset(*code) : std::string("connection closed")));
    }
    const auto t0 = Clock::now();
    Stream::ReadResult r;
    for (;;) {
      r = l.stream->read(opt_.poll);
      if (r.status != Stream::Status::TIMEOUT) break;
      if (!transport_.connected(node) || (alive_ && !alive_(node)))
        throw StageFailure(node, fmt::format("stage {} [{}, {}) is gone (dead in the mesh's view)", node.short_hex(),
                                             l.hop.first, l.hop.last));
      if (Clock::now() - t0 > opt_.step_timeout)
        throw StageFailure(node, fmt::format("stage {} [{}, {}) did not answer a step within {} ms", node.short_hex(),
                                             l.hop.first, l.hop.last, opt_.step_timeout.count()));
    }
    if (r.status != Stream::Status::OK) {
      auto code = l.stream->reset_code();
      throw StageFailure(node, fmt::format("stage {} [{}, {}) broke off: {}", node.short_hex(), l.hop.first,
                                           l.hop.last,
                                           code                                ? describe_stage_reset(*code)
                                           : r.status == Stream::Status::END ? std::string("stream ended")
                                                                               : std::string("connection closed")));
    }
    try {
      rep = decode_reply(r.message, last, req.n_tokens(), n_out, cfg_.n_embd, cfg_.n_vocab, l.format);
    } catch (const std::exception& e) {
      throw StageFailure(node, fmt::format("stage {}: {}", node.short_hex(), e.what()));
    }
    std::lock_guard lk(stats_mu_);
    ++stats_.stage_messages;
    stats_.bytes_sent += msg.size();
    stats_.bytes_received += r.message.size();
  }
  if (rep.id != req.id)
    throw StageFailure(node, fmt::format("stage {} answered step {} instead of {}", node.short_hex(), rep.id, req.id));
  if (rep.error)
    throw std::runtime_error(fmt::format("stage {} [{}, {}) could not run the step: {}", node.short_hex(), l.hop.first,
                                         l.hop.last, rep.message));
  return rep;
}

void PipelineBatchModel::forward_through(const Batch& b, bool want_logits, size_t out_offset) {
  const int T = b.n_tokens();
  const size_t E = static_cast<size_t>(cfg_.n_embd);
  const size_t V = static_cast<size_t>(cfg_.n_vocab);
  std::span<const float> hidden = local_.run(b);
  StepRequest req;
  req.pos = b.pos;
  req.seq = b.seq;
  req.output.assign(static_cast<size_t>(T), 0);
  int n_out = 0;
  if (want_logits) {
    req.output = b.output;
    for (uint8_t o : b.output) n_out += o;
    req.out_top = b.out_top;
    req.out_top.resize(static_cast<size_t>(n_out), 0);
  }
  req.truncate = pending_truncate_;
  std::vector<float> tmp;
  HiddenFormat have = HiddenFormat::F32;
  req.hidden = encode_hidden(hidden.subspan(0, static_cast<size_t>(T) * E), E, have);
  StepReply rep;
  for (size_t i = 0; i < route_.size(); ++i) {
    Link& l = link(i);
    req.id = next_id_++;
    if (l.format != have) {  // F32 from the entry or a local hop, the stream's format on the wire
      decode_hidden(req.hidden, static_cast<size_t>(T), E, have, tmp);
      req.hidden = encode_hidden(tmp, E, l.format);
      have = l.format;
    }
    rep = exchange(l, req, i + 1 == route_.size(), n_out);
    req.hidden = std::move(rep.hidden);
  }
  // Candidates back into whole rows; what sampling does not look at reads -infinity.
  size_t id_at = 0, val_at = 0;
  for (int row = 0; row < n_out; ++row) {
    float* dst = logits_.data() + (out_offset + static_cast<size_t>(row)) * V;
    const int32_t k = rep.row_k[static_cast<size_t>(row)];
    if (k == 0) {
      std::copy_n(rep.logits.data() + val_at, V, dst);
      val_at += V;
    } else {
      std::fill(dst, dst + V, -std::numeric_limits<float>::infinity());
      for (int32_t j = 0; j < k; ++j)
        dst[rep.ids[id_at + static_cast<size_t>(j)]] = rep.logits[val_at + static_cast<size_t>(j)];
      id_at += static_cast<size_t>(k);
      val_at += static_cast<size_t>(k);
    }
  }
  pending_truncate_.clear();
}

// The route's stages lost (or never had) the start of some sequences in this batch: re-run
// those tokens from the history first, without outputs.
void PipelineBatchModel::replay_missing(const Batch& b) {
  std::vector<int> first_pos(history_.size(), -1);
  for (int t = 0; t < b.n_tokens(); ++t) {
    const size_t s = static_cast<size_t>(b.seq[static_cast<size_t>(t)]);
    if (s >= history_.size()) throw std::invalid_argument(fmt::format("sequence {} out of range", s));
    if (first_pos[s] < 0) first_pos[s] = b.pos[static_cast<size_t>(t)];
  }
  Batch replay;
  for (size_t s = 0; s < history_.size(); ++s) {
    if (first_pos[s] < 0) continue;
    const int upto = std::min<int>(first_pos[s], static_cast<int>(history_[s].size()));
    for (int p = remote_len_[s]; p < upto; ++p) replay.add(history_[s][static_cast<size_t>(p)], p, static_cast<int32_t>(s), false);
  }
  if (replay.n_tokens() == 0) return;
  if (opt_.log) opt_.log(fmt::format("pipeline: rebuilding {} positions of KV on the new route", replay.n_tokens()));
  run_chunk(replay, 0);
  for (size_t s = 0; s < history_.size(); ++s)
    if (first_pos[s] >= 0) remote_len_[s] = std::max(remote_len_[s], std::min<int>(first_pos[s], static_cast<int>(history_[s].size())));
  std::lock_guard lk(stats_mu_);
  stats_.replayed_tokens += static_cast<uint64_t>(replay.n_tokens());
}

// Runs a batch in pieces small enough for one message each way.
void PipelineBatchModel::run_chunk(const Batch& b, size_t out_offset) {
  const size_t E = static_cast<size_t>(cfg_.n_embd), V = static_cast<size_t>(cfg_.n_vocab);
  const size_t per_token = hidden_bytes(opt_.format, 1, E) + 13;
  Batch piece;
  size_t req_bytes = 0, rep_bytes = 0, out_row = 0, piece_out_start = out_offset;
  auto flush = [&] {
    if (piece.n_tokens() == 0) return;
    forward_through(piece, true, piece_out_start);
    piece_out_start = out_offset + out_row;
    piece.clear();
    req_bytes = rep_bytes = 0;
  };
  for (int t = 0; t < b.n_tokens(); ++t) {
    const size_t ti = static_cast<size_t>(t);
    const bool out = b.output[ti] != 0;
    size_t rb = 0;
    int32_t top = 0;
    if (out) {
      top = out_row < b.out_top.size() ? b.out_top[out_row] : 0;
      rb = top > 0 && static_cast<size_t>(top) < V ? static_cast<size_t>(top) * 8 + 4 : V * 4 + 4;
    }
    if (piece.n_tokens() > 0 && (req_bytes + per_token > opt_.max_message || rep_bytes + rb > opt_.max_message ||
                                 piece.n_tokens() >= kMaxStepTokens))
      flush();
    piece.add(b.tokens[ti], b.pos[ti], b.seq[ti], out);
    if (out) {
      piece.out_top.push_back(top);
      ++out_row;
    }
    req_bytes += per_token;
    rep_bytes += rb;
  }
  flush();
}

std::span<const float> PipelineBatchModel::run(const Batch& batch) {
  if (!batch.hidden.empty()) throw std::invalid_argument("a pipeline entry takes token ids, not hidden states");
  const int T = batch.n_tokens();
  if (T == 0) throw std::invalid_argument("empty batch");
  if (batch.tokens.size() != static_cast<size_t>(T) || batch.seq.size() != static_cast<size_t>(T) ||
      batch.output.size() != static_cast<size_t>(T))
    throw std::invalid_argument("batch arrays have different lengths");
  size_t n_out = 0;
  for (uint8_t o : batch.output) n_out += o;
  logits_.resize(n_out * static_cast<size_t>(cfg_.n_vocab));  // every row is written in full below
  std::optional<Clock::time_point> failed_at;
  for (;;) {
    try {
      ensure_route(failed_at.has_value());
      replay_missing(batch);
      run_chunk(batch, 0);
      break;
    } catch (const StageFailure& f) {
      const auto now = Clock::now();
      if (failed_at) std::this_thread::sleep_for(opt_.poll);  // failing again: don't spin
      if (!failed_at) failed_at = now;
      if (opt_.log) opt_.log(fmt::format("pipeline: {}; re-routing around it (reason stage_failed)", f.what()));
      avoid_[f.node()] = now;
      drop_route(f.what());
      if (now - *failed_at > opt_.recovery_timeout)
        throw std::runtime_error(fmt::format("pipeline failed and did not recover within {} s: {}",
                                             opt_.recovery_timeout.count() / 1000, f.what()));
    }
  }
  for (int t = 0; t < T; ++t) {
    const size_t ti = static_cast<size_t>(t);
    auto& h = history_[static_cast<size_t>(batch.seq[ti])];
    h.resize(static_cast<size_t>(batch.pos[ti]));
    h.push_back(batch.tokens[ti]);
    remote_len_[static_cast<size_t>(batch.seq[ti])] = static_cast<int>(h.size());
  }
  std::lock_guard lk(stats_mu_);
  ++stats_.steps;
  if (failed_at) {
    ++stats_.recoveries;
    stats_.last_recovery_ms = std::chrono::duration<double, std::milli>(Clock::now() - *failed_at).count();
  }
  return logits_;
}

}  // namespace llmesh::mesh::stages
