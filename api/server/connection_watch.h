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

}  // namespace llmesh::api
