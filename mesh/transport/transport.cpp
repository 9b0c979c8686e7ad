#include "transport/transport.h"

#include <openssl/rand.h>

#include <cstdio>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include "log/event_log.h"
#include "transport/connection.h"
#include "transport/tls_context.h"

namespace llmesh::mesh {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

std::string CloseReason::describe() const {
  std::string s = goaway_name(code);
  if (code >= 0x100 || std::string(s) == "unknown reason") s += " (" + std::to_string(code) + ")";
  if (by_peer) s += ", by the peer";
  if (!message.empty()) s += ": " + message;
  return s;
}

std::string close_reason_code(const CloseReason& why, const AdmissionHooks& admission) {
  if (why.code > 0x100 && why.code < 0x200) {
    std::string name = admission.reason_name ? admission.reason_name(why.code) : std::string();
    return name.empty() ? "not_admitted" : name;
  }
  switch (static_cast<GoAwayCode>(why.code)) {
    case GoAwayCode::NORMAL:
    case GoAwayCode::SHUTDOWN:
    case GoAwayCode::DUPLICATE: return "";
    case GoAwayCode::PROTOCOL_ERROR: return "protocol_error";
    case GoAwayCode::VERSION_MISMATCH: return "version_mismatch";
    case GoAwayCode::FRAME_TOO_LARGE: return "frame_too_large";
    case GoAwayCode::FLOW_CONTROL: return "flow_control";
    case GoAwayCode::KEEPALIVE_TIMEOUT: return "keepalive_timeout";
    case GoAwayCode::IDENTITY_MISMATCH: return "identity_mismatch";
    case GoAwayCode::HANDSHAKE_TIMEOUT: return "handshake_timeout";
    case GoAwayCode::INTERNAL: return "internal_error";
    case GoAwayCode::TOO_MANY_STREAMS: return "too_many_streams";
    case GoAwayCode::MESSAGE_TOO_LARGE: return "message_too_large";
    case GoAwayCode::CONNECTION_LOST: return "connection_lost";
    case GoAwayCode::NOT_ADMITTED: return "not_admitted";
  }
  return why.code >= 0x200 ? "application_close" : "unknown_close_code";
}

std::string close_reason_suffix(const CloseReason& why, const AdmissionHooks& admission) {
  std::string code = close_reason_code(why, admission);
  return code.empty() ? std::string() : " (reason " + code + ")";
}

struct Transport::Impl : ConnectionHost {
  Impl(NodeIdentity id, TransportOptions o, Callbacks c)
      : identity(std::move(id)), opt(std::move(o)), cb(std::move(c)), tls(make_tls_context(identity)) {
    opt.max_frame_payload = std::clamp<uint32_t>(opt.max_frame_payload, 1024, kMaxMaxPayload);
    opt.stream_window = std::max<uint32_t>(opt.stream_window, 1024);
    if (opt.max_missed_pings < 1) opt.max_missed_pings = 1;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&session), sizeof session) != 1) session = 1;
    thread = std::thread([this] { io.run(); });
  }

  NodeIdentity identity;
  TransportOptions opt;
  Callbacks cb;
  uint64_t session = 0;
  asio::ssl::context tls;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::unique_ptr<tcp::acceptor> acceptor;  // I/O thread once listening
  std::atomic<uint16_t> bound_port{0};
  std::thread thread;
  bool stopped = false;  // guarded by m

  mutable std::mutex m;
  std::unordered_map<NodeId, std::shared_ptr<PeerConnection>> active;  // written on the I/O thread

  // I/O thread only.
  std::unordered_map<uint64_t, std::shared_ptr<PeerConnection>> all;
  size_t pending_inbound = 0;
  // Peers whose connection was dropped as a duplicate by the peer: the replacement is on its
  // way, so on_disconnected waits for it (up to handshake_timeout).
  std::unordered_map<NodeId, std::pair<CloseReason, std::shared_ptr<asio::steady_timer>>> limbo;
  std::function<void()> on_all_closed;

  void log(const std::string& line) override {
    std::string text = "mesh " + identity.id().short_hex() + ": " + line;
    if (opt.log)
      opt.log(text);
    else
      logs::emit(logs::from_line("transport", text));
  }

  template <typename F>
  void guarded(const char* what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      log(std::string(what) + " callback threw: " + e.what() + " (reason callback_failed)");
    }
  }

  std::shared_ptr<PeerConnection> find(const NodeId& id) const {
    std::lock_guard lk(m);
    auto it = active.find(id);
    return it == active.end() ? nullptr : it->second;
  }

  // Which of two live connections to the same peer stays (the same answer on both ends).
  bool keep_new(const PeerConnection& old_c, const PeerConnection& new_c) const {
    if (old_c.peer_session() != new_c.peer_session()) return true;  // the peer restarted: old is stale
    const NodeId& self = identity.id();
    const NodeId& peer = new_c.peer();
    const NodeId& old_dialer = old_c.dialer() ? self : peer;
    const NodeId& new_dialer = new_c.dialer() ? self : peer;
    if (old_dialer != new_dialer) return new_dialer < old_dialer;  // the lower id's dial wins
    return true;  // the same side dialed again: it gave up on the old one
  }

  void connection_ready(const std::shared_ptr<PeerConnection>& c) override {
    std::shared_ptr<PeerConnection> loser;
    bool fire = false;
    {
      std::lock_guard lk(m);
      auto it = active.find(c->peer());
      if (it == active.end()) {
        active[c->peer()] = c;
        auto l = limbo.find(c->peer());
        if (l != limbo.end()) {
          l->second.second->cancel();
          limbo.erase(l);
        } else {
          fire = true;
        }
      } else if (keep_new(*it->second, *c)) {
        loser = it->second;
        it->second = c;
      } else {
        loser = c;
      }
    }
    if (loser) {
      const auto& kept = loser == c ? *find(c->peer()) : *c;
      log("two connections to " + c->peer().short_hex() + ": keeping the one dialed by " +
          (kept.dialer() ? std::string("this node") : std::string("the peer")));
      // Its detach must not look like the peer leaving: it is no longer the active one.
      loser->goaway(static_cast<uint32_t>(GoAwayCode::DUPLICATE), "another connection is kept");
    }
    if (fire && cb.on_connected) guarded("on_connected", [&] { cb.on_connected(c->info()); });
  }

  void connection_message(const std::shared_ptr<PeerConnection>& c, uint16_t kind, std::vector<uint8_t> body) override {
    if (cb.on_message) guarded("on_message", [&] { cb.on_message(c->peer(), kind, std::move(body)); });
  }

  void connection_stream(const std::shared_ptr<PeerConnection>& c, std::shared_ptr<Stream> s) override {
    if (!cb.on_stream) {
      s->reset(ResetCode::NO_HANDLER);
      return;
    }
    guarded("on_stream", [&] { cb.on_stream(std::move(s)); });
  }

  void connection_detached(const std::shared_ptr<PeerConnection>& c, const CloseReason& why) override {
    {
      std::lock_guard lk(m);
      auto it = active.find(c->peer());
      if (it == active.end() || it->second != c) return;  // a duplicate going away: nobody notices
      active.erase(it);
      if (why.code == static_cast<uint32_t>(GoAwayCode::DUPLICATE) && why.by_peer && !stopped) {
        auto timer = std::make_shared<asio::steady_timer>(io, opt.handshake_timeout);
        NodeId peer = c->peer();
        limbo[peer] = {why, timer};
        timer->async_wait([this, peer](error_code ec) {
          if (ec) return;
          CloseReason r;
          {
            std::lock_guard lk(m);
            auto l = limbo.find(peer);
            if (l == limbo.end()) return;
            r = l->second.first;
            limbo.erase(l);
          }
          if (cb.on_disconnected) guarded("on_disconnected", [&] { cb.on_disconnected(peer, r); });
        });
        return;
      }
    }
    log("disconnected from " + c->peer().short_hex() + ": " + why.describe() + close_reason_suffix(why, opt.admission));
    if (cb.on_disconnected) guarded("on_disconnected", [&] { cb.on_disconnected(c->peer(), why); });
  }

  void connection_closed(const std::shared_ptr<PeerConnection>& c, const CloseReason& why) override {
    all.erase(c->serial());
    if (all.empty() && on_all_closed) {
      auto f = std::move(on_all_closed);
      on_all_closed = nullptr;
      f();
    }
  }

  // Starts a connection on a connected socket (I/O thread).
  void begin(tcp::socket sock, bool dialer, std::optional<NodeId> expected,
             std::function<void(std::optional<PeerInfo>, CloseReason)> done) {
    error_code ec;
    sock.set_option(tcp::no_delay(true), ec);
    sock.set_option(asio::socket_base::keep_alive(true), ec);
    auto c = std::make_shared<PeerConnection>(*this, opt, identity, tls, std::move(sock), dialer, expected, session);
    all[c->serial()] = c;
    c->start(std::move(done));
  }

  asio::awaitable<void> accept_loop() {
    while (acceptor && acceptor->is_open()) {
      error_code ec;
      tcp::socket sock = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::operation_aborted || !acceptor || !acceptor->is_open()) break;
      if (ec) {
        // Out of descriptors and the like: wait a little rather than spin.
        asio::steady_timer t(io, std::chrono::milliseconds(50));
        co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      if (pending_inbound >= opt.max_pending_handshakes) {
        sock.close(ec);
        continue;
      }
      ++pending_inbound;
      std::string from;
      if (auto ep = sock.remote_endpoint(ec); !ec) from = ep.address().to_string() + ":" + std::to_string(ep.port());
      begin(std::move(sock), false, std::nullopt, [this, from](std::optional<PeerInfo> info, CloseReason why) {
        --pending_inbound;
        if (!info)
          log("inbound connection from " + from + " failed: " + why.describe() + close_reason_suffix(why, opt.admission));
      });
    }
  }

  asio::awaitable<void> dial(std::string host, uint16_t port, std::optional<NodeId> expected,
                             std::function<void(std::optional<PeerInfo>, CloseReason)> done) {
    error_code ec;
    auto fail = [&](const std::string& what) {
      done(std::nullopt, CloseReason{static_cast<uint32_t>(GoAwayCode::CONNECTION_LOST), false, what});
    };
    tcp::resolver resolver(io);
    auto results = co_await resolver.async_resolve(host, std::to_string(port), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      fail("cannot resolve " + host + ": " + ec.message());
      co_return;
    }
    tcp::socket sock(io);
    asio::steady_timer timer(io, opt.handshake_timeout);
    bool timed_out = false;
    timer.async_wait([&](error_code e) {
      if (!e) {
        timed_out = true;
        sock.close(e);
      }
    });
    co_await asio::async_connect(sock, results, asio::redirect_error(asio::use_awaitable, ec));
    timer.cancel();
    if (timed_out || ec) {
      if (timed_out)
        done(std::nullopt, CloseReason{static_cast<uint32_t>(GoAwayCode::HANDSHAKE_TIMEOUT), false,
                                       "TCP connect to " + host + ":" + std::to_string(port) + " timed out"});
      else
        fail("cannot connect to " + host + ":" + std::to_string(port) + ": " + ec.message());
      co_return;
    }
    {
      std::lock_guard lk(m);
      if (stopped) {
        fail("transport stopped");
        co_return;
      }
    }
    begin(std::move(sock), true, expected, std::move(done));
  }
};

Transport::Transport(NodeIdentity identity, TransportOptions opt, Callbacks callbacks)
    : impl_(std::make_unique<Impl>(std::move(identity), std::move(opt), std::move(callbacks))) {}

Transport::~Transport() { stop(); }

const NodeId& Transport::id() const { return impl_->identity.id(); }
const NodeIdentity& Transport::identity() const { return impl_->identity; }
uint16_t Transport::port() const { return impl_->bound_port; }

uint16_t Transport::bind(const std::string& host, uint16_t port) {
  std::promise<uint16_t> result;
  auto fut = result.get_future();
  asio::post(impl_->io, [this, &result, host, port] {
    auto* I = impl_.get();
    try {
      error_code ec;
      auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
      if (ec) throw std::runtime_error("not an IP address");
      tcp::endpoint ep(addr, port);
      auto acc = std::make_unique<tcp::acceptor>(I->io);
      acc->open(ep.protocol());
      acc->set_option(tcp::acceptor::reuse_address(true));
      acc->bind(ep);
      acc->listen(asio::socket_base::max_listen_connections);
      I->bound_port = acc->local_endpoint().port();
      I->acceptor = std::move(acc);
      asio::co_spawn(I->io, I->accept_loop(), asio::detached);
      result.set_value(I->bound_port);
    } catch (const std::exception& e) {
      result.set_exception(std::make_exception_ptr(
          std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + e.what())));
    }
  });
  return fut.get();
}

void Transport::connect_async(const std::string& host, uint16_t port, std::optional<NodeId> expected,
                              std::function<void(std::optional<PeerInfo>, CloseReason)> done) {
  {
    std::lock_guard lk(impl_->m);
    if (impl_->stopped) {
      done(std::nullopt, CloseReason{static_cast<uint32_t>(GoAwayCode::SHUTDOWN), false, "transport stopped"});
      return;
    }
  }
  auto* I = impl_.get();
  // The result is reported once; if the connection lost a simultaneous dial, the peer's info
  // comes from the connection that was kept.
  auto wrapped = [I, done = std::move(done)](std::optional<PeerInfo> info, CloseReason why) {
    I->guarded("connect", [&] { done(std::move(info), std::move(why)); });
  };
  asio::post(I->io, [I, host, port, expected, wrapped = std::move(wrapped)]() mutable {
    asio::co_spawn(I->io, I->dial(host, port, expected, std::move(wrapped)), asio::detached);
  });
}

std::optional<PeerInfo> Transport::connect(const std::string& host, uint16_t port, std::optional<NodeId> expected,
                                           CloseReason* error) {
  if (impl_->io.get_executor().running_in_this_thread())
    throw std::logic_error("Transport::connect called on the transport's own thread (from a callback)");
  std::promise<std::pair<std::optional<PeerInfo>, CloseReason>> p;
  auto fut = p.get_future();
  connect_async(host, port, expected, [&p](std::optional<PeerInfo> info, CloseReason why) {
    p.set_value({std::move(info), std::move(why)});
  });
  auto [info, why] = fut.get();
  if (!info && error) *error = why;
  return info;
}

bool Transport::send(const NodeId& peer, uint16_t kind, std::span<const uint8_t> body) {
  auto c = impl_->find(peer);
  return c && c->send_message_from_any_thread(kind, body);
}

std::shared_ptr<Stream> Transport::open_stream(const NodeId& peer, std::vector<uint8_t> header) {
  auto c = impl_->find(peer);
  return c ? c->open_stream_from_any_thread(std::move(header)) : nullptr;
}

void Transport::disconnect(const NodeId& peer, uint32_t code, std::string message) {
  if (auto c = impl_->find(peer)) c->goaway_from_any_thread(code, std::move(message));
}

bool Transport::connected(const NodeId& peer) const { return impl_->find(peer) != nullptr; }

std::optional<PeerInfo> Transport::peer(const NodeId& peer) const {
  auto c = impl_->find(peer);
  if (!c) return std::nullopt;
  return c->info();
}

std::vector<PeerInfo> Transport::peers() const {
  std::lock_guard lk(impl_->m);
  std::vector<PeerInfo> out;
  for (auto& [id, c] : impl_->active) out.push_back(c->info());
  return out;
}

std::optional<std::chrono::microseconds> Transport::rtt(const NodeId& peer) const {
  auto c = impl_->find(peer);
  return c ? c->rtt() : std::nullopt;
}

std::optional<std::array<uint8_t, 32>> Transport::channel_binding(const NodeId& peer) const {
  auto c = impl_->find(peer);
  if (!c) return std::nullopt;
  return c->info().channel_binding;
}

void Transport::stop() {
  auto* I = impl_.get();
  {
    std::lock_guard lk(I->m);
    if (I->stopped) return;
    I->stopped = true;
  }
  if (I->io.get_executor().running_in_this_thread())
    throw std::logic_error("Transport::stop called on the transport's own thread");
  std::promise<void> all_closed;
  auto fut = all_closed.get_future();
  asio::post(I->io, [I, &all_closed] {
    error_code ec;
    if (I->acceptor) I->acceptor->close(ec);
    for (auto& [peer, l] : I->limbo) l.second->cancel();
    I->limbo.clear();
    if (I->all.empty()) {
      all_closed.set_value();
      return;
    }
    I->on_all_closed = [&all_closed] { all_closed.set_value(); };
    auto conns = I->all;  // closing edits the map
    for (auto& [serial, c] : conns) c->abort(static_cast<uint32_t>(GoAwayCode::SHUTDOWN), "node stopping");
  });
  // Each connection flushes its GOAWAY or gives up after at most a second.
  fut.wait_for(std::chrono::milliseconds(2000));
  asio::post(I->io, [I] { I->on_all_closed = nullptr; });
  I->work.reset();
  I->io.stop();
  if (I->thread.joinable()) I->thread.join();
}

}  // namespace llmesh::mesh
