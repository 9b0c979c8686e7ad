#include "experts/remote_experts.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "experts/expert_protocol.h"

namespace llmesh::mesh::experts {

using Clock = std::chrono::steady_clock;

RemoteExpertClient::RemoteExpertClient(Transport& transport, std::string plan_digest,
                                       std::vector<std::vector<std::vector<int>>> shards, int self, int n_embd,
                                       std::function<std::vector<ExpertHolder>()> holders, RemoteExpertOptions opt)
    : transport_(transport),
      plan_(std::move(plan_digest)),
      shards_(std::move(shards)),
      self_(self),
      n_embd_(n_embd),
      holders_(std::move(holders)),
      opt_(std::move(opt)) {}

RemoteExpertClient::~RemoteExpertClient() {
  for (auto& [id, s] : streams_)
    if (s) s->end();
}

void RemoteExpertClient::refresh() {
  const auto now = Clock::now();
  if (refreshed_ != Clock::time_point{} && now - refreshed_ < opt_.refresh) return;
  refreshed_ = now;
  usable_.clear();
  for (const auto& h : holders_()) {
    if (h.shard >= shards_.size() || static_cast<int>(h.shard) == self_) continue;
    if (auto f = failed_.find(h.id); f != failed_.end()) {
      if (now - f->second < opt_.backoff) continue;
      failed_.erase(f);
    }
    if (!transport_.connected(h.id)) continue;
    // An unknown round trip (no ping answered yet) counts as acceptable: loopback and LAN
    // peers are asked from the start, a slow one drops out at its first measured ping.
    const auto rtt = transport_.rtt(h.id).value_or(std::chrono::microseconds(0));
    if (rtt > opt_.max_rtt) continue;
    usable_.push_back({h.id, h.shard, rtt});
  }
  std::sort(usable_.begin(), usable_.end(), [](const Usable& a, const Usable& b) {
    if (a.rtt != b.rtt) return a.rtt < b.rtt;
    if (a.shard != b.shard) return a.shard < b.shard;
    return a.id < b.id;
  });
}

const RemoteExpertClient::Usable* RemoteExpertClient::holder_of(int layer, int expert) const {
  for (const auto& u : usable_) {
    const auto& held = shards_[u.shard];
    if (layer < static_cast<int>(held.size()) && std::binary_search(held[layer].begin(), held[layer].end(), expert))
      return &u;
  }
  return nullptr;
}

void RemoteExpertClient::disable() {
  std::lock_guard lk(use_mu_);
  disabled_ = true;
  for (auto& [id, s] : streams_)
    if (s) s->reset();
  streams_.clear();
}

void RemoteExpertClient::available(int layer, std::vector<uint8_t>& available) {
  std::lock_guard lk(use_mu_);
  if (disabled_) return;
  refresh();
  for (const auto& u : usable_) {
    const auto& held = shards_[u.shard];
    if (layer >= static_cast<int>(held.size())) continue;
    for (int e : held[layer])
      if (e >= 0 && e < static_cast<int>(available.size())) available[e] = 1;
  }
}

void RemoteExpertClient::run_on(const Usable& h, int layer, const std::vector<const Call*>& calls) {
  auto& stream = streams_[h.id];
  if (!stream || stream->finished()) {
    ExpertsOpen o;
    o.plan = plan_;
    stream = transport_.open_stream(h.id, encode_open(o));
    if (!stream) {
      streams_.erase(h.id);
      throw std::runtime_error("not connected");
    }
  }
  // Requests of at most a message each: rows are cut into pieces that fit.
  const size_t row_bytes = static_cast<size_t>(n_embd_) * sizeof(float);
  const size_t budget = kMaxExpertMessage - 64 * 1024;
  struct Piece {
    const Call* call;
    int first, n;
  };
  std::vector<Piece> pieces;
  for (const Call* c : calls)
    for (int first = 0; first < c->n;) {
      const int n = std::min<int>(c->n - first, static_cast<int>(std::max<size_t>(1, budget / row_bytes)));
      pieces.push_back({c, first, n});
      first += n;
    }
  for (size_t at = 0; at < pieces.size();) {
    ExpertRequest req;
    req.id = next_id_++;
    req.layer = layer;
    std::vector<const Piece*> sent;
    size_t bytes = 0;
    while (at < pieces.size() && (sent.empty() || bytes + pieces[at].n * row_bytes <= budget) &&
           req.calls.size() < static_cast<size_t>(kMaxCalls)) {
      const Piece& p = pieces[at++];
      ExpertCall call;
      call.expert = p.call->expert;
      call.n = p.n;
      call.x.assign(p.call->in + static_cast<size_t>(p.first) * n_embd_,
                    p.call->in + static_cast<size_t>(p.first + p.n) * n_embd_);
      bytes += p.n * row_bytes;
      req.calls.push_back(std::move(call));
      sent.push_back(&p);
    }
    if (stream->write(encode_request(req), opt_.timeout) != Stream::Status::OK)
      throw std::runtime_error("the request could not be sent");
    auto r = stream->read(opt_.timeout);
    if (r.status != Stream::Status::OK)
      throw std::runtime_error(r.status == Stream::Status::TIMEOUT ? "no answer in time" : "the stream ended");
    std::vector<int> rows;
    for (const Piece* p : sent) rows.push_back(p->n);
    ExpertReply reply = decode_reply(r.message, rows, n_embd_);
    if (reply.id != req.id) throw std::runtime_error("an answer to another request");
    if (!reply.ok) throw std::runtime_error(fmt::format("refused: {}", reply.message));
    for (size_t i = 0; i < sent.size(); ++i)
      std::memcpy(sent[i]->call->out + static_cast<size_t>(sent[i]->first) * n_embd_, reply.outputs[i].data(),
                  reply.outputs[i].size() * sizeof(float));
  }
}

RemoteExpertClientStats RemoteExpertClient::stats() const {
  std::lock_guard lk(stats_mu_);
  return stats_;
}

void RemoteExpertClient::compute(int layer, const std::vector<Call>& calls) {
  std::lock_guard lk(use_mu_);
  if (disabled_) throw std::runtime_error("exact mode is stopping");
  const auto t0 = Clock::now();
  auto account = [&](bool ok, uint64_t rows, uint64_t requests) {
    std::lock_guard lk(stats_mu_);
    stats_.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    stats_.rows += rows;
    stats_.requests += requests;
    if (!ok) ++stats_.failures;
  };
  // Calls per holder, each expert to the closest node holding it.
  std::vector<std::pair<const Usable*, std::vector<const Call*>>> groups;
  for (const Call& c : calls) {
    const Usable* h = holder_of(layer, c.expert);
    if (!h) {
      account(false, 0, 0);
      throw std::runtime_error(fmt::format("no reachable node holds expert {} of layer {}", c.expert, layer));
    }
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == h; });
    if (it == groups.end()) {
      groups.push_back({h, {}});
      it = groups.end() - 1;
    }
    it->second.push_back(&c);
  }
  for (auto& [h, group] : groups) {
    try {
      run_on(*h, layer, group);
    } catch (const std::exception& e) {
      if (auto s = streams_.find(h->id); s != streams_.end()) {
        if (s->second) s->second->reset();
        streams_.erase(s);
      }
      failed_[h->id] = Clock::now();
      refreshed_ = {};  // re-read holders next time, without this one
      if (opt_.log)
        opt_.log(fmt::format("experts: node {} (shard {}) failed ({}); its experts are left out for {} s (reason expert_node_failed)",
                             h->id.short_hex(), h->shard, e.what(),
                             std::chrono::duration_cast<std::chrono::seconds>(opt_.backoff).count()));
      account(false, 0, 0);
      throw;
    }
  }
  uint64_t rows = 0;
  for (const Call& c : calls) rows += static_cast<uint64_t>(c.n);
  account(true, rows, groups.size());
}

}  // namespace llmesh::mesh::experts
