// Where model artifacts come from: a local directory, an http(s) base URL (e.g. a Hugging Face
// `https://huggingface.co/ORG/REPO/resolve/main/` URL), or a callback. The artifact cache
// (artifact_cache.h) reads through this interface, verifies sizes and sha256 and resumes
// partial downloads. Format and behaviour: docs/fetching.md.
//
// Artifacts from other mesh nodes (PeerSource) and a source that tries peers first, then the
// origin (FallbackSource): peer_artifacts.h.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace llmesh::mesh {

// Every fetch failure. `transient()` is true for failures a retry may cure (a connection that
// dropped or timed out); false for answers that will not change (404, a bad path, wrong bytes).
class FetchError : public std::runtime_error {
 public:
  explicit FetchError(const std::string& what, bool transient = false)
      : std::runtime_error(what), transient_(transient) {}
  bool transient() const { return transient_; }

 private:
  bool transient_;
};

// One file of a model: its path relative to the model's root ('/'-separated), its size and
// its sha256 (64 hex digits).
struct ArtifactRef {
  std::string path;
  uint64_t bytes = 0;
  std::string sha256;
};

constexpr size_t kMaxArtifactPathLength = 1024;

// Throws FetchError unless `path` is a safe relative path: not empty, at most
// kMaxArtifactPathLength bytes, no leading '/', no '\\', no NUL or control characters, no empty,
// "." or ".." segments, and no segment ending in ".part" or ".sha256" (the cache's own files).
void validate_artifact_path(std::string_view path);
// Validates the path and that sha256 is 64 hex digits; returns the ref with the hash in lower
// case.
ArtifactRef validated(const ArtifactRef& ref);

// Receives consecutive bytes of an artifact. It may throw to stop the read.
using ChunkSink = std::function<void(const char* data, size_t n)>;

class ArtifactSource {
 public:
  virtual ~ArtifactSource() = default;
  // For messages and logs: "directory /models/x", "https://huggingface.co/...".
  virtual std::string describe() const = 0;
  // Streams the bytes of `path` from `offset` on into `sink`, in order. `length` is how many
  // the caller expects (offset + length is the artifact's size); a source delivers what it
  // has from offset to the artifact's end, so a caller sees a shorter or longer artifact (and
  // reports it). Throws FetchError with a clear message: not found, HTTP status, connection
  // error (transient), bad path.
  virtual void read(const std::string& path, uint64_t offset, uint64_t length,
                    const ChunkSink& sink) = 0;
  // The artifacts about to be read (fetch_package calls it with the range's refs once the
  // manifest is known). A source that asks by sha256 (PeerSource) learns them here; the default
  // ignores them.
  virtual void expect(const std::vector<ArtifactRef>& refs) { (void)refs; }
};

// Files under a local directory (a mounted share, a model already downloaded by other tools).
class DirectorySource : public ArtifactSource {
 public:
  explicit DirectorySource(std::filesystem::path root);
  std::string describe() const override;
  void read(const std::string& path, uint64_t offset, uint64_t length,
            const ChunkSink& sink) override;

 private:
  std::filesystem::path root_;
};

struct HttpSourceOptions {
  std::chrono::seconds connect_timeout{15};
  // Longest wait for the next bytes of a response.
  std::chrono::seconds read_timeout{60};
  int max_redirects = 10;
  // Sent as "Authorization: Bearer ..." to the base URL's own host (never to a host a redirect
  // leads to), only over https. Empty: taken from the environment variable HF_TOKEN.
  std::string bearer_token;
  bool token_from_env = true;
  // A CA bundle (PEM) to trust instead of the system's; empty: the system's store.
  std::string ca_cert_file;
  std::string user_agent = "llmesh-fetch/0.1";
  // Ask for exactly [offset, offset + length) ("Range: bytes=A-B") instead of everything from
  // offset on: for reading pieces of a big file (a plain GGUF by byte ranges, gguf_ranges.h).
  bool bounded_ranges = false;
};

// GET base_url + path (each segment percent-encoded) with "Range: bytes=OFFSET-" to resume.
// Follows up to max_redirects redirects (Hugging Face answers with a redirect to its CDN),
// refusing https -> http. Accepts 206 (checking Content-Range starts at OFFSET) and 200 (a
// server that ignores Range: the first OFFSET bytes are skipped). http:// and https://.
class HttpSource : public ArtifactSource {
 public:
  explicit HttpSource(std::string base_url, HttpSourceOptions options = {});
  std::string describe() const override;
  void read(const std::string& path, uint64_t offset, uint64_t length,
            const ChunkSink& sink) override;
  const std::string& base_url() const { return base_url_; }

 private:
  std::string base_url_;
  HttpSourceOptions options_;
};

// A source made of a function: for tests and one-off sources.
class CallbackSource : public ArtifactSource {
 public:
  using ReadFn = std::function<void(const std::string& path, uint64_t offset, uint64_t length,
                                    const ChunkSink& sink)>;
  CallbackSource(std::string description, ReadFn read);
  std::string describe() const override;
  void read(const std::string& path, uint64_t offset, uint64_t length,
            const ChunkSink& sink) override;

 private:
  std::string description_;
  ReadFn read_;
};

// "http://..." or "https://..." -> HttpSource; an existing directory -> DirectorySource;
// anything else throws FetchError saying what is accepted.
std::unique_ptr<ArtifactSource> make_source(const std::string& spec);

// sha256 helpers (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  // Lower-case hex; the object is reset afterwards.
  std::string hex_final();
  void reset();

 private:
  void* ctx_;
};
std::string sha256_hex(std::string_view data);
// Hashes a whole file; throws FetchError when it cannot be read.
std::string sha256_file(const std::filesystem::path& file);

}  // namespace llmesh::mesh
