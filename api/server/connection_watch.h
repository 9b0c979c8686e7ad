// Noticing that an HTTP client went away while its request is still generating, so the
// generation is cancelled and its slot freed at once, even before anything is written back.
// The HTTP library does not expose the connection's socket, so it is found by its addresses.
#pragma once
#include <string>

namespace llmesh::api {

class ConnectionWatch {
 public:
  // Finds the connected socket with these endpoints; without it (not Linux, not found)
  // closed() is always false and disconnects are noticed only when a write fails.
  ConnectionWatch(const std::string& local_addr, int local_port, const std::string& remote_addr,
                  int remote_port);
  // True once the peer has closed or reset the connection. Never blocks.
  bool closed() const;
  bool watching() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Shuts down (both directions) every connected TCP socket of this process whose local port is
// `local_port`: idle keep-alive connections then end at once instead of at their timeout.
// Returns how many. Linux only (0 elsewhere).
int shutdown_connections(int local_port);

}  // namespace llmesh::api
