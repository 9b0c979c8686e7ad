// One multiplexed request/response stream of a peer connection (docs/protocol.md, "Streams").
// A stream carries messages both ways; each message is split into DATA frames by the sender and
// reassembled here. Each direction ends independently (end()); reset() aborts both.
//
// Flow control: a side may have at most the peer's window ("win" in HELLO, default 4 MiB) of
// stream bytes unread by the peer's application; reading a message returns its bytes as credit
// (WINDOW). So one message is at most that window, and write() blocks while credit is short.
//
// The methods are thread-safe and blocking: call them from the owner's own threads, never from
// inside a Transport callback (those run on the transport's I/O thread).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "identity/node_identity.h"
#include "transport/protocol.h"

namespace llmesh::mesh {

class PeerConnection;

class Stream {
 public:
  enum class Status {
    OK,       // a message was read / written
    END,      // the peer ended its side: no more messages (read)
    RESET,    // the stream was reset (by either side; see reset_code())
    CLOSED,   // the connection ended under the stream
    TIMEOUT,  // nothing within the timeout
    TOO_LARGE,  // write(): the message exceeds the peer's window
    ENDED,    // write(): this side already ended the stream
  };
  struct ReadResult {
    Status status;
    std::vector<uint8_t> message;
  };
  static constexpr std::chrono::milliseconds kForever{-1};

  const NodeId& peer() const { return peer_; }
  uint32_t id() const { return id_; }
  bool opened_locally() const { return local_; }
  // The opener's OPEN payload (what the stream is for: e.g. a forwarded request's head).
  const std::vector<uint8_t>& header() const { return header_; }

  ReadResult read(std::chrono::milliseconds timeout = kForever);
  Status write(std::span<const uint8_t> message, std::chrono::milliseconds timeout = kForever);
  void end();
  void reset(ResetCode code = ResetCode::CANCEL);

  std::optional<uint32_t> reset_code() const;
  bool finished() const;  // both directions ended, or reset, or the connection closed

  // Internal (the connection's I/O thread).
  Stream(std::weak_ptr<PeerConnection> conn, NodeId peer, uint32_t id, bool local, std::vector<uint8_t> header,
         uint32_t send_window, uint32_t recv_window, uint32_t max_payload);
  ~Stream();
  // Returns a reset code when the frame breaks the stream's rules (the caller resets the stream),
  // or a negative value for a connection-level flow control violation.
  enum class Verdict { OK, RESET_PROTOCOL, RESET_TOO_MANY, FLOW_CONTROL };
  Verdict on_data(std::span<const uint8_t> bytes, bool more);
  Verdict on_end();
  void on_window(uint32_t credit);
  void on_reset(uint32_t code);     // by the peer
  void on_closed();                 // the connection ended
  bool done() const;                // may be forgotten by the connection

 private:
  void post_frames(std::vector<uint8_t> bytes);  // holds m_: keeps frame order
  bool done_locked() const;

  std::weak_ptr<PeerConnection> conn_;
  const NodeId peer_;
  const uint32_t id_;
  const bool local_;
  const std::vector<uint8_t> header_;
  const uint32_t send_window_;
  const uint32_t max_payload_;  // the peer's frame payload limit

  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> inbox_;
  std::vector<uint8_t> partial_;
  uint64_t recv_allowed_;  // bytes the peer may still send
  uint64_t send_credit_;   // bytes we may still send
  bool recv_ended_ = false, send_ended_ = false, closed_ = false;
  std::optional<uint32_t> reset_;
};

}  // namespace llmesh::mesh
