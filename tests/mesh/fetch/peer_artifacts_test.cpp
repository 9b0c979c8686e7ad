// Fetching artifacts from mesh peers (peer_artifacts.h): real transports on 127.0.0.1 in one
// process, a real layer package (stories260K-f32) served by ArtifactServers. A layer range
// comes from a peer byte for byte; a .part resumes over a peer; a peer without the file, a gone
// peer and one sending wrong bytes give way to the next peer and then the origin directory;
// hostile headers get the documented resets; nothing outside a registered manifest is served;
// with the origin down, the layers of the cached manifest still come from peers.
#include "fetch/peer_artifacts.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fetch/artifact_cache.h"
#include "fetch/package_fetch.h"
#include "fetch_fixture.h"
#include "package/package_writer.h"
#include "test_paths.h"
#include "transport/transport.h"

namespace llmesh::mesh {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test::read_all;
using test::TempDir;
using test::write_all;

const std::string kModel = "stories260K-f32.gguf";

// The package of kModel, written once per test binary run.
struct Package {
  TempDir tmp;
  fs::path dir;
  PackageManifest manifest;
  Package() {
    dir = tmp.path / "pkg";
    manifest = write_package(llmesh::test::model_path(kModel), dir.string());
  }
};
const Package& package() {
  static Package p;
  return p;
}

TransportOptions transport_options() {
  TransportOptions o;
  o.handshake_timeout = 2000ms;
  o.ping_interval = 250ms;
  o.max_missed_pings = 20;  // a loaded test machine must not look like a dead peer
  o.drain_timeout = 200ms;
  o.log = [](const std::string& line) {
    if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "transport: %s\n", line.c_str());
  };
  return o;
}

// A node serving artifacts: every stream goes to its ArtifactServer, whatever its header (the
// dispatch a real node does with is_artifact_stream is checked on its own).
struct ServingNode {
  std::unique_ptr<ArtifactServer> server;
  std::unique_ptr<Transport> transport;
  uint16_t port = 0;
  std::vector<std::string> log;
  std::mutex log_mu;

  explicit ServingNode(ArtifactServerOptions o = {}) {
    o.log = [this](const std::string& line) {
      std::lock_guard lk(log_mu);
      log.push_back(line);
      if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "%s\n", line.c_str());
    };
    server = std::make_unique<ArtifactServer>(o);
    Transport::Callbacks cb;
    cb.on_stream = [this](std::shared_ptr<Stream> s) { server->serve(std::move(s)); };
    transport = std::make_unique<Transport>(NodeIdentity::generate(), transport_options(), cb);
    port = transport->bind("127.0.0.1", 0);
  }
  ~ServingNode() { kill(); }
  void kill() {
    if (server) server->stop();
    if (transport) transport->stop();
  }
  NodeId id() const { return transport->id(); }
};

// The fetching node: a transport without a stream handler, connected to the serving nodes.
struct Client {
  Transport transport{NodeIdentity::generate(), transport_options()};
  template <class Node>
  void connect(const Node& n) {
    ASSERT_TRUE(transport.connect("127.0.0.1", n.port, n.id()).has_value());
  }
};

std::vector<ArtifactRef> refs_of(const PackageManifest& m, LayerRange r = {}) {
  std::vector<ArtifactRef> out;
  for (const Artifact* a : m.needed_for(r.first, r.last)) out.push_back({a->path, a->bytes, a->sha256});
  return out;
}

ArtifactRef ref_of(const PackageManifest& m, const std::string& kind, int layer = -1) {
  const Artifact* a = m.find(kind, layer);
  EXPECT_NE(a, nullptr);
  return {a->path, a->bytes, a->sha256};
}

// An origin directory holding only manifest.json: what comes from it beyond the manifest did
// not come from the peers.
fs::path manifest_only_origin(const fs::path& where) {
  fs::create_directories(where);
  fs::copy_file(package().dir / kPackageManifestName, where / kPackageManifestName);
  return where;
}

PackageFetchOptions quiet(const fs::path& cache) {
  PackageFetchOptions o;
  o.cache_root = cache;
  o.warn = [](const std::string&) {};
  o.cache_options.retry_delay = 1ms;
  return o;
}

ArtifactCacheOptions fast_cache() {
  ArtifactCacheOptions o;
  o.retry_delay = 1ms;
  return o;
}

// Opens a raw stream with `header` and returns the reset code it gets (or -1 for an answer).
int64_t reset_for(Transport& t, const NodeId& peer, std::vector<uint8_t> header) {
  auto s = t.open_stream(peer, std::move(header));
  if (!s) return -2;
  s->end();
  auto r = s->read(5000ms);
  if (r.status == Stream::Status::RESET) return s->reset_code().value_or(-3);
  s->reset();
  return -1;
}

std::vector<uint8_t> request(const std::string& path, uint64_t offset, uint64_t length, const std::string& sha) {
  ArtifactRequest r;
  r.path = path;
  r.offset = offset;
  r.length = length;
  r.sha256 = sha;
  return encode_artifact_request(r);
}

TEST(PeerArtifactFormat, RoundTripAndStrictDecoding) {
  const std::string sha(64, 'a');
  ArtifactRequest r = decode_artifact_request(request("layers/blk.0.gguf", 5, 10, std::string(64, 'A')));
  EXPECT_EQ(r.path, "layers/blk.0.gguf");
  EXPECT_EQ(r.offset, 5u);
  EXPECT_EQ(r.length, 10u);
  EXPECT_EQ(r.sha256, sha);  // lower-cased
  EXPECT_TRUE(ArtifactServer::is_artifact_stream(request("a.gguf", 0, 1, sha)));

  using nlohmann::json;
  auto bad = [&](const json& j) { return json::to_msgpack(j); };
  json ok = {{"t", "artifact"}, {"v", 1}, {"p", "a.gguf"}, {"o", 0}, {"n", 1}, {"h", sha}};
  EXPECT_NO_THROW(decode_artifact_request(bad(ok)));
  for (const char* key : {"t", "v", "p", "o", "n", "h"}) {
    json j = ok;
    j.erase(key);
    EXPECT_THROW(decode_artifact_request(bad(j)), ArtifactFormatError) << key;
  }
  for (auto [key, value] : std::vector<std::pair<std::string, json>>{
           {"t", "http"}, {"v", 0}, {"p", "../x"}, {"p", "/etc/passwd"}, {"p", "a/./b"}, {"p", "x.part"},
           {"p", 7}, {"o", -1}, {"o", "0"}, {"n", 1.5}, {"h", "abc"}, {"h", std::string(64, 'g')}}) {
    json j = ok;
    j[key] = value;
    EXPECT_THROW(decode_artifact_request(bad(j)), ArtifactFormatError) << key << "=" << value.dump();
  }
  const std::vector<uint8_t> garbage = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_THROW(decode_artifact_request(garbage), ArtifactFormatError);
  EXPECT_FALSE(ArtifactServer::is_artifact_stream(garbage));
  EXPECT_FALSE(ArtifactServer::is_artifact_stream({}));
  EXPECT_FALSE(ArtifactServer::is_artifact_stream(bad(json{{"t", "http"}, {"v", 1}})));
  std::vector<uint8_t> huge = bad(json{{"t", "artifact"}, {"x", std::string(5000, 'x')}});
  EXPECT_THROW(decode_artifact_request(huge), ArtifactFormatError);
  // Deep nesting is refused by the bounded parser, not followed.
  json deep = 1;
  for (int i = 0; i < 100; ++i) deep = json::array({deep});
  json j = ok;
  j["x"] = deep;
  EXPECT_THROW(decode_artifact_request(bad(j)), ArtifactFormatError);

  ArtifactHead h = decode_artifact_head(encode_artifact_head({kArtifactStatusOk, 1234}));
  EXPECT_EQ(h.status, kArtifactStatusOk);
  EXPECT_EQ(h.bytes, 1234u);
  EXPECT_THROW(decode_artifact_head(garbage), ArtifactFormatError);
  EXPECT_EQ(describe_artifact_reset(kResetArtifactNotFound), "not found (0x121)");
}

TEST(PeerArtifacts, FetchesALayerRangeFromAPeer) {
  const Package& pkg = package();
  ServingNode a;
  EXPECT_EQ(a.server->add_package(pkg.dir), pkg.manifest.artifacts.size());
  Client c;
  c.connect(a);

  TempDir tmp;
  const fs::path origin = manifest_only_origin(tmp.path / "origin");
  std::atomic<int> asked{0};
  auto peers = std::make_shared<PeerSource>(c.transport, [&](const ArtifactRef&) {
    ++asked;
    return std::vector<NodeId>{a.id()};
  });
  FallbackSource source({peers, std::make_shared<DirectorySource>(origin)});
  EXPECT_EQ(source.describe(), "mesh peers, then directory " + origin.string());

  const LayerRange range{0, 1};
  FetchedPackage got = fetch_package(source, origin.string(), range, quiet(tmp.path / "cache"));
  const auto refs = refs_of(pkg.manifest, range);
  ASSERT_EQ(got.artifacts.size(), refs.size());
  uint64_t total = 0;
  for (const ArtifactRef& r : refs) {
    const fs::path local = got.dir / r.path;
    EXPECT_EQ(read_all(local), read_all(pkg.dir / r.path)) << r.path;
    EXPECT_EQ(sha256_file(local), r.sha256);
    total += r.bytes;
  }
  EXPECT_EQ(got.bytes_fetched, total);
  EXPECT_EQ(a.server->stats().bytes_sent, total);
  EXPECT_EQ(a.server->stats().streams, refs.size());
  EXPECT_EQ(asked.load(), static_cast<int>(refs.size()));
  // Only the range's layers came.
  EXPECT_FALSE(fs::exists(got.dir / ref_of(pkg.manifest, "layer", 1).path));

  // The cache answers the second fetch; nothing more goes over the mesh.
  FetchedPackage again = fetch_package(source, origin.string(), range, quiet(tmp.path / "cache"));
  EXPECT_EQ(again.bytes_fetched, 0u);
  EXPECT_EQ(a.server->stats().bytes_sent, total);

  // The fetched cache directory can itself be served (only what it holds).
  ServingNode b;
  EXPECT_EQ(b.server->add_package(got.dir, got.manifest), refs.size());
}

TEST(PeerArtifacts, ResumesAPartialFileOverAPeer) {
  const Package& pkg = package();
  ServingNode a;
  a.server->add_package(pkg.dir);
  Client c;
  c.connect(a);
  PeerSource peers(c.transport, [&](const ArtifactRef&) { return std::vector<NodeId>{a.id()}; });

  TempDir tmp;
  const ArtifactRef ref = ref_of(pkg.manifest, "embeddings");
  ASSERT_GT(ref.bytes, 1000u);
  ArtifactCache cache("model", tmp.path, fast_cache());
  const std::string content = read_all(pkg.dir / ref.path);
  const uint64_t half = ref.bytes / 2;
  fs::path part = cache.local_path(ref);
  part += ".part";
  write_all(part, content.substr(0, half));

  peers.expect({ref});
  fs::path local = cache.ensure(ref, peers);
  EXPECT_EQ(read_all(local), content);
  EXPECT_EQ(a.server->stats().bytes_sent, ref.bytes - half);
  EXPECT_FALSE(fs::exists(part));
}

TEST(PeerArtifacts, LargeFilesComeInChunksAndResumeAfterAPeerDrops) {
  TempDir tmp;
  const std::string content = test::random_bytes((3u << 20) + 12345, 7);
  write_all(tmp.path / "srv" / "big.bin", content);
  const ArtifactRef ref{"big.bin", content.size(), sha256_hex(content)};

  ServingNode a, b;
  ASSERT_TRUE(a.server->add_file(tmp.path / "srv" / "big.bin", ref));
  ASSERT_TRUE(b.server->add_file(tmp.path / "srv" / "big.bin", ref));
  Client c;
  c.connect(a);
  c.connect(b);

  // The sink stops the first read after 1.5 MiB as a dropped connection would (transient):
  // the cache keeps the .part and resumes from there over the next peer in line.
  std::vector<NodeId> order{a.id(), b.id()};
  PeerSource peers(c.transport, [&](const ArtifactRef&) { return order; });
  peers.expect({ref});
  ArtifactCache cache("big", tmp.path / "cache", fast_cache());
  int reads = 0;
  CallbackSource flaky("flaky", [&](const std::string& p, uint64_t off, uint64_t len, const ChunkSink& sink) {
    ++reads;
    uint64_t seen = 0;
    bool first = reads == 1;
    if (first) order = {a.id(), b.id()};
    else order = {b.id()};
    peers.read(p, off, len, [&](const char* d, size_t n) {
      sink(d, n);
      seen += n;
      if (first && seen >= (3u << 19)) throw FetchError("dropped", true);
    });
  });
  fs::path local = cache.ensure(ref, flaky);
  EXPECT_EQ(read_all(local), content);
  EXPECT_EQ(reads, 2);
  EXPECT_GE(a.server->stats().bytes_sent, 3u << 19);
  EXPECT_LT(b.server->stats().bytes_sent, ref.bytes);
  EXPECT_GT(b.server->stats().bytes_sent, 0u);
}

TEST(PeerArtifacts, FallsBackToTheNextPeerThenTheOrigin) {
  const Package& pkg = package();
  ServingNode has, lacks, gone;
  has.server->add_package(pkg.dir);
  Client c;
  c.connect(has);
  c.connect(lacks);
  c.connect(gone);
  const NodeId gone_id = gone.id();
  gone.kill();
  for (int i = 0; i < 100 && c.transport.connected(gone_id); ++i) std::this_thread::sleep_for(20ms);
  const NodeId stranger = NodeIdentity::generate().id();  // never connected

  TempDir tmp;
  const fs::path origin = manifest_only_origin(tmp.path / "origin");
  std::vector<NodeId> candidates{stranger, gone_id, lacks.id(), has.id()};
  auto peers = std::make_shared<PeerSource>(c.transport, [&](const ArtifactRef&) { return candidates; });
  FallbackSource source({peers, std::make_shared<DirectorySource>(origin)});
  FetchedPackage got = fetch_package(source, origin.string(), {1, 2}, quiet(tmp.path / "cache"));
  for (const Artifact& a : got.artifacts) EXPECT_EQ(read_all(got.dir / a.path), read_all(pkg.dir / a.path));
  EXPECT_GT(has.server->stats().streams, 0u);
  EXPECT_EQ(lacks.server->stats().not_found, got.artifacts.size());

  // No peer has them: the origin (the full package directory) does.
  candidates = {stranger, gone_id, lacks.id()};
  const uint64_t before = has.server->stats().bytes_sent;
  FallbackSource with_origin({peers, std::make_shared<DirectorySource>(pkg.dir)});
  FetchedPackage all = fetch_package(with_origin, pkg.dir.string(), {}, quiet(tmp.path / "cache2"));
  for (const Artifact& a : all.artifacts) EXPECT_EQ(read_all(all.dir / a.path), read_all(pkg.dir / a.path));
  EXPECT_EQ(has.server->stats().bytes_sent, before);

  // Nothing has them: the error names each peer and the origin.
  try {
    fetch_package(source, origin.string(), {2, 3}, quiet(tmp.path / "cache3"));
    ADD_FAILURE() << "expected a FetchError";
  } catch (const FetchError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("peer " + stranger.short_hex() + ": not connected"), std::string::npos) << m;
    EXPECT_NE(m.find("peer " + lacks.id().short_hex() + ": stream reset: not found (0x121)"), std::string::npos) << m;
    EXPECT_NE(m.find(origin.string()), std::string::npos) << m;
  }

  // A peer source alone with no candidates says so, without retries (not transient).
  candidates.clear();
  const ArtifactRef ref = ref_of(pkg.manifest, "layer", 0);
  peers->expect({ref});
  try {
    peers->read(ref.path, 0, ref.bytes, [](const char*, size_t) {});
    ADD_FAILURE();
  } catch (const FetchError& e) {
    EXPECT_FALSE(e.transient());
    EXPECT_NE(std::string(e.what()).find("no peer to ask"), std::string::npos) << e.what();
  }
  // At the end: nothing to read, nobody asked; past the end: an error.
  EXPECT_NO_THROW(peers->read(ref.path, ref.bytes, 0, [](const char*, size_t) { ADD_FAILURE(); }));
  EXPECT_THROW(peers->read(ref.path, ref.bytes + 1, 0, [](const char*, size_t) {}), FetchError);
  // A path it has no ref for is not asked for.
  EXPECT_THROW(peers->read("unknown.gguf", 0, 1, [](const char*, size_t) {}), FetchError);
}

TEST(PeerArtifacts, WrongBytesFromAPeerAreRejectedAndTheOriginServes) {
  const Package& pkg = package();
  TempDir tmp;
  const ArtifactRef ref = ref_of(pkg.manifest, "layer", 0);
  const std::string content = read_all(pkg.dir / ref.path);
  std::string wrong = content;
  for (size_t i = wrong.size() / 2; i < wrong.size(); i += 97) wrong[i] = static_cast<char>(wrong[i] ^ 0x5a);
  write_all(tmp.path / "liar" / ref.path, wrong);

  ServingNode liar;
  ASSERT_TRUE(liar.server->add_file(tmp.path / "liar" / ref.path, ref));  // same size, registered as the real hash
  Client c;
  c.connect(liar);

  for (bool resumed : {false, true}) {
    SCOPED_TRACE(resumed ? "resumed" : "from scratch");
    auto peers = std::make_shared<PeerSource>(c.transport, [&](const ArtifactRef&) {
      return std::vector<NodeId>{liar.id()};
    });
    FallbackSource source({peers, std::make_shared<DirectorySource>(pkg.dir)});
    source.expect({ref});
    ArtifactCache cache(resumed ? "resumed" : "scratch", tmp.path / "cache", fast_cache());
    if (resumed) {  // a right first half; the liar sends the (wrong) rest
      fs::path part = cache.local_path(ref);
      part += ".part";
      write_all(part, content.substr(0, content.size() / 2));
    }
    const uint64_t before = liar.server->stats().bytes_sent;
    fs::path local = cache.ensure(ref, source);
    EXPECT_EQ(read_all(local), content);
    EXPECT_GT(liar.server->stats().bytes_sent, before);  // it was asked, once
    EXPECT_EQ(peers->distrusted(ref.sha256), std::set<NodeId>{liar.id()});
  }
}

// A peer answering artifact streams by a script instead of an ArtifactServer.
struct HostilePeer {
  std::atomic<int> mode{0};
  std::string content;  // what it "serves"
  std::unique_ptr<Transport> transport;
  std::vector<std::thread> threads;
  std::mutex mu;
  uint16_t port = 0;

  HostilePeer() {
    Transport::Callbacks cb;
    cb.on_stream = [this](std::shared_ptr<Stream> s) {
      std::lock_guard lk(mu);
      threads.emplace_back([this, s] { answer(*s); });
    };
    transport = std::make_unique<Transport>(NodeIdentity::generate(), transport_options(), cb);
    port = transport->bind("127.0.0.1", 0);
  }
  ~HostilePeer() {
    transport->stop();
    for (auto& t : threads) t.join();
  }
  NodeId id() const { return transport->id(); }
  void answer(Stream& s) {
    ArtifactRequest req = decode_artifact_request(s.header());
    auto bytes = [&](uint64_t off, uint64_t n) {
      return std::vector<uint8_t>(content.begin() + static_cast<long>(off), content.begin() + static_cast<long>(off + n));
    };
    const uint64_t n = content.size() - req.offset;
    switch (mode.load()) {
      case 0:  // a head for fewer bytes than asked
        s.write(encode_artifact_head({kArtifactStatusOk, n - 1}));
        s.write(bytes(req.offset, n - 1));
        break;
      case 1:  // more bytes than the head said
        s.write(encode_artifact_head({kArtifactStatusOk, n}));
        s.write(bytes(req.offset, n));
        s.write(std::vector<uint8_t>{1});
        break;
      case 2:  // an empty message
        s.write(encode_artifact_head({kArtifactStatusOk, n}));
        s.write(std::vector<uint8_t>{});
        break;
      case 3:  // END early
        s.write(encode_artifact_head({kArtifactStatusOk, n}));
        s.write(bytes(req.offset, n / 2));
        break;
      case 4:  // not a head
        s.write(std::vector<uint8_t>{'n', 'o'});
        break;
      case 5:  // another status
        s.write(encode_artifact_head({404, 0}));
        break;
    }
    s.end();
  }
};

TEST(PeerArtifacts, APeerBreakingTheFormatGivesWayToTheNext) {
  const Package& pkg = package();
  const ArtifactRef ref = ref_of(pkg.manifest, "layer", 0);
  HostilePeer bad;
  bad.content = read_all(pkg.dir / ref.path);
  ServingNode good;
  good.server->add_package(pkg.dir);
  Client c;
  c.connect(bad);
  c.connect(good);

  const char* expected[] = {"offers", "more bytes than its head said", "an empty data message",
                            "the stream ended after", "not a valid MessagePack map", "status 404"};
  for (int mode = 0; mode < 6; ++mode) {
    SCOPED_TRACE(mode);
    bad.mode = mode;
    std::vector<NodeId> order{bad.id()};
    PeerSource peers(c.transport, [&](const ArtifactRef&) { return order; });
    peers.expect({ref});
    std::string got;
    try {
      peers.read(ref.path, 0, ref.bytes, [&](const char* d, size_t n) { got.append(d, n); });
      ADD_FAILURE() << "expected a FetchError";
    } catch (const FetchError& e) {
      EXPECT_TRUE(e.transient());
      EXPECT_NE(std::string(e.what()).find(expected[mode]), std::string::npos) << e.what();
    }
    // With a good peer after it, the read completes: the good one continues where the bad stopped.
    order = {bad.id(), good.id()};
    got.clear();
    peers.read(ref.path, 0, ref.bytes, [&](const char* d, size_t n) { got.append(d, n); });
    EXPECT_EQ(got.size(), ref.bytes);
    EXPECT_EQ(sha256_hex(got), ref.sha256);
  }
}

TEST(PeerArtifacts, HostileHeadersGetTheDocumentedResets) {
  const Package& pkg = package();
  ServingNode a;
  a.server->add_package(pkg.dir);
  Client c;
  c.connect(a);
  const ArtifactRef ref = ref_of(pkg.manifest, "layer", 0);

  EXPECT_EQ(reset_for(c.transport, a.id(), {'h', 'e', 'l', 'l', 'o'}), kResetArtifactBadRequest);
  EXPECT_EQ(reset_for(c.transport, a.id(), {}), kResetArtifactBadRequest);
  {
    using nlohmann::json;
    json j = {{"t", "artifact"}, {"v", 1}, {"p", "../x"}, {"o", 0}, {"n", 1}, {"h", ref.sha256}};
    EXPECT_EQ(reset_for(c.transport, a.id(), json::to_msgpack(j)), kResetArtifactBadRequest);
    j["p"] = ref.path;
    j["o"] = -5;
    EXPECT_EQ(reset_for(c.transport, a.id(), json::to_msgpack(j)), kResetArtifactBadRequest);
  }
  EXPECT_EQ(reset_for(c.transport, a.id(), request(ref.path, 0, ref.bytes, std::string(64, '0'))),
            kResetArtifactNotFound);
  EXPECT_EQ(reset_for(c.transport, a.id(), request(ref.path, ref.bytes + 1, 1, ref.sha256)), kResetArtifactBadRequest);
  EXPECT_EQ(reset_for(c.transport, a.id(), request(ref.path, ~0ull, ~0ull, ref.sha256)), kResetArtifactBadRequest);
  // Offset at the end: an empty answer. A huge length: what there is.
  {
    auto s = c.transport.open_stream(a.id(), request(ref.path, ref.bytes, 10, ref.sha256));
    ASSERT_TRUE(s);
    s->end();
    auto h = s->read(5000ms);
    ASSERT_EQ(h.status, Stream::Status::OK);
    EXPECT_EQ(decode_artifact_head(h.message).bytes, 0u);
    EXPECT_EQ(s->read(5000ms).status, Stream::Status::END);
  }
  {
    auto s = c.transport.open_stream(a.id(), request(ref.path, ref.bytes - 10, ~0ull, ref.sha256));
    ASSERT_TRUE(s);
    s->end();
    auto h = s->read(5000ms);
    ASSERT_EQ(h.status, Stream::Status::OK);
    EXPECT_EQ(decode_artifact_head(h.message).bytes, 10u);
    auto d = s->read(5000ms);
    ASSERT_EQ(d.status, Stream::Status::OK);
    EXPECT_EQ(std::string(d.message.begin(), d.message.end()), read_all(pkg.dir / ref.path).substr(ref.bytes - 10));
    EXPECT_EQ(s->read(5000ms).status, Stream::Status::END);
  }
  const auto st = a.server->stats();
  EXPECT_EQ(st.bad_request, 6u);
  EXPECT_EQ(st.not_found, 1u);
  EXPECT_EQ(st.streams, 2u);
}

TEST(PeerArtifacts, ServesOnlyFilesOfARegisteredManifest) {
  const Package& pkg = package();
  TempDir tmp;
  const fs::path dir = tmp.path / "pkg";
  fs::copy(pkg.dir, dir, fs::copy_options::recursive);
  // Not in the manifest.
  write_all(dir / "secret.txt", "the mesh secret");
  const std::string secret_sha = sha256_hex(std::string("the mesh secret"));
  // In the manifest but changed (other size) or replaced by a symbolic link: not registered.
  const ArtifactRef changed = ref_of(pkg.manifest, "layer", 0);
  write_all(dir / changed.path, "truncated");
  const ArtifactRef linked = ref_of(pkg.manifest, "layer", 1);
  fs::remove(dir / linked.path);
  fs::create_symlink(pkg.dir / linked.path, dir / linked.path);

  ServingNode a;
  EXPECT_EQ(a.server->add_package(dir), pkg.manifest.artifacts.size() - 2);
  EXPECT_FALSE(a.server->has(secret_sha));
  EXPECT_FALSE(a.server->has(changed.sha256));
  EXPECT_FALSE(a.server->has(linked.sha256));
  Client c;
  c.connect(a);
  EXPECT_EQ(reset_for(c.transport, a.id(), request("secret.txt", 0, 15, secret_sha)), kResetArtifactNotFound);
  EXPECT_EQ(reset_for(c.transport, a.id(), request(changed.path, 0, changed.bytes, changed.sha256)),
            kResetArtifactNotFound);
  EXPECT_EQ(reset_for(c.transport, a.id(), request(linked.path, 0, linked.bytes, linked.sha256)),
            kResetArtifactNotFound);
  // The path in a request names nothing: a registered hash under another path is that artifact.
  const ArtifactRef meta = ref_of(pkg.manifest, "metadata");
  {
    auto s = c.transport.open_stream(a.id(), request("secret.txt", 0, meta.bytes, meta.sha256));
    ASSERT_TRUE(s);
    s->end();
    auto h = s->read(5000ms);
    ASSERT_EQ(h.status, Stream::Status::OK);
    EXPECT_EQ(decode_artifact_head(h.message).bytes, meta.bytes);
    s->reset();
  }
  // A registered file that changes afterwards is no longer served.
  const ArtifactRef out = ref_of(pkg.manifest, "output");
  write_all(dir / out.path, "changed");
  EXPECT_EQ(reset_for(c.transport, a.id(), request(out.path, 0, out.bytes, out.sha256)), kResetArtifactNotFound);
  // remove_package forgets them.
  EXPECT_EQ(a.server->remove_package(dir), pkg.manifest.artifacts.size() - 2);
  EXPECT_EQ(a.server->size(), 0u);
  EXPECT_EQ(reset_for(c.transport, a.id(), request(meta.path, 0, meta.bytes, meta.sha256)), kResetArtifactNotFound);
}

TEST(PeerArtifacts, ExtraStreamsAreBusyAndStopResetsAndJoins) {
  TempDir tmp;
  // Larger than the stream window (4 MiB), so an unread stream keeps its server thread waiting.
  const std::string content = test::random_bytes(9u << 20, 3);
  write_all(tmp.path / "big.bin", content);
  const ArtifactRef ref{"big.bin", content.size(), sha256_hex(content)};
  ArtifactServerOptions o;
  o.max_concurrent = 1;
  ServingNode a(o);
  ASSERT_TRUE(a.server->add_file(tmp.path / "big.bin", ref));
  Client c;
  c.connect(a);

  auto first = c.transport.open_stream(a.id(), request(ref.path, 0, ref.bytes, ref.sha256));
  ASSERT_TRUE(first);
  first->end();
  ASSERT_EQ(first->read(5000ms).status, Stream::Status::OK);  // the head: it is being served
  EXPECT_EQ(reset_for(c.transport, a.id(), request(ref.path, 0, ref.bytes, ref.sha256)), kResetArtifactBusy);
  EXPECT_EQ(a.server->stats().busy, 1u);

  const auto t0 = std::chrono::steady_clock::now();
  a.server->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  // The reader sees the data that was under way, then the reset.
  Stream::ReadResult r;
  do r = first->read(5000ms);
  while (r.status == Stream::Status::OK);
  EXPECT_EQ(r.status, Stream::Status::RESET);
  EXPECT_EQ(first->reset_code(), kResetArtifactStopping);
  EXPECT_EQ(reset_for(c.transport, a.id(), request(ref.path, 0, ref.bytes, ref.sha256)), kResetArtifactStopping);
}

TEST(PeerArtifacts, WithTheOriginDownTheCachedManifestsLayersComeFromPeers) {
  const Package& pkg = package();
  ServingNode a;
  a.server->add_package(pkg.dir);
  Client c;
  c.connect(a);
  TempDir tmp;
  const fs::path origin = manifest_only_origin(tmp.path / "origin");
  auto peers = std::make_shared<PeerSource>(c.transport, [&](const ArtifactRef&) { return std::vector<NodeId>{a.id()}; });
  FallbackSource source({peers, std::make_shared<DirectorySource>(origin)});
  FetchedPackage first = fetch_package(source, origin.string(), {0, 1}, quiet(tmp.path / "cache"));
  EXPECT_FALSE(first.offline);

  fs::remove_all(origin);  // the origin is down
  std::vector<std::string> warnings;
  PackageFetchOptions o = quiet(tmp.path / "cache");
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  FetchedPackage next = fetch_package(source, origin.string(), {1, 3}, o);
  EXPECT_TRUE(next.offline);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("using the manifest cached"), std::string::npos) << warnings[0];
  EXPECT_GT(next.bytes_fetched, 0u);
  EXPECT_GT(next.bytes_cached, 0u);  // the metadata came with the first fetch
  for (const Artifact& art : next.artifacts) EXPECT_EQ(read_all(next.dir / art.path), read_all(pkg.dir / art.path));

  // The plain form does not fetch what is missing while the origin is down.
  EXPECT_THROW(fetch_package(origin.string(), {3, 5}, quiet(tmp.path / "cache")), FetchError);
  // Neither peers nor origin: the error says both.
  a.kill();
  try {
    fetch_package(source, origin.string(), {3, 5}, quiet(tmp.path / "cache"));
    ADD_FAILURE() << "expected a FetchError";
  } catch (const FetchError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be reached"), std::string::npos) << e.what();
  }
}

TEST(PeerArtifacts, OldFetchPackageSignatureStillWorks) {
  TempDir tmp;
  FetchedPackage got = fetch_package(package().dir.string(), {0, 1}, quiet(tmp.path / "cache"));
  for (const Artifact& a : got.artifacts) EXPECT_EQ(read_all(got.dir / a.path), read_all(package().dir / a.path));
}

}  // namespace
}  // namespace llmesh::mesh
