// An api::Upstream over a mesh stream: the API server's forwarded exchange travels to another
// node on the encrypted node-to-node connection (request format: routing/request_format.h and
// docs/protocol.md "Routing"), and the answer streams back chunk by chunk.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "server/router.h"
#include "transport/transport.h"

namespace llmesh::mesh {

struct StreamUpstreamOptions {
  // Before the answer's head: the longest silence from the serving node. It sends an interim
  // head every few seconds while the request waits for a slot or (non-streaming) generates,
  // so this only catches a stuck node; a dead one is caught sooner by the transport's
  // keepalive (the connection closes and the wait ends).
  std::chrono::milliseconds head_timeout{30000};
  // Writing the request body: the longest wait for flow-control credit.
  std::chrono::milliseconds write_timeout{30000};
};

class StreamUpstream : public api::Upstream {
 public:
  // `describe`: for logs and error messages ("node 3fa2c1e09b7d").
  StreamUpstream(Transport& transport, NodeId peer, std::string describe, StreamUpstreamOptions opt = {});

  std::string describe() const override { return describe_; }
  const NodeId& peer() const { return peer_; }

  // Opens a stream, sends the head, body and END, and waits for the answer's head. Throws
  // api::UpstreamUnavailable ("not connected", "refused: busy or stopping (1)", "connection
  // closed", "no answer within 30 s" ...) when no head came: the caller tries the next node.
  // The response's read() returns the body chunks; cancel() resets the stream, which stops the
  // serving node's generation; failed() says why a body ended early.
  std::unique_ptr<api::UpstreamResponse> send(const api::ProxiedRequest& req) override;

 private:
  Transport& transport_;
  NodeId peer_;
  std::string describe_;
  StreamUpstreamOptions opt_;
};

}  // namespace llmesh::mesh
