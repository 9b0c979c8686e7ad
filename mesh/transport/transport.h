// The node-to-node transport: listens and dials TLS 1.3 connections authenticated by node keys,
// keeps one connection per peer, and carries one-shot messages and multiplexed streams
// (docs/protocol.md). It runs its own I/O thread; every public method is thread-safe.
//
// Callbacks run on that I/O thread: they must return quickly and never block on the transport
// (no connect(), no Stream::read/write there: hand the work to another thread).
//
//   Transport t(NodeIdentity::load_or_create(default_home()), opt, callbacks);
//   uint16_t port = t.bind("0.0.0.0", 7411);
//   auto peer = t.connect("10.0.0.2", 7411, expected_id);   // nullopt: see the reason
//   t.send(peer->id, kind, bytes);
//   auto s = t.open_stream(peer->id, header);  s->write(...); s->end(); s->read();
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "identity/node_identity.h"
#include "transport/protocol.h"
#include "transport/stream.h"
#include "transport/transport_types.h"

namespace llmesh::mesh {

class Transport {
 public:
  struct Callbacks {
    // A peer became connected (at most once until on_disconnected for it).
    std::function<void(const PeerInfo&)> on_connected;
    // A MSG arrived (reassembled).
    std::function<void(const NodeId& peer, uint16_t kind, std::vector<uint8_t> body)> on_message;
    // The peer opened a stream: keep the pointer and serve it from another thread. Without
    // this callback, peers' streams are reset with NO_HANDLER.
    std::function<void(std::shared_ptr<Stream>)> on_stream;
    // The peer's connection ended or went away (GOAWAY either way); `why` says who and why.
    std::function<void(const NodeId& peer, const CloseReason& why)> on_disconnected;
  };

  Transport(NodeIdentity identity, TransportOptions opt = {}, Callbacks callbacks = {});
  ~Transport();  // stop()
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  const NodeId& id() const;
  const NodeIdentity& identity() const;

  // Listens on host:port (port 0: any free port) and returns the bound port. Throws
  // std::runtime_error naming the address when it cannot.
  uint16_t bind(const std::string& host, uint16_t port);
  uint16_t port() const;

  // Dials host:port. With `expected`, the peer's certificate must carry that node id (pinning):
  // anything else fails the handshake. Blocks until HELLO is done or it failed (never call it
  // from a callback). If a connection to that peer already exists, or the simultaneous dial is
  // resolved in favour of the peer's, the result is still the peer's info.
  std::optional<PeerInfo> connect(const std::string& host, uint16_t port, std::optional<NodeId> expected = std::nullopt,
                                  CloseReason* error = nullptr);
  void connect_async(const std::string& host, uint16_t port, std::optional<NodeId> expected,
                     std::function<void(std::optional<PeerInfo>, CloseReason)> done);

  // A one-shot message (split in frames as needed). false when the peer is not connected, the
  // body is over max_message, or too much is already queued for it (the caller may retry).
  bool send(const NodeId& peer, uint16_t kind, std::span<const uint8_t> body);
  // A new stream to the peer, or nullptr when it is not connected. `header` (at most one frame)
  // travels in OPEN and tells the peer what the stream is for.
  std::shared_ptr<Stream> open_stream(const NodeId& peer, std::vector<uint8_t> header = {});
  // GOAWAY with a reason: no new streams or messages; open streams may finish (drain_timeout).
  void disconnect(const NodeId& peer, uint32_t code = static_cast<uint32_t>(GoAwayCode::NORMAL),
                  std::string message = "");

  bool connected(const NodeId& peer) const;
  std::optional<PeerInfo> peer(const NodeId& peer) const;
  std::vector<PeerInfo> peers() const;
  std::optional<std::chrono::microseconds> rtt(const NodeId& peer) const;  // last PING round trip
  std::optional<std::array<uint8_t, 32>> channel_binding(const NodeId& peer) const;

  // Sends GOAWAY(SHUTDOWN) to every peer, closes everything and joins the I/O thread.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmesh::mesh
