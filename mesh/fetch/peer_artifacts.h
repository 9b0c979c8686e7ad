// Model artifacts from other mesh nodes: an "artifact" stream over the transport
// (docs/protocol.md, "Artifact streams"), the node that serves them (ArtifactServer), the
// source that fetches them (PeerSource) and a source that tries several in order
// (FallbackSource: peers first, then the origin). Behaviour: docs/fetching.md, "Fetching from
// peers".
//
// Serving (a node that holds a package, e.g. one it fetched):
//
//   ArtifactServer server;                                   // ArtifactServerOptions{} for limits
//   server.add_package(fetched.dir, fetched.manifest);       // only the files listed and present
//   Transport::Callbacks cb;
//   cb.on_stream = [&](std::shared_ptr<Stream> s) {         // on the transport's I/O thread
//     if (ArtifactServer::is_artifact_stream(s->header())) server.serve(std::move(s));
//     else ...;                                              // other kinds of streams
//   };
//   ...
//   server.stop();                                           // before the transport goes
//
// Fetching (peers first, then the origin URL or directory):
//
//   auto peers = std::make_shared<PeerSource>(transport, [&](const ArtifactRef& ref) {
//     return std::vector<NodeId>{...};                       // connected nodes likely to hold it
//   });
//   FallbackSource source({peers, std::shared_ptr<ArtifactSource>(make_source(origin_spec))});
//   FetchedPackage p = fetch_package(source, origin_spec, LayerRange{first, last}, options);
//
// fetch_package tells the source the artifacts it is about to read (ArtifactSource::expect),
// which is how PeerSource learns the sha256 it asks peers for; manifest.json itself has no
// known hash and always comes from the next source (the origin).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fetch/fetch_source.h"
#include "identity/node_identity.h"
#include "package/manifest.h"
#include "transport/stream.h"

namespace llmesh::mesh {

class Transport;

// ---- the stream format ----

inline constexpr const char* kArtifactStreamType = "artifact";
inline constexpr uint32_t kArtifactFormatVersion = 1;
inline constexpr size_t kMaxArtifactRequestBytes = 4096;  // the OPEN header
inline constexpr size_t kMaxArtifactHeadBytes = 256;      // the answer's head message
inline constexpr size_t kArtifactChunkBytes = 1u << 20;   // one DATA message, at most
inline constexpr uint32_t kArtifactStatusOk = 200;        // the head's "s": n bytes follow

// Application reset codes of artifact streams (before the head; transport codes 0-5 keep their
// meaning, e.g. 5 = the node takes no streams at all).
inline constexpr uint32_t kResetArtifactBadRequest = 0x120;  // the header broke this format, or the offset is past the end
inline constexpr uint32_t kResetArtifactNotFound = 0x121;    // no registered artifact has that sha256
inline constexpr uint32_t kResetArtifactBusy = 0x122;        // at its limit of concurrent artifact streams
inline constexpr uint32_t kResetArtifactStopping = 0x123;    // the server is stopping
// "not found (0x121)", "bad request (0x120)", ... and the transport's names for the others.
std::string describe_artifact_reset(uint32_t code);

class ArtifactFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The OPEN header: {t:"artifact", v:1, p:path, o:offset, n:length, h:sha256}.
struct ArtifactRequest {
  uint32_t version = kArtifactFormatVersion;
  std::string path;     // "p": informative (logs); must pass validate_artifact_path
  uint64_t offset = 0;  // "o": first byte wanted
  uint64_t length = 0;  // "n": bytes wanted from offset (the server sends at most to the end)
  std::string sha256;   // "h": 64 lowercase hex digits: what the server looks the file up by
};
std::vector<uint8_t> encode_artifact_request(const ArtifactRequest& r);
// Bounded (kMaxArtifactRequestBytes, depth 2, short strings) and strict: a map, "t" ==
// "artifact", "v" >= 1, "p" a valid artifact path, "o" and "n" unsigned, "h" 64 hex digits
// (returned lower case). Unknown keys are ignored. Throws ArtifactFormatError naming the field.
ArtifactRequest decode_artifact_request(std::span<const uint8_t> bytes);

// The answer's first message: {s: status, n: bytes that follow}.
struct ArtifactHead {
  uint32_t status = kArtifactStatusOk;
  uint64_t bytes = 0;
};
std::vector<uint8_t> encode_artifact_head(const ArtifactHead& h);
ArtifactHead decode_artifact_head(std::span<const uint8_t> bytes);  // throws ArtifactFormatError

// ---- serving ----

struct ArtifactServerOptions {
  // Artifact streams served at once; more are reset with kResetArtifactBusy.
  size_t max_concurrent = 8;
  // A reader that gives no flow-control credit for this long is reset (cancel).
  std::chrono::milliseconds write_timeout{60000};
  // One line per refused or failed stream. Default: nothing.
  std::function<void(const std::string&)> log;
};

// Serves artifact streams from files it was told about, looked up by sha256 only: a request
// can never name a file that is not listed in a registered manifest (the path in the request
// is checked and logged, never used to open anything). Each stream runs on a thread of its own.
// Thread-safe.
class ArtifactServer {
 public:
  struct Stats {
    uint64_t streams = 0;      // answered with a head
    uint64_t bytes_sent = 0;   // artifact bytes written
    uint64_t bad_request = 0;  // reset 0x120
    uint64_t not_found = 0;    // reset 0x121 (including a registered file that vanished or changed size)
    uint64_t busy = 0;         // reset 0x122
  };

  explicit ArtifactServer(ArtifactServerOptions options = {});
  ~ArtifactServer();  // stop()
  ArtifactServer(const ArtifactServer&) = delete;
  ArtifactServer& operator=(const ArtifactServer&) = delete;

  // Registers the artifacts of `manifest` that are present under `dir` as regular files (not
  // symbolic links) of the size the manifest gives; absent ones are skipped (a cache directory
  // holds only the layers its node fetched). With `verify_sha256`, each file is hashed and
  // skipped when it does not match (readers verify anyway). Returns how many were registered.
  // A sha256 registered twice keeps the later file.
  size_t add_package(const std::filesystem::path& dir, const PackageManifest& manifest,
                     bool verify_sha256 = false);
  // The same with DIR/manifest.json (read_manifest); throws std::runtime_error when it is bad.
  size_t add_package(const std::filesystem::path& dir);
  // One file under the given ref (its size and sha256); false when it is not a regular file of
  // that size.
  bool add_file(const std::filesystem::path& file, const ArtifactRef& ref);
  // Forgets every artifact registered from `dir` (by add_package); returns how many.
  size_t remove_package(const std::filesystem::path& dir);
  bool has(const std::string& sha256) const;
  size_t size() const;  // artifacts registered

  // True when the OPEN header is a msgpack map whose "t" is "artifact" (cheap, bounded; the
  // rest is checked by serve()). For a node's on_stream dispatch.
  static bool is_artifact_stream(std::span<const uint8_t> header);
  // Takes a stream the peer opened with an artifact header and serves it on its own thread.
  // Quick and non-blocking: callable from the transport's on_stream callback. Streams beyond
  // max_concurrent, or after stop(), are reset at once.
  void serve(std::shared_ptr<Stream> stream);
  // Resets the streams being served (kResetArtifactStopping) and joins their threads.
  void stop();
  Stats stats() const;

 private:
  struct Entry {
    std::filesystem::path file;
    uint64_t bytes = 0;
    std::string path;  // the manifest path (logs)
    std::filesystem::path package;  // the directory it was registered from (remove_package)
  };
  struct Worker {
    std::thread thread;
    std::shared_ptr<Stream> stream;
    bool done = false;
  };
  void run(uint64_t key, std::shared_ptr<Stream> stream);
  void log(const std::string& line) const;
  void reap_locked();  // joins finished workers (their threads have returned)

  ArtifactServerOptions options_;
  mutable std::mutex m_;
  std::map<std::string, Entry> by_sha_;
  std::map<uint64_t, Worker> workers_;
  uint64_t next_key_ = 0;
  size_t active_ = 0;
  bool stopping_ = false;
  Stats stats_;
};

// ---- fetching ----

// The nodes to ask for an artifact, in order (e.g. nodes serving the model's layers). Only
// connected ones can be asked: PeerSource never dials.
using PeerCandidatesFn = std::function<std::vector<NodeId>(const ArtifactRef& ref)>;

struct PeerSourceOptions {
  // Longest wait for a peer's head after opening the stream.
  std::chrono::milliseconds head_timeout{15000};
  // Longest silence between two data messages.
  std::chrono::milliseconds read_timeout{30000};
};

// Reads artifacts from mesh peers over artifact streams. A peer is asked by the artifact's
// sha256, so PeerSource must know each path's ref before read(): fetch_package passes them
// through expect() (or call it yourself with the refs you will ensure()). read() delivers the
// bytes from offset to the ref's size (an offset past it is an error); it asks the
// candidates in order; when one fails (not connected, reset, timeout, short answer) it goes on
// with the next from the byte it got to. It throws FetchError naming every peer tried and why:
// transient when peers were tried, not transient for a path it has no ref for or an artifact no
// peer is offered for. The sink's own exceptions pass through untouched.
//
// Bad bytes: on a read from offset 0 PeerSource hashes what it delivers; when the whole file
// came and its sha256 is wrong, the peers that sent it are not asked for that artifact again
// (by this object). A read from offset 0 of an artifact this object completed from a later
// offset is taken as the cache's restart after a sha256 mismatch (the cache re-reads from
// scratch only then), and the peers of that completion are skipped too. So the cache's second,
// from-scratch download goes to another peer or, under a FallbackSource, to the origin.
class PeerSource : public ArtifactSource {
 public:
  PeerSource(Transport& transport, PeerCandidatesFn candidates, PeerSourceOptions options = {});
  std::string describe() const override;  // "mesh peers"
  // Learns path -> ref (sha256, size) for the artifacts to come; may be called repeatedly.
  void expect(const std::vector<ArtifactRef>& refs) override;
  void read(const std::string& path, uint64_t offset, uint64_t length,
            const ChunkSink& sink) override;
  // Peers found sending wrong bytes for an artifact (by sha256), for logs and tests.
  std::set<NodeId> distrusted(const std::string& sha256) const;

 private:
  Transport& transport_;
  PeerCandidatesFn candidates_;
  PeerSourceOptions options_;
  mutable std::mutex m_;
  std::map<std::string, ArtifactRef> refs_;                 // path -> ref
  std::map<std::string, std::set<NodeId>> distrusted_;      // sha256 -> peers
  std::map<std::string, std::set<NodeId>> completed_tail_;  // sha256 -> peers of a completion from offset > 0
};

// Tries its sources in order for each read: the first that delivers the artifact wins; when one
// fails after some bytes, the next continues from there (the sources hold the same, hash-named
// file). Throws FetchError listing every source's error when all fail (transient when any was).
// The sink's own exceptions pass through. expect() goes to every source.
class FallbackSource : public ArtifactSource {
 public:
  explicit FallbackSource(std::vector<std::shared_ptr<ArtifactSource>> sources);
  std::string describe() const override;  // "mesh peers, then https://..."
  void expect(const std::vector<ArtifactRef>& refs) override;
  void read(const std::string& path, uint64_t offset, uint64_t length,
            const ChunkSink& sink) override;

 private:
  std::vector<std::shared_ptr<ArtifactSource>> sources_;
};

}  // namespace llmesh::mesh
