// llmesh_fault_relay: a TCP relay for multi-node tests that injects network faults, because this
// kernel has no `tc netem`. Each link listens on a local port and forwards every connection
// made to it to a target host:port, both ways; per link and direction it can add latency with
// jitter, TCP-style loss (a retransmission stall: the segment and everything behind it wait an
// RTO-like 200-400 ms, bytes never reordered or dropped), a bandwidth limit, and it can cut
// (FIN both ends), reset (RST both ends) or blackhole (stop forwarding, keep sockets open) the
// link. Driven by a line protocol (command()) over stdin or a control port.
// Protocol and fault semantics: docs/testing-mesh.md. For loopback and test namespaces only.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace llmesh::relay {

class RelayError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct FaultSpec {
  double latency_ms = 0;      // added one-way delay
  double jitter_ms = 0;       // each segment's delay is latency +- uniform(jitter), never reordered
  double loss = 0;            // per 1448-byte segment probability of a retransmission stall
  double stall_min_ms = 200;  // a stall holds the segment (and all behind it) this long...
  double stall_max_ms = 400;  // ...up to this (uniform)
  double rate = 0;            // bytes per second, 0 = unlimited
  bool operator==(const FaultSpec&) const = default;
};

struct LinkStats {
  uint64_t up_bytes = 0;    // delivered client -> target
  uint64_t down_bytes = 0;  // delivered target -> client
  uint64_t connections = 0; // accepted so far
  uint64_t active = 0;      // open now
  uint64_t stalls_up = 0, stalls_down = 0;
  bool blackhole = false;
};

enum class Direction { up, down, both };  // up: client -> target; down: target -> client

class FaultRelay {
 public:
  // bind_host: where link and control ports listen (127.0.0.1, or a test namespace address).
  // seed: for the loss and jitter draws (0 = random).
  explicit FaultRelay(std::string bind_host = "127.0.0.1", uint64_t seed = 0);
  ~FaultRelay();
  FaultRelay(const FaultRelay&) = delete;
  FaultRelay& operator=(const FaultRelay&) = delete;

  // All of these are thread-safe and throw RelayError (unknown link, port in use, ...).
  // listen_port 0 picks a free port; returns the port listened on.
  uint16_t add_link(const std::string& name, uint16_t listen_port, const std::string& target_host,
                    uint16_t target_port);
  void remove_link(const std::string& name);  // closes its connections (FIN) and its port
  void set_fault(const std::string& name, Direction dir, const FaultSpec& spec);
  FaultSpec fault(const std::string& name, Direction dir);  // dir up or down
  void cut(const std::string& name);    // close every connection of the link, FIN to both ends
  void reset(const std::string& name); // abort every connection, RST to both ends
  // on: stop forwarding both ways and stop reading (senders' buffers fill, like a dead host);
  // new connections are accepted but not connected onward. off: resume, nothing lost.
  void blackhole(const std::string& name, bool on);
  void restore(const std::string& name);  // no faults, no blackhole
  LinkStats stats(const std::string& name);
  std::vector<std::string> links();

  // The line protocol: one command in, one line out ("ok ..." or "error: reason"), no newline.
  std::string command(std::string_view line);
  // Serves the line protocol on bind_host:port (0 = any free port); returns the port.
  uint16_t start_control(uint16_t port = 0);
  // True once a `shutdown` command was received.
  bool shutdown_requested() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Parses "latency=50 jitter=20 loss=0.05 rate=1000000 stall=200-400" style settings into spec
// (keys not given keep their value). Throws RelayError naming the bad key.
void parse_fault_settings(const std::vector<std::string>& words, FaultSpec& spec);

}  // namespace llmesh::relay
