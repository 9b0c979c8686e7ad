// The TLS 1.3 profile of node-to-node connections (docs/protocol.md, "TLS profile"): each side
// presents a self-signed X.509 certificate whose key is its Ed25519 node key; there is no CA.
// A peer is identified by its certificate's public key, and pinned when the dialer knows it.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>

#include "identity/node_identity.h"

namespace llmesh::mesh {

// An SSL context for one node, usable for both dialing and accepting: TLS 1.3 only, the node's
// self-signed certificate, peer certificates required (mutual authentication).
boost::asio::ssl::context make_tls_context(const NodeIdentity& identity);

// Checks a peer's certificate the llmesh way (called from the verify callback at depth 0):
// exactly one certificate, an Ed25519 key, a valid self-signature. Returns the node id, or
// nullopt with *why set.
std::optional<NodeId> node_id_from_certificate(X509* cert, std::string* why);

// Installs the verify callback on one connection's stream: the peer's certificate must pass
// node_id_from_certificate and, when `expected` is set, carry exactly that node id. Whatever
// it refuses, it writes to *failure (kept alive by the caller) so the handshake error can say why.
void set_peer_verification(boost::asio::ssl::stream<boost::asio::ip::tcp::socket>& stream,
                           std::optional<NodeId> expected, std::shared_ptr<std::string> failure);

// The peer's node id after a completed handshake (nullopt if it presented no usable certificate).
std::optional<NodeId> peer_node_id(SSL* ssl);

// The channel binding for the admission proof: the TLS exporter with the label
// "EXPORTER-llmesh-admission" and no context, 32 bytes; equal on both ends of one connection.
std::array<uint8_t, 32> export_channel_binding(SSL* ssl);

}  // namespace llmesh::mesh
