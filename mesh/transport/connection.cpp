#include "transport/connection.h"

#include <algorithm>

#include "transport/tls_context.h"

namespace llmesh::mesh {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

std::atomic<uint64_t> g_serial{1};
constexpr size_t kReadChunk = 64 * 1024;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A reason text from the peer, made safe for one log line.
std::string printable(std::span<const uint8_t> bytes, size_t max) {
  std::string s;
  for (size_t i = 0; i < bytes.size() && i < max; ++i) {
    char c = static_cast<char>(bytes[i]);
    s.push_back(bytes[i] >= 0x20 && bytes[i] < 0x7F ? c : '?');
  }
  return s;
}

}  // namespace

PeerConnection::PeerConnection(ConnectionHost& host, const TransportOptions& opt, const NodeIdentity& self,
                               asio::ssl::context& tls, asio::ip::tcp::socket socket, bool dialer,
                               std::optional<NodeId> expected, uint64_t session)
    : host_(host),
      opt_(opt),
      self_(self),
      ssl_(std::move(socket), tls),
      ex_(ssl_.get_executor()),
      dialer_(dialer),
      expected_(expected),
      serial_(g_serial++),
      session_(session),
      handshake_timer_(ex_),
      keepalive_timer_(ex_),
      drain_timer_(ex_),
      decoder_(std::min(opt.max_frame_payload, kMaxMaxPayload)),
      next_local_stream_(dialer ? 1 : 2) {
  error_code ec;
  auto ep = ssl_.lowest_layer().remote_endpoint(ec);
  if (!ec) {
    info_.address = ep.address().to_string();
    info_.port = ep.port();
  }
  info_.outbound = dialer;
}

PeerConnection::~PeerConnection() = default;

void PeerConnection::start(std::function<void(std::optional<PeerInfo>, CloseReason)> on_handshake) {
  on_handshake_ = std::move(on_handshake);
  auto self = shared_from_this();
  handshake_timer_.expires_after(opt_.handshake_timeout);
  handshake_timer_.async_wait([self](error_code ec) {
    if (ec || self->ready_ || self->closed_) return;
    self->finish({static_cast<uint32_t>(GoAwayCode::HANDSHAKE_TIMEOUT), false,
                  "no TLS handshake and HELLO within " + std::to_string(self->opt_.handshake_timeout.count()) + " ms"});
  });
  asio::co_spawn(ex_, [self]() { return self->run(); }, [self](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      self->finish({static_cast<uint32_t>(GoAwayCode::INTERNAL), false, x.what()});
    }
  });
}

asio::awaitable<void> PeerConnection::run() {
  auto self = shared_from_this();
  error_code ec;
  set_peer_verification(ssl_, expected_, verify_failure_);
  co_await ssl_.async_handshake(dialer_ ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
                                asio::redirect_error(asio::use_awaitable, ec));
  if (closed_) co_return;
  if (ec) {
    bool refused = !verify_failure_->empty();
    finish({static_cast<uint32_t>(refused ? GoAwayCode::IDENTITY_MISMATCH : GoAwayCode::CONNECTION_LOST), false,
            refused ? "TLS handshake refused: " + *verify_failure_ : "TLS handshake failed: " + ec.message()});
    co_return;
  }
  auto id = peer_node_id(ssl_.native_handle());
  std::string problem;
  if (!id)
    problem = "peer presented no usable certificate";
  else if (expected_ && *id != *expected_)
    problem = "peer is " + id->short_hex() + ", expected " + expected_->short_hex();
  else if (*id == self_.id())
    problem = "connected to itself";
  if (!problem.empty()) {
    finish({static_cast<uint32_t>(GoAwayCode::IDENTITY_MISMATCH), false, problem});
    co_return;
  }
  info_.id = *id;
  info_.channel_binding = export_channel_binding(ssl_.native_handle());

  Hello h;
  h.id = self_.id();
  h.software = opt_.software_version;
  h.capabilities = opt_.capabilities;
  h.max_payload = decoder_.max_payload();
  h.stream_window = opt_.stream_window;
  h.session = session_;
  enqueue(encode_frame(FrameType::HELLO, 0, 0, encode_hello(h)));
  if (opt_.admission.enabled()) {
    // ADMIT goes right after HELLO, without waiting for the peer's: no extra round trip.
    std::vector<uint8_t> admit = opt_.admission.make(info_);
    if (admit.size() + 2 > kDefaultMaxPayload) {
      finish({static_cast<uint32_t>(GoAwayCode::INTERNAL), false, "ADMIT message too large"});
      co_return;
    }
    std::vector<uint8_t> payload;
    put_u16(payload, kAdmitKind);
    payload.insert(payload.end(), admit.begin(), admit.end());
    enqueue(encode_frame(FrameType::MSG, 0, 0, payload));
  }

  std::vector<uint8_t> buf(kReadChunk);
  while (!closed_) {
    size_t n = co_await ssl_.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (closed_) break;
    if (ec) {
      if (detached_)
        finish(reason_);
      else
        finish({static_cast<uint32_t>(GoAwayCode::CONNECTION_LOST), false,
                ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ? "peer closed the connection"
                                                                                   : ec.message()});
      break;
    }
    if (flush_then_close_) continue;  // closing: what the peer still sends is dropped
    decoder_.feed(std::span<const uint8_t>(buf.data(), n));
    while (!closed_ && !flush_then_close_) {
      auto f = decoder_.next();
      if (!f) break;
      handle(*f);
    }
    if (decoder_.failed() && !flush_then_close_ && !closed_)
      abort(static_cast<uint32_t>(decoder_.oversize() ? GoAwayCode::FRAME_TOO_LARGE : GoAwayCode::PROTOCOL_ERROR),
            "malformed frame: " + decoder_.error());
  }
}

asio::awaitable<void> PeerConnection::keepalive() {
  auto self = shared_from_this();
  error_code ec;
  while (!closed_ && !flush_then_close_) {
    keepalive_timer_.expires_after(opt_.ping_interval);
    co_await keepalive_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (closed_ || flush_then_close_) break;
    auto silent = std::chrono::steady_clock::now() - last_pong_;
    if (silent > opt_.ping_interval * opt_.max_missed_pings) {
      abort(static_cast<uint32_t>(GoAwayCode::KEEPALIVE_TIMEOUT),
            "no PONG for " +
                std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(silent).count()) + " ms");
      break;
    }
    std::vector<uint8_t> payload;
    put_u64(payload, static_cast<uint64_t>(now_ns()));
    enqueue(encode_frame(FrameType::PING, 0, 0, payload));
  }
}

bool PeerConnection::handle(Frame& f) {
  if (!ready_) {
    if (f.kind() == FrameType::GOAWAY && f.stream_id == 0 && f.payload.size() >= 4) {
      refused_by_peer(f);
      return false;
    }
    if (!hello_done_) {
      if (f.kind() != FrameType::HELLO || f.stream_id != 0) {
        abort(static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR),
              std::string("first frame was ") + frame_type_name(f.type) + ", not HELLO");
        return false;
      }
      handle_hello(f);
    } else {
      handle_admit(f);
    }
    return !closed_;
  }
  auto protocol_error = [&](const std::string& what) {
    abort(static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR), std::string(frame_type_name(f.type)) + ": " + what);
    return false;
  };
  if (!is_known_frame_type(f.type)) return true;  // from a newer version: ignored
  switch (f.kind()) {
    case FrameType::HELLO:
      return protocol_error("a second HELLO");
    case FrameType::PING:
      if (f.stream_id != 0 || f.payload.size() != 8) return protocol_error("must be 8 bytes on stream 0");
      // A peer that pings but does not read gets no more answers once our queue is full.
      if (out_bytes_ < opt_.max_send_queue) enqueue(encode_frame(FrameType::PONG, 0, 0, f.payload));
      return true;
    case FrameType::PONG: {
      if (f.stream_id != 0 || f.payload.size() != 8) return protocol_error("must be 8 bytes on stream 0");
      last_pong_ = std::chrono::steady_clock::now();
      int64_t rtt = now_ns() - static_cast<int64_t>(get_u64(f.payload.data()));
      if (rtt >= 0 && rtt < int64_t(3600) * 1000000000) rtt_us_ = rtt / 1000;
      return true;
    }
    case FrameType::MSG: {
      if (f.stream_id != 0) return protocol_error("must be on stream 0");
      if (f.payload.size() < 2) return protocol_error("shorter than its 2-byte kind");
      uint16_t kind = get_u16(f.payload.data());
      if (msg_open_ && kind != msg_kind_) return protocol_error("continuation of another kind");
      size_t body = f.payload.size() - 2;
      if (msg_partial_.size() + body > opt_.max_message) {
        abort(static_cast<uint32_t>(GoAwayCode::MESSAGE_TOO_LARGE),
              "message over the limit of " + std::to_string(opt_.max_message) + " bytes");
        return false;
      }
      msg_partial_.insert(msg_partial_.end(), f.payload.begin() + 2, f.payload.end());
      msg_open_ = f.more();
      msg_kind_ = kind;
      if (!msg_open_) {
        std::vector<uint8_t> done;
        done.swap(msg_partial_);
        host_.connection_message(shared_from_this(), kind, std::move(done));
      }
      return !closed_;
    }
    case FrameType::GOAWAY: {
      if (f.stream_id != 0 || f.payload.size() < 4) return protocol_error("must carry a u32 code on stream 0");
      uint32_t code = get_u32(f.payload.data());
      std::string text = printable(std::span<const uint8_t>(f.payload).subspan(4), 512);
      CloseReason why{code, true, text};
      host_.log("peer " + info_.id.short_hex() + " sent GOAWAY: " + why.describe() +
                close_reason_suffix(why, opt_.admission));
      going_away_ = true;
      detach(why);
      arm_drain_timer();
      maybe_close_drained();
      return !closed_;
    }
    case FrameType::OPEN:
    case FrameType::DATA:
    case FrameType::END:
    case FrameType::RESET:
    case FrameType::WINDOW:
      if (f.stream_id == 0) return protocol_error("on stream 0");
      handle_stream_frame(f);
      return !closed_;
  }
  return true;
}

void PeerConnection::handle_hello(Frame& f) {
  std::string err;
  auto h = decode_hello(f.payload, &err);
  if (!h) {
    abort(static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR), err);
    return;
  }
  if (h->id != info_.id) {
    abort(static_cast<uint32_t>(GoAwayCode::IDENTITY_MISMATCH), "HELLO node id differs from the certificate's");
    return;
  }
  auto v = negotiate_version(kProtocolVersionMin, kProtocolVersionMax, h->version_min, h->version_max);
  if (!v) {
    abort(static_cast<uint32_t>(GoAwayCode::VERSION_MISMATCH),
          "peer speaks versions " + std::to_string(h->version_min) + ".." + std::to_string(h->version_max) +
              ", this node " + std::to_string(kProtocolVersionMin) + ".." + std::to_string(kProtocolVersionMax));
    return;
  }
  peer_hello_ = *h;
  peer_hello_.max_payload = std::min(peer_hello_.max_payload, kMaxMaxPayload);
  info_.version = *v;
  info_.software = h->software;
  info_.capabilities = h->capabilities;
  hello_done_ = true;
  if (!opt_.admission.enabled()) become_ready();
}

// The frame after HELLO must be the peer's ADMIT (one MSG frame of kind kAdmitKind).
void PeerConnection::handle_admit(Frame& f) {
  if (f.kind() != FrameType::MSG || f.stream_id != 0 || f.more() || f.payload.size() < 2 ||
      get_u16(f.payload.data()) != kAdmitKind) {
    abort(static_cast<uint32_t>(GoAwayCode::NOT_ADMITTED) + 5 /* malformed */,
          std::string("malformed: expected ADMIT after HELLO, got ") + frame_type_name(f.type));
    return;
  }
  auto refusal = opt_.admission.verify(info_, std::span<const uint8_t>(f.payload).subspan(2));
  if (refusal) {
    host_.log("admission refused: peer " + info_.id.short_hex() + " at " + info_.address + ": " + refusal->second +
              close_reason_suffix(CloseReason{refusal->first, false, {}}, opt_.admission));
    abort(refusal->first, refusal->second);
    return;
  }
  become_ready();
}

void PeerConnection::refused_by_peer(Frame& f) {
  uint32_t code = get_u32(f.payload.data());
  std::string text = printable(std::span<const uint8_t>(f.payload).subspan(4), 512);
  CloseReason why{code, true, text};
  std::string who = info_.id == NodeId{} ? info_.address : info_.id.short_hex() + " at " + info_.address;
  host_.log((code > 0x100 && code < 0x200 ? "admission refused by peer " : "connection refused by peer ") + who +
            ": " + why.describe() + close_reason_suffix(why, opt_.admission));
  finish(why);
}

void PeerConnection::become_ready() {
  ready_ = true;
  ready_at_ = std::chrono::steady_clock::now();
  handshake_timer_.cancel();
  last_pong_ = std::chrono::steady_clock::now();
  auto self = shared_from_this();
  host_.connection_ready(self);
  if (on_handshake_) {
    auto cb = std::move(on_handshake_);
    on_handshake_ = nullptr;
    cb(info_, {});
  }
  if (!closed_ && !flush_then_close_)
    asio::co_spawn(ex_, [self]() { return self->keepalive(); }, asio::detached);
}

std::shared_ptr<Stream> PeerConnection::make_stream(uint32_t id, bool local, std::vector<uint8_t> header) {
  return std::make_shared<Stream>(weak_from_this(), info_.id, id, local, std::move(header), peer_hello_.stream_window,
                                  opt_.stream_window, peer_hello_.max_payload);
}

void PeerConnection::handle_stream_frame(Frame& f) {
  uint32_t id = f.stream_id;
  auto self = shared_from_this();
  if (f.kind() == FrameType::OPEN) {
    bool peer_parity = dialer_ ? (id % 2 == 0) : (id % 2 == 1);
    if (!peer_parity || id <= highest_peer_stream_) {
      abort(static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR), "OPEN of stream " + std::to_string(id) +
                                                                   " (wrong parity or not increasing)");
      return;
    }
    highest_peer_stream_ = id;
    if (going_away_ || peer_streams_ >= opt_.max_streams) {
      std::vector<uint8_t> payload;
      put_u32(payload, static_cast<uint32_t>(ResetCode::REFUSED));
      enqueue(encode_frame(FrameType::RESET, 0, id, payload));
      return;
    }
    auto s = make_stream(id, false, std::move(f.payload));
    streams_[id] = s;
    ++peer_streams_;
    host_.connection_stream(self, s);
    return;
  }
  auto it = streams_.find(id);
  if (it == streams_.end()) return;  // a stream already forgotten: frames still in flight
  auto s = it->second;
  Stream::Verdict v = Stream::Verdict::OK;
  switch (f.kind()) {
    case FrameType::DATA:
      v = s->on_data(f.payload, f.more());
      break;
    case FrameType::END:
      v = s->on_end();
      break;
    case FrameType::RESET:
      if (f.payload.size() != 4) {
        abort(static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR), "RESET without a u32 code");
        return;
      }
      s->on_reset(get_u32(f.payload.data()));
      break;
    case FrameType::WINDOW:
      if (f.payload.size() != 4) {
        abort(static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR), "WINDOW without a u32 credit");
        return;
      }
      s->on_window(get_u32(f.payload.data()));
      break;
    default:
      break;
  }
  switch (v) {
    case Stream::Verdict::OK:
      break;
    case Stream::Verdict::FLOW_CONTROL:
      abort(static_cast<uint32_t>(GoAwayCode::FLOW_CONTROL),
            "stream " + std::to_string(id) + " got more data than its credit");
      return;
    case Stream::Verdict::RESET_PROTOCOL:
      s->reset(ResetCode::PROTOCOL_ERROR);
      break;
    case Stream::Verdict::RESET_TOO_MANY:
      s->reset(ResetCode::MESSAGE_TOO_LARGE);
      break;
  }
  forget_stream_if_done(id);
}

void PeerConnection::forget_stream_if_done(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end() || !it->second->done()) return;
  if (!it->second->opened_locally()) --peer_streams_;
  streams_.erase(it);
  maybe_close_drained();
}

void PeerConnection::maybe_close_drained() {
  if (!going_away_ || !streams_.empty() || flush_then_close_ || closed_) return;
  flush_then_close_ = true;
  pump();
}

void PeerConnection::enqueue(std::vector<uint8_t> bytes) {
  if (closed_) return;
  out_bytes_ += bytes.size();
  outq_.push_back(std::move(bytes));
  pump();
}

void PeerConnection::pump() {
  if (writing_ || closed_) return;
  if (outq_.empty()) {
    if (flush_then_close_) {
      // Everything (the GOAWAY included) is written: send FIN, let the peer read it and close;
      // whatever comes first, its EOF or the timer, ends the connection.
      error_code ec;
      ssl_.lowest_layer().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
      auto self = shared_from_this();
      handshake_timer_.expires_after(std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000),
                                                                         opt_.handshake_timeout));
      handshake_timer_.async_wait([self](error_code ec) {
        if (!ec) self->finish(self->reason_);
      });
    }
    return;
  }
  writing_ = true;
  std::vector<asio::const_buffer> bufs;
  size_t total = 0;
  while (!outq_.empty() && bufs.size() < 64 && total < (1u << 20)) {
    inflight_.push_back(std::move(outq_.front()));
    outq_.pop_front();
    bufs.emplace_back(asio::buffer(inflight_.back()));
    total += inflight_.back().size();
  }
  auto self = shared_from_this();
  asio::async_write(ssl_, bufs, [self, total](error_code ec, size_t) {
    self->writing_ = false;
    self->out_bytes_ -= total;
    self->inflight_.clear();
    if (self->closed_) return;
    if (ec) {
      self->finish(self->detached_ ? self->reason_
                                   : CloseReason{static_cast<uint32_t>(GoAwayCode::CONNECTION_LOST), false,
                                                 "write failed: " + ec.message()});
      return;
    }
    self->pump();
  });
}

void PeerConnection::detach(const CloseReason& why) {
  if (detached_) return;
  detached_ = true;
  reason_ = why;
  if (ready_) host_.connection_detached(shared_from_this(), why);
}

void PeerConnection::goaway(uint32_t code, const std::string& message) {
  if (closed_ || going_away_ || flush_then_close_) return;
  if (!ready_) {
    abort(code, message);
    return;
  }
  going_away_ = true;
  CloseReason why{code, false, message};
  detach(why);
  reason_ = why;
  std::vector<uint8_t> payload;
  put_u32(payload, code);
  payload.insert(payload.end(), message.begin(), message.begin() + std::min<size_t>(message.size(), 512));
  enqueue(encode_frame(FrameType::GOAWAY, 0, 0, payload));
  arm_drain_timer();
  maybe_close_drained();
}

// After a GOAWAY either way, open streams get drain_timeout to finish; then they are closed
// and the connection flushes what is queued and closes.
void PeerConnection::arm_drain_timer() {
  auto self = shared_from_this();
  drain_timer_.expires_after(opt_.drain_timeout);
  drain_timer_.async_wait([self](error_code ec) {
    if (!ec && !self->closed_ && !self->flush_then_close_) {
      for (auto& [id, s] : self->streams_) s->on_closed();
      self->streams_.clear();
      self->flush_then_close_ = true;
      self->pump();
    }
  });
}

void PeerConnection::abort(uint32_t code, const std::string& message) {
  if (closed_ || flush_then_close_) return;
  CloseReason why{code, false, message};
  host_.log("closing connection to " + (info_.id == NodeId{} ? info_.address : info_.id.short_hex()) + ": " +
            why.describe() + close_reason_suffix(why, opt_.admission));
  detach(why);
  reason_ = why;
  for (auto& [id, s] : streams_) s->on_closed();
  streams_.clear();
  if (info_.id == NodeId{}) {  // TLS is not up: nothing can be said to the peer
    finish(why);
    return;
  }
  std::vector<uint8_t> payload;
  put_u32(payload, code);
  payload.insert(payload.end(), message.begin(), message.begin() + std::min<size_t>(message.size(), 512));
  enqueue(encode_frame(FrameType::GOAWAY, 0, 0, payload));
  flush_then_close_ = true;
  pump();
  // A peer that does not read never lets the flush finish.
  auto self = shared_from_this();
  handshake_timer_.expires_after(std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000),
                                                                     opt_.handshake_timeout));
  handshake_timer_.async_wait([self](error_code ec) {
    if (!ec) self->finish(self->reason_);
  });
}

void PeerConnection::finish(const CloseReason& why) {
  if (closed_) return;
  detach(why);
  closed_ = true;
  error_code ec;
  handshake_timer_.cancel();
  keepalive_timer_.cancel();
  drain_timer_.cancel();
  ssl_.lowest_layer().close(ec);
  for (auto& [id, s] : streams_) s->on_closed();
  streams_.clear();
  outq_.clear();
  if (on_handshake_) {
    auto cb = std::move(on_handshake_);
    on_handshake_ = nullptr;
    cb(std::nullopt, reason_);
  }
  host_.connection_closed(shared_from_this(), reason_);
}

std::optional<std::chrono::microseconds> PeerConnection::rtt() const {
  int64_t v = rtt_us_.load();
  if (v < 0) return std::nullopt;
  return std::chrono::microseconds(v);
}

// ---- from any thread ----

void PeerConnection::send_from_any_thread(std::vector<uint8_t> frames, uint32_t stream_id) {
  asio::post(ex_, [self = shared_from_this(), frames = std::move(frames), stream_id]() mutable {
    if (self->closed_ || self->flush_then_close_) return;
    self->enqueue(std::move(frames));
    if (stream_id) self->forget_stream_if_done(stream_id);
  });
}

bool PeerConnection::send_message_from_any_thread(uint16_t kind, std::span<const uint8_t> body) {
  if (body.size() > opt_.max_message || out_bytes_ + body.size() > opt_.max_send_queue) return false;
  std::vector<uint8_t> frames;
  size_t chunk = peer_hello_.max_payload - 2;
  size_t off = 0;
  do {
    size_t n = std::min(chunk, body.size() - off);
    bool last = off + n == body.size();
    std::vector<uint8_t> payload;
    payload.reserve(n + 2);
    put_u16(payload, kind);
    payload.insert(payload.end(), body.begin() + off, body.begin() + off + n);
    encode_frame(frames, FrameType::MSG, last ? 0 : frame_flags::MORE, 0, payload);
    off += n;
  } while (off < body.size());
  send_from_any_thread(std::move(frames), 0);
  return true;
}

std::shared_ptr<Stream> PeerConnection::open_stream_from_any_thread(std::vector<uint8_t> header) {
  if (header.size() > peer_hello_.max_payload) return nullptr;
  // Ids must reach the wire in increasing order (the peer refuses anything else), so taking an
  // id and queueing its OPEN happen together: two threads opening streams at once could
  // otherwise post their OPENs in the opposite order of their ids.
  std::lock_guard lk(open_mu_);
  uint32_t id = next_local_stream_.fetch_add(2);
  if (id > 0x7FFFFFFF) return nullptr;  // ids exhausted: the owner reconnects
  auto s = make_stream(id, true, header);
  asio::post(ex_, [self = shared_from_this(), s, header = std::move(header), id]() mutable {
    if (self->closed_ || self->flush_then_close_ || self->going_away_) {
      s->on_closed();
      return;
    }
    self->streams_[id] = s;
    self->enqueue(encode_frame(FrameType::OPEN, 0, id, header));
  });
  return s;
}

void PeerConnection::goaway_from_any_thread(uint32_t code, std::string message) {
  asio::post(ex_, [self = shared_from_this(), code, message = std::move(message)] { self->goaway(code, message); });
}

}  // namespace llmesh::mesh
