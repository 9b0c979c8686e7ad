// The local cache of model artifacts: <root>/<namespace>/<path>, each file verified against
// its sha256 once and then trusted through a marker <file>.sha256 (hash, size, mtime) until
// the file changes. Downloads go to <file>.part, resume from its size, are locked with flock
// so several processes on one machine share one download, and are renamed into place after
// the whole file's sha256 matched. Details: docs/fetching.md.
#pragma once
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "fetch/fetch_progress.h"
#include "fetch/fetch_source.h"

namespace llmesh::mesh {

// $LLMESH_CACHE if set and non-empty, else $XDG_CACHE_HOME/llmesh, else $HOME/.cache/llmesh.
std::filesystem::path default_cache_root();

struct ArtifactCacheOptions {
  // After a transient failure (a dropped connection) the download resumes from the bytes it
  // has; it gives up after this many attempts in a row that brought no new bytes.
  int max_attempts_without_progress = 3;
  std::chrono::milliseconds retry_delay{1000};
  // Progress calls per artifact are at least this far apart (except the first and last).
  std::chrono::milliseconds progress_interval{100};
};

class ArtifactCache {
 public:
  // `name_space`: one or more '/'-separated segments naming the model (e.g. its source's sha
  // or "Qwen/Qwen3-8B"); validated like an artifact path.
  explicit ArtifactCache(std::string name_space, std::filesystem::path root = default_cache_root(),
                         ArtifactCacheOptions options = {});

  const std::filesystem::path& root() const { return root_; }
  // <root>/<namespace>
  std::filesystem::path directory() const { return root_ / ns_; }
  // <root>/<namespace>/<ref.path> (validates the path; does not touch the disk).
  std::filesystem::path local_path(const ArtifactRef& ref) const;

  // True when the file is present and verified (marker matches, or the file hashes right; in
  // the latter case the marker is written). Never downloads.
  bool is_cached(const ArtifactRef& ref);

  // Makes the artifact present and verified; returns its local path. Downloads (or resumes)
  // from `source` when needed. Throws FetchError naming the artifact: source errors, a source
  // with fewer or more bytes than ref.bytes, a sha256 that does not match twice (the second
  // download is from scratch), paths through a symbolic link, I/O errors.
  std::filesystem::path ensure(const ArtifactRef& ref, ArtifactSource& source,
                               const ProgressFn& progress = {});
  // ensure() for each, in order; the local paths in the same order.
  std::vector<std::filesystem::path> ensure_all(const std::vector<ArtifactRef>& refs,
                                                ArtifactSource& source,
                                                const ProgressFn& progress = {});

 private:
  void prepare_directories(const ArtifactRef& ref) const;
  bool verified(const std::filesystem::path& file, const ArtifactRef& ref, bool hash_if_needed);
  void download(const ArtifactRef& ref, ArtifactSource& source, const ProgressFn& progress,
                int part_fd, const std::filesystem::path& part,
                const std::filesystem::path& file);

  std::string ns_;
  std::filesystem::path root_;
  ArtifactCacheOptions options_;
};

}  // namespace llmesh::mesh
