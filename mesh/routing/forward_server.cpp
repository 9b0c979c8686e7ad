#include "routing/forward_server.h"

namespace llmesh::mesh {
// <httplib.h> pulls in <arpa/nameser.h>, whose REFUSED macro would rewrite ResetCode::REFUSED.
constexpr ResetCode kRefused = ResetCode::REFUSED;
}  // namespace llmesh::mesh

#include <fmt/format.h>
#include <httplib.h>

#include <cstdio>
#include <optional>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "log/event_log.h"
#include "routing/request_format.h"

namespace llmesh::mesh {

using Clock = std::chrono::steady_clock;

struct ForwardServer::Exchange {
  std::shared_ptr<Stream> stream;
  std::thread thread;
  std::atomic<bool> cancelled{false};  // the caller reset the stream, or stop(): abort
  std::atomic<bool> done{false};       // the worker returned (the thread may be joined)
  std::atomic<bool> ended{false};      // we sent END: the exchange finished normally
  std::atomic<bool> head_sent{false};
  std::mutex cli_m;                    // guards cli
  httplib::Client* cli = nullptr;      // the local request in flight
  std::mutex write_m;                  // head writes: the worker's real head vs interim ones
  bool waiting_local = false;          // under write_m: the local API has not answered yet
  Clock::time_point last_sent;         // under write_m
};

namespace {

std::string error_json(const std::string& message, const char* code, const char* type = "invalid_request_error") {
  nlohmann::json j = {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}};
  return j.dump();
}

std::span<const uint8_t> bytes_of(const char* d, size_t n) { return {reinterpret_cast<const uint8_t*>(d), n}; }

}  // namespace

ForwardServer::ForwardServer(ForwardServerOptions opt) : opt_(std::move(opt)) {
  monitor_ = std::thread([this] { monitor(); });
}

ForwardServer::~ForwardServer() { stop(); }

void ForwardServer::log(const std::string& line) const {
  if (opt_.log)
    opt_.log(line);
  else
    logs::emit(logs::from_line("forward", "llmesh routing: " + line));
}

bool ForwardServer::accept(std::shared_ptr<Stream> stream) {
  std::lock_guard lk(m_);
  if (stopping_ || exchanges_.size() >= opt_.max_concurrent) {
    stats_.refused++;
    stream->reset(kRefused);
    return false;
  }
  auto ex = std::make_shared<Exchange>();
  ex->stream = stream;
  Exchange* raw = ex.get();
  try {
    ex->thread = std::thread([this, raw] {
      run(*raw);
      raw->done = true;
    });
  } catch (const std::system_error&) {  // no thread to be had
    stats_.refused++;
    stream->reset(kRefused);
    return false;
  }
  stats_.accepted++;
  exchanges_.push_back(std::move(ex));
  return true;
}

void ForwardServer::run(Exchange& ex) {
  Stream& s = *ex.stream;
  const std::string who = s.peer().short_hex();
  auto count = [&](uint64_t Stats::*field) {
    std::lock_guard lk(m_);
    ++(stats_.*field);
  };
  auto refuse = [&](const std::string& why) {
    log(fmt::format("refused a request from {}: {} (reason bad_request)", who, why));
    count(&Stats::bad_request);
    s.reset(static_cast<ResetCode>(routing::kResetBadRequest));
  };

  routing::RequestHead head;
  try {
    head = routing::decode_request_head(s.header(), opt_.max_body_bytes);
  } catch (const routing::FormatError& e) {
    refuse(e.what());
    return;
  }

  // Bodies wait in memory until complete: their total is bounded.
  {
    std::lock_guard lk(m_);
    if (body_bytes_ + head.body_length > opt_.max_total_body_bytes) {
      stats_.refused++;
      s.reset(kRefused);
      return;
    }
    body_bytes_ += head.body_length;
  }
  // Released before the caller hears the end, so a caller's next request finds the room.
  struct Release {
    ForwardServer* self;
    uint64_t n;
    void now() {
      std::lock_guard lk(self->m_);
      self->body_bytes_ -= n;
      n = 0;
    }
    ~Release() { now(); }
  } release{this, head.body_length};

  // The body: exactly head.body_length bytes, then END.
  std::string body;
  for (;;) {
    auto r = s.read(opt_.body_timeout);
    if (r.status == Stream::Status::OK) {
      if (r.message.size() > routing::kMaxBodyMessage) return release.now(), refuse("a body message over 1 MiB");
      if (body.size() + r.message.size() > head.body_length)
        return release.now(), refuse("more body than 'n' announced");
      body.append(reinterpret_cast<const char*>(r.message.data()), r.message.size());
      continue;
    }
    if (r.status == Stream::Status::END) {
      if (body.size() != head.body_length)
        return release.now(), refuse(fmt::format("the body ended after {} of {} bytes", body.size(), head.body_length));
      break;
    }
    if (r.status == Stream::Status::TIMEOUT) {
      log(fmt::format("request from {}: no body within {} ms (reason body_timeout)", who, opt_.body_timeout.count()));
      release.now();
      count(&Stats::failed);
      s.reset(ResetCode::CANCEL);
      return;
    }
    release.now();
    count(&Stats::cancelled);  // reset or connection closed
    return;
  }

  // Writes a message (split at 1 MiB), waiting for credit while the caller reads.
  auto write_all = [&](std::span<const uint8_t> data) {
    size_t off = 0;
    do {
      size_t n = std::min(routing::kMaxBodyMessage, data.size() - off);
      auto since = Clock::now();
      for (;;) {
        auto st = s.write(data.subspan(off, n), std::chrono::milliseconds(200));
        if (st == Stream::Status::OK) break;
        if (st != Stream::Status::TIMEOUT || ex.cancelled) {
          ex.cancelled = true;
          return false;
        }
        if (Clock::now() - since > opt_.write_stall_timeout) {
          log(fmt::format("request from {}: the caller read nothing for {} ms; reset (reason write_stalled)", who,
                          opt_.write_stall_timeout.count()));
          s.reset(ResetCode::CANCEL);
          ex.cancelled = true;
          return false;
        }
      }
      off += n;
    } while (off < data.size());
    return true;
  };

  // Only the API's own endpoints are reachable through the mesh.
  if ((head.method != "POST" && head.method != "GET") || head.path.rfind("/v1/", 0) != 0) {
    const bool bad_method = head.method != "POST" && head.method != "GET";
    const std::string msg =
        bad_method ? fmt::format("Method {} is not forwarded by the mesh (only GET and POST)", head.method)
                   : fmt::format("Path {} is not forwarded by the mesh (only /v1/...)", head.path);
    log(fmt::format("request from {}: {} (reason not_forwardable)", who, msg));
    std::string err = error_json(msg, "not_forwardable");
    count(&Stats::bad_request);
    release.now();
    if (write_all(routing::encode_response_head({bad_method ? 405u : 404u, "application/json"})) &&
        write_all(bytes_of(err.data(), err.size()))) {
      ex.ended = true;
      s.end();
    }
    return;
  }

  // A public mesh's per-peer limits (routing/peer_limits.h): over them, 429 at once.
  std::optional<PeerLimits::Ticket> ticket;
  if (opt_.peer_limits) {
    auto d = opt_.peer_limits->admit(s.peer());
    if (!d.ticket) {
      log(fmt::format("refused a request from {}: {} (reason {})", who, d.message, d.reason));
      std::string err = error_json(d.message, d.reason.c_str(), "rate_limit_error");
      count(&Stats::rate_limited);
      release.now();
      if (write_all(routing::encode_response_head({429u, "application/json"})) &&
          write_all(bytes_of(err.data(), err.size()))) {
        ex.ended = true;
        s.end();
      }
      return;
    }
    ticket.emplace(std::move(*d.ticket));
  }

  httplib::Client cli(opt_.host, opt_.port);
  cli.set_connection_timeout(3);
  cli.set_read_timeout(static_cast<time_t>(opt_.local_read_timeout.count()));
  cli.set_write_timeout(30);
  cli.set_keep_alive(false);
  cli.set_tcp_nodelay(true);  // headers and body are separate writes: no Nagle wait between them
  httplib::Request r;
  r.method = head.method;
  r.path = head.path;
  r.body = std::move(body);
  if (!head.content_type.empty() || !r.body.empty())
    r.set_header("Content-Type", head.content_type.empty() ? "application/json" : head.content_type);
  for (const auto& [k, v] : head.headers) r.set_header(k, v);
  if (!opt_.api_key.empty()) r.set_header("Authorization", "Bearer " + opt_.api_key);
  r.set_header("X-Llmesh-Forwarded", s.peer().hex());
  r.response_handler = [&](const httplib::Response& resp) {
    std::lock_guard w(ex.write_m);
    ex.waiting_local = false;
    routing::ResponseHead h{static_cast<uint32_t>(resp.status), resp.get_header_value("Content-Type")};
    if (ex.cancelled || !write_all(routing::encode_response_head(h))) return false;
    ex.head_sent = true;
    return true;
  };
  r.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    return !ex.cancelled && write_all(bytes_of(data, n));
  };
  {
    std::lock_guard lk(ex.cli_m);
    ex.cli = &cli;
  }
  {
    std::lock_guard w(ex.write_m);
    ex.waiting_local = true;
    ex.last_sent = Clock::now();
  }
  httplib::Response resp;
  httplib::Error err = httplib::Error::Success;
  bool ok = !ex.cancelled && cli.send(r, resp, err);
  {
    std::lock_guard lk(ex.cli_m);
    ex.cli = nullptr;
  }
  {
    std::lock_guard w(ex.write_m);
    ex.waiting_local = false;
  }

  release.now();
  if (ex.cancelled) {
    count(&Stats::cancelled);
    if (!s.finished()) s.reset(ex.head_sent ? ResetCode::CANCEL : kRefused);  // stop()
    return;
  }
  if (!ok || !ex.head_sent) {
    log(fmt::format("request from {} ({} {}): the local API failed: {} (reason local_api_failed)", who, head.method, head.path,
                    ok ? "no answer" : httplib::to_string(err)));
    count(&Stats::failed);
    s.reset(ex.head_sent ? ResetCode::CANCEL : static_cast<ResetCode>(routing::kResetLocalUnavailable));
    return;
  }
  count(&Stats::completed);  // counted before the caller hears the end
  ex.ended = true;
  s.end();
}

void ForwardServer::monitor() {
  const auto interim = routing::encode_response_head({102, ""});
  std::unique_lock lk(m_);
  while (!monitor_exit_) {
    cv_.wait_for(lk, opt_.poll_interval);
    std::vector<std::shared_ptr<Exchange>> live, finished;
    for (auto it = exchanges_.begin(); it != exchanges_.end();) {
      if ((*it)->done) {
        finished.push_back(std::move(*it));
        it = exchanges_.erase(it);
      } else {
        live.push_back(*it++);
      }
    }
    lk.unlock();
    for (auto& ex : finished) ex->thread.join();
    const auto now = Clock::now();
    for (auto& ex : live) {
      // The caller reset the stream (its client went away) or the connection closed.
      if (!ex->cancelled && !ex->ended && ex->stream->finished()) ex->cancelled = true;
      if (ex->cancelled) {
        // Closing the loopback connection is what the local server notices; repeated every
        // tick in case the request had not reached its socket yet.
        std::lock_guard c(ex->cli_m);
        if (ex->cli) ex->cli->stop();
        continue;
      }
      std::unique_lock w(ex->write_m, std::try_to_lock);
      if (w && ex->waiting_local && !ex->head_sent && now - ex->last_sent >= opt_.interim_interval) {
        ex->stream->write(interim, std::chrono::milliseconds(0));
        ex->last_sent = now;
      }
    }
    lk.lock();
    if (!finished.empty()) cv_.notify_all();
  }
}

void ForwardServer::stop() {
  std::unique_lock lk(m_);
  if (!monitor_.joinable()) return;
  stopping_ = true;
  for (auto& ex : exchanges_) {
    ex->cancelled = true;
    // Before the head the caller may still try another node; after it, the answer is cut.
    ex->stream->reset(ex->head_sent ? ResetCode::CANCEL : kRefused);
  }
  cv_.notify_all();
  cv_.wait(lk, [&] { return exchanges_.empty(); });  // the monitor aborts and reaps them
  monitor_exit_ = true;
  cv_.notify_all();
  lk.unlock();
  monitor_.join();
}

ForwardServer::Stats ForwardServer::stats() const {
  std::lock_guard lk(m_);
  Stats s = stats_;
  s.active = exchanges_.size();
  s.body_bytes = body_bytes_;
  return s;
}

}  // namespace llmesh::mesh
