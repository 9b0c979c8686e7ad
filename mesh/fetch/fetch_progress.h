// Progress of artifact fetches, reported by ArtifactCache at most ~10 times a second per
// artifact (always once at the start and once at the end).
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace llmesh::mesh {

struct FetchProgress {
  std::string path;          // the artifact's relative path
  uint64_t done_bytes = 0;   // bytes present locally (a resumed download starts above 0)
  uint64_t total_bytes = 0;  // the artifact's size
  double bytes_per_second = 0;  // over this download's bytes so far (0 when from cache)
  bool from_cache = false;   // already in the cache, verified: one call with done == total
  bool finished = false;     // the last call for this artifact (done == total, verified)
};

using ProgressFn = std::function<void(const FetchProgress&)>;

// A printer to stderr (or `out`): one updating line per artifact when it is a terminal
// ("\r<path>  42.0%  1.2 GB / 2.9 GB  35.1 MB/s"), else a line per 10% (and one at the end).
ProgressFn stderr_progress(std::FILE* out = stderr);

// "1.2 GB", "512 B": for messages.
std::string human_bytes(double bytes);

}  // namespace llmesh::mesh
