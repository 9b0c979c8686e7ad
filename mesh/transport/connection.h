// One TLS connection to a peer (internal to the transport): the handshake with its timeout, the
// HELLO exchange, the read loop (frames -> messages, streams), the write queue, keepalive and the
// close with its reason. Everything but the *_from_any_thread methods runs on the I/O thread.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include "identity/node_identity.h"
#include "transport/frame.h"
#include "transport/protocol.h"
#include "transport/stream.h"
#include "transport/transport_types.h"

namespace llmesh::mesh {

class PeerConnection;

// What a connection tells its transport (all on the I/O thread).
class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  // HELLO exchanged: the connection is usable.
  virtual void connection_ready(const std::shared_ptr<PeerConnection>& c) = 0;
  virtual void connection_message(const std::shared_ptr<PeerConnection>& c, uint16_t kind,
                                  std::vector<uint8_t> body) = 0;
  virtual void connection_stream(const std::shared_ptr<PeerConnection>& c, std::shared_ptr<Stream> s) = 0;
  // The connection will carry no new messages or streams (GOAWAY either way, or closed).
  virtual void connection_detached(const std::shared_ptr<PeerConnection>& c, const CloseReason& why) = 0;
  // The socket is closed (every connection, ready or not, ends with this).
  virtual void connection_closed(const std::shared_ptr<PeerConnection>& c, const CloseReason& why) = 0;
  virtual void log(const std::string& line) = 0;
};

class PeerConnection : public std::enable_shared_from_this<PeerConnection> {
 public:
  using SslStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  PeerConnection(ConnectionHost& host, const TransportOptions& opt, const NodeIdentity& self,
                 boost::asio::ssl::context& tls, boost::asio::ip::tcp::socket socket, bool dialer,
                 std::optional<NodeId> expected, uint64_t session);
  ~PeerConnection();

  // Runs the connection to its end. `on_handshake` is called once: with the peer's info when
  // HELLO is done, or with nullopt and the reason when it failed before that.
  void start(std::function<void(std::optional<PeerInfo>, CloseReason)> on_handshake);

  // Thread-safe.
  bool send_message_from_any_thread(uint16_t kind, std::span<const uint8_t> body);
  std::shared_ptr<Stream> open_stream_from_any_thread(std::vector<uint8_t> header);
  void send_from_any_thread(std::vector<uint8_t> frames, uint32_t stream_id);
  void goaway_from_any_thread(uint32_t code, std::string message);

  // I/O thread.
  void goaway(uint32_t code, const std::string& message);  // graceful: streams may finish
  void abort(uint32_t code, const std::string& message);   // GOAWAY then close now

  const PeerInfo& info() const { return info_; }
  const NodeId& peer() const { return info_.id; }
  bool dialer() const { return dialer_; }
  bool detached() const { return detached_; }
  bool closed() const { return closed_; }
  uint64_t serial() const { return serial_; }
  uint64_t peer_session() const { return peer_hello_.session; }
  std::chrono::steady_clock::time_point ready_at() const { return ready_at_; }
  std::optional<std::chrono::microseconds> rtt() const;
  size_t stream_count() const { return streams_.size(); }

 private:
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<void> keepalive();
  bool handle(Frame& f);  // false: the connection was closed
  void handle_hello(Frame& f);
  void handle_admit(Frame& f);
  void become_ready();
  void refused_by_peer(Frame& f);  // a GOAWAY before the connection was ready
  void handle_stream_frame(Frame& f);
  void enqueue(std::vector<uint8_t> bytes);
  void pump();
  void detach(const CloseReason& why);
  void finish(const CloseReason& why);  // close the socket (after flushing), once
  void forget_stream_if_done(uint32_t id);
  void maybe_close_drained();
  void arm_drain_timer();
  void stream_reset(uint32_t id, ResetCode code);
  std::shared_ptr<Stream> make_stream(uint32_t id, bool local, std::vector<uint8_t> header);

  ConnectionHost& host_;
  const TransportOptions& opt_;
  const NodeIdentity& self_;
  SslStream ssl_;
  boost::asio::any_io_executor ex_;
  const bool dialer_;
  const std::optional<NodeId> expected_;
  const uint64_t serial_;
  const uint64_t session_;
  std::chrono::steady_clock::time_point ready_at_;
  std::shared_ptr<std::string> verify_failure_ = std::make_shared<std::string>();
  std::function<void(std::optional<PeerInfo>, CloseReason)> on_handshake_;

  PeerInfo info_;
  Hello peer_hello_;
  bool hello_done_ = false;  // the peer's HELLO arrived (ready_ waits for ADMIT too when admission is on)
  bool ready_ = false, detached_ = false, closed_ = false, going_away_ = false, flush_then_close_ = false;
  CloseReason reason_;
  boost::asio::steady_timer handshake_timer_, keepalive_timer_, drain_timer_;

  FrameDecoder decoder_;
  // A MSG being reassembled (stream 0).
  std::vector<uint8_t> msg_partial_;
  uint16_t msg_kind_ = 0;
  bool msg_open_ = false;

  std::unordered_map<uint32_t, std::shared_ptr<Stream>> streams_;
  std::atomic<uint32_t> next_local_stream_;
  std::mutex open_mu_;  // orders stream ids with their OPEN frames (open_stream_from_any_thread)
  uint32_t highest_peer_stream_ = 0;
  size_t peer_streams_ = 0;

  std::deque<std::vector<uint8_t>> outq_;
  std::vector<std::vector<uint8_t>> inflight_;
  std::atomic<size_t> out_bytes_{0};
  bool writing_ = false;

  std::chrono::steady_clock::time_point last_pong_;
  std::atomic<int64_t> rtt_us_{-1};
};

}  // namespace llmesh::mesh
