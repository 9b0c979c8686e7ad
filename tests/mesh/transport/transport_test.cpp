// Transports on 127.0.0.1: handshake, pinning, messages, streams, keepalive, GOAWAY, reconnect,
// simultaneous dials, channel binding; plus a hand-driven raw peer for hostile or silent peers.
#include "transport/transport.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include "transport/frame.h"
#include "transport/tls_context.h"

using namespace llmesh::mesh;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

TransportOptions fast_options() {
  TransportOptions o;
  o.handshake_timeout = 1000ms;
  o.ping_interval = 100ms;
  o.max_missed_pings = 5;
  o.drain_timeout = 1000ms;
  o.log = [](const std::string&) {};
  return o;
}

// A transport plus a record of what its callbacks saw.
struct Node {
  struct Msg {
    NodeId from;
    uint16_t kind;
    std::vector<uint8_t> body;
  };
  std::mutex m;
  std::condition_variable cv;
  std::vector<PeerInfo> connected;
  std::vector<std::pair<NodeId, CloseReason>> disconnected;
  std::vector<Msg> messages;
  std::vector<std::shared_ptr<Stream>> streams;
  std::vector<std::string> logs;
  std::unique_ptr<Transport> t;
  uint16_t port = 0;

  explicit Node(TransportOptions o = fast_options(), bool with_streams = true) {
    o.log = [this](const std::string& line) {
      if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "%s\n", line.c_str());
      std::lock_guard lk(m);
      logs.push_back(line);
    };
    Transport::Callbacks cb;
    cb.on_connected = [this](const PeerInfo& p) { add([&] { connected.push_back(p); }); };
    cb.on_disconnected = [this](const NodeId& id, const CloseReason& why) { add([&] { disconnected.push_back({id, why}); }); };
    cb.on_message = [this](const NodeId& id, uint16_t kind, std::vector<uint8_t> body) {
      add([&] { messages.push_back({id, kind, std::move(body)}); });
    };
    if (with_streams) cb.on_stream = [this](std::shared_ptr<Stream> s) { add([&] { streams.push_back(std::move(s)); }); };
    t = std::make_unique<Transport>(NodeIdentity::generate(), o, cb);
    port = t->bind("127.0.0.1", 0);
  }
  template <typename F>
  void add(F f) {
    std::lock_guard lk(m);
    f();
    cv.notify_all();
  }
  template <typename P>
  bool wait(P pred, std::chrono::milliseconds timeout = 3000ms) {
    std::unique_lock lk(m);
    return cv.wait_for(lk, timeout, pred);
  }
  const NodeId& id() const { return t->id(); }
  PeerInfo dial(Node& other) {
    CloseReason why;
    auto info = t->connect("127.0.0.1", other.port, other.id(), &why);
    EXPECT_TRUE(info) << why.describe();
    return info.value_or(PeerInfo{});
  }
  size_t count_disconnected() {
    std::lock_guard lk(m);
    return disconnected.size();
  }
  bool has_log(const std::string& needle) {
    std::lock_guard lk(m);
    for (auto& l : logs)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
};

// Polls a condition that no callback signals.
template <typename P>
bool eventually(P pred, std::chrono::milliseconds timeout = 3000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

// A hand-driven TLS peer speaking raw frames, for behaviour a Transport never shows.
struct RawPeer {
  asio::io_context io;
  NodeIdentity identity = NodeIdentity::generate();
  asio::ssl::context ctx = make_tls_context(identity);
  asio::ssl::stream<tcp::socket> s{io, ctx};
  FrameDecoder dec{kMaxMaxPayload};
  std::vector<uint8_t> buf = std::vector<uint8_t>(65536);

  void connect(uint16_t port) {
    s.lowest_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    set_peer_verification(s, std::nullopt, std::make_shared<std::string>());
    s.handshake(asio::ssl::stream_base::client);
  }
  void send(const std::vector<uint8_t>& bytes) { asio::write(s, asio::buffer(bytes)); }
  void send_frame(FrameType t, uint8_t flags, uint32_t sid, const std::vector<uint8_t>& payload) {
    send(encode_frame(t, flags, sid, payload));
  }
  void hello(uint32_t vmin = 1, uint32_t vmax = 1) {
    Hello h;
    h.version_min = vmin;
    h.version_max = vmax;
    h.id = identity.id();
    h.max_payload = 1 << 20;
    h.stream_window = 1 << 20;
    send_frame(FrameType::HELLO, 0, 0, encode_hello(h));
  }
  // The next frame, or nullopt on timeout / end of connection.
  std::optional<Frame> read_frame(std::chrono::milliseconds timeout = 2000ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto f = dec.next()) return f;
      if (dec.failed()) return std::nullopt;
      bool done = false;
      boost::system::error_code ec;
      size_t n = 0;
      s.async_read_some(asio::buffer(buf), [&](boost::system::error_code e, size_t k) {
        ec = e;
        n = k;
        done = true;
      });
      io.restart();
      io.run_until(deadline);
      if (!done) {
        s.lowest_layer().cancel();
        io.restart();
        io.run();
        return std::nullopt;
      }
      if (ec) return std::nullopt;
      dec.feed(std::span<const uint8_t>(buf.data(), n));
    }
  }
  // Reads until a frame of this type (skipping PINGs and the like).
  std::optional<Frame> expect(FrameType t, std::chrono::milliseconds timeout = 2000ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto f = read_frame(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
      if (!f) return std::nullopt;
      if (f->kind() == t) return f;
    }
    return std::nullopt;
  }
};

}  // namespace

TEST(Transport, HandshakeTeachesBothSidesTheirIds) {
  TransportOptions o = fast_options();
  o.capabilities = {{"role", "server"}};
  o.software_version = "llmesh/test";
  Node a(o), b;
  auto info = b.dial(a);
  EXPECT_EQ(info.id, a.id());
  EXPECT_TRUE(info.outbound);
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(info.software, "llmesh/test");
  EXPECT_EQ(info.capabilities["role"], "server");
  EXPECT_EQ(info.address, "127.0.0.1");
  EXPECT_EQ(info.port, a.port);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  EXPECT_EQ(a.connected[0].id, b.id());
  EXPECT_FALSE(a.connected[0].outbound);
  ASSERT_TRUE(b.wait([&] { return b.connected.size() == 1; }));
  EXPECT_TRUE(a.t->connected(b.id()));
  EXPECT_TRUE(b.t->connected(a.id()));
  EXPECT_EQ(a.t->peers().size(), 1u);
  // Unpinned dials work too.
  Node c;
  auto unpinned = c.t->connect("127.0.0.1", a.port);
  ASSERT_TRUE(unpinned);
  EXPECT_EQ(unpinned->id, a.id());
}

TEST(Transport, ChannelBindingMatchesAcrossOneConnectionOnly) {
  Node a, b;
  b.dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  auto ab = a.t->channel_binding(b.id());
  auto ba = b.t->channel_binding(a.id());
  ASSERT_TRUE(ab && ba);
  EXPECT_EQ(*ab, *ba);
  EXPECT_EQ(a.connected[0].channel_binding, *ab);
  EXPECT_NE(*ab, (std::array<uint8_t, 32>{}));
  // Another connection (a third node), another value.
  Node c;
  c.dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 2; }));
  EXPECT_NE(*a.t->channel_binding(c.id()), *ab);
  // And a reconnect between the same two nodes gets a new one.
  b.t->disconnect(a.id());
  ASSERT_TRUE(a.wait([&] { return a.disconnected.size() == 1; }));
  ASSERT_TRUE(eventually([&] { return !b.t->connected(a.id()); }));
  b.dial(a);
  ASSERT_TRUE(eventually([&] { return a.t->connected(b.id()); }));
  EXPECT_NE(*a.t->channel_binding(b.id()), *ab);
  EXPECT_EQ(*a.t->channel_binding(b.id()), *b.t->channel_binding(a.id()));
}

TEST(Transport, PinnedIdMismatchIsRefused) {
  Node a, b;
  auto stranger = NodeIdentity::generate().id();
  CloseReason why;
  auto info = b.t->connect("127.0.0.1", a.port, stranger, &why);
  EXPECT_FALSE(info);
  EXPECT_EQ(why.code, static_cast<uint32_t>(GoAwayCode::IDENTITY_MISMATCH)) << why.describe();
  EXPECT_NE(why.message.find("expected " + stranger.short_hex()), std::string::npos) << why.message;
  EXPECT_FALSE(b.t->connected(a.id()));
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(a.t->connected(b.id()));
  std::lock_guard lk(a.m);
  EXPECT_TRUE(a.connected.empty());
}

TEST(Transport, ConnectingToItselfIsRefused) {
  Node a;
  CloseReason why;
  EXPECT_FALSE(a.t->connect("127.0.0.1", a.port, std::nullopt, &why));
  EXPECT_EQ(why.code, static_cast<uint32_t>(GoAwayCode::IDENTITY_MISMATCH)) << why.describe();
}

TEST(Transport, MessagesBothWaysIncludingSplitOnes) {
  Node a, b;
  b.dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  auto big = pattern(3 * 1024 * 1024 + 17, 1);  // > 1 MiB frames: split with MORE
  ASSERT_TRUE(b.t->send(a.id(), 7, big));
  ASSERT_TRUE(b.t->send(a.id(), 8, {}));
  std::vector<uint8_t> hi = {'h', 'i'};
  ASSERT_TRUE(a.t->send(b.id(), 9, hi));
  ASSERT_TRUE(a.wait([&] { return a.messages.size() == 2; }));
  EXPECT_EQ(a.messages[0].from, b.id());
  EXPECT_EQ(a.messages[0].kind, 7);
  EXPECT_EQ(a.messages[0].body, big);
  EXPECT_EQ(a.messages[1].kind, 8);
  EXPECT_TRUE(a.messages[1].body.empty());
  ASSERT_TRUE(b.wait([&] { return b.messages.size() == 1; }));
  EXPECT_EQ(b.messages[0].body, hi);
  // Not connected / too large: refused locally.
  EXPECT_FALSE(a.t->send(NodeIdentity::generate().id(), 1, hi));
  EXPECT_FALSE(a.t->send(b.id(), 1, std::vector<uint8_t>(17u << 20)));
}

TEST(Transport, ThreeNodesRouteMessagesToTheRightPeer) {
  Node a, b, c;
  b.dial(a);
  c.dial(a);
  c.dial(b);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 2; }));
  ASSERT_TRUE(b.wait([&] { return b.connected.size() == 2; }));
  ASSERT_TRUE(c.wait([&] { return c.connected.size() == 2; }));
  std::vector<uint8_t> x = {1}, y = {2};
  ASSERT_TRUE(a.t->send(b.id(), 1, x));
  ASSERT_TRUE(a.t->send(c.id(), 1, y));
  ASSERT_TRUE(c.t->send(b.id(), 2, y));
  ASSERT_TRUE(b.wait([&] { return b.messages.size() == 2; }));
  ASSERT_TRUE(c.wait([&] { return c.messages.size() == 1; }));
  EXPECT_EQ(c.messages[0].from, a.id());
  EXPECT_EQ(c.messages[0].body, y);
  for (auto& m : b.messages) EXPECT_EQ(m.body, m.from == a.id() ? x : y);
}

// Echo server: for each stream the node receives, a thread echoes every message, then ends.
static std::vector<std::thread> echo_streams(Node& n, size_t count) {
  std::vector<std::thread> workers;
  for (size_t i = 0; i < count; ++i) {
    EXPECT_TRUE(n.wait([&] { return n.streams.size() > i; }, 5000ms));
    std::shared_ptr<Stream> s;
    {
      std::lock_guard lk(n.m);
      if (n.streams.size() <= i) break;
      s = n.streams[i];
    }
    workers.emplace_back([s] {
      for (;;) {
        auto r = s->read(5000ms);
        if (r.status != Stream::Status::OK) break;
        if (s->write(r.message, 5000ms) != Stream::Status::OK) break;
      }
      s->end();
    });
  }
  return workers;
}

TEST(Transport, ConcurrentStreamsBothDirectionsWithLargeMessages) {
  TransportOptions o = fast_options();
  o.stream_window = 2u << 20;  // messages up to 2 MiB, frames of 1 MiB: split
  // Keepalive is not under test: under a sanitizer on two busy cores, encrypting 24 MiB can
  // hold a PONG longer than the fast options' 500 ms.
  o.ping_interval = 1000ms;
  o.max_missed_pings = 10;
  Node a(o), b(o);
  b.dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  constexpr size_t kStreams = 6, kMsgs = 4;
  std::atomic<int> ok{0};
  auto client = [&](Node& from, Node& to, uint32_t seed) {
    std::vector<std::thread> th;
    for (size_t i = 0; i < kStreams; ++i) {
      th.emplace_back([&, i, seed] {
        std::vector<uint8_t> header = {static_cast<uint8_t>(i)};
        auto s = from.t->open_stream(to.id(), header);
        ASSERT_TRUE(s);
        std::vector<std::vector<uint8_t>> sent;
        std::thread writer([&] {
          for (size_t k = 0; k < kMsgs; ++k) {
            size_t n = (k % 2) ? (2u << 20) : 1000 + 77 * k + i;
            sent.push_back(pattern(n, static_cast<uint32_t>(seed + i * 100 + k)));
            ASSERT_EQ(s->write(sent.back(), 5000ms), Stream::Status::OK);
          }
          s->end();
        });
        std::vector<std::vector<uint8_t>> got;
        for (;;) {
          auto r = s->read(5000ms);
          if (r.status != Stream::Status::OK) {
            EXPECT_EQ(r.status, Stream::Status::END);
            break;
          }
          got.push_back(std::move(r.message));
        }
        writer.join();
        EXPECT_EQ(got.size(), kMsgs);
        if (got == sent) ++ok;
        EXPECT_TRUE(s->finished());
      });
    }
    return th;
  };
  auto ab = client(a, b, 1);
  auto ba = client(b, a, 2);
  auto eb = echo_streams(b, kStreams);
  auto ea = echo_streams(a, kStreams);
  for (auto* v : {&ab, &ba, &eb, &ea})
    for (auto& t : *v) t.join();
  EXPECT_EQ(ok.load(), int(2 * kStreams));
  {
    std::lock_guard lk(b.m);
    for (size_t i = 0; i < b.streams.size(); ++i) {
      EXPECT_EQ(b.streams[i]->peer(), a.id());
      EXPECT_FALSE(b.streams[i]->opened_locally());
      EXPECT_EQ(b.streams[i]->header().size(), 1u);
    }
  }
}

TEST(Transport, FlowControlBlocksAWriterUntilTheReaderReads) {
  TransportOptions o = fast_options();
  o.stream_window = 64 * 1024;
  Node a(o), b(o);
  b.dial(a);
  auto s = b.t->open_stream(a.id());
  ASSERT_TRUE(s);
  auto chunk = pattern(40 * 1024, 3);
  EXPECT_EQ(s->write(chunk, 1000ms), Stream::Status::OK);
  // The second one does not fit the 64 KiB window until the peer reads the first.
  EXPECT_EQ(s->write(chunk, 200ms), Stream::Status::TIMEOUT);
  EXPECT_EQ(s->write(pattern(65 * 1024, 1)), Stream::Status::TOO_LARGE);
  ASSERT_TRUE(a.wait([&] { return a.streams.size() == 1; }));
  auto peer = a.streams[0];
  auto r = peer->read(1000ms);
  ASSERT_EQ(r.status, Stream::Status::OK);
  EXPECT_EQ(r.message, chunk);
  EXPECT_EQ(s->write(chunk, 1000ms), Stream::Status::OK);
  EXPECT_EQ(peer->read(1000ms).message, chunk);
}

TEST(Transport, ResetReachesThePeerAndStreamsWithoutHandlerAreRefused) {
  Node a, b;
  b.dial(a);
  auto s = b.t->open_stream(a.id(), {1, 2, 3});
  ASSERT_TRUE(a.wait([&] { return a.streams.size() == 1; }));
  auto peer = a.streams[0];
  EXPECT_EQ(peer->header(), (std::vector<uint8_t>{1, 2, 3}));
  s->reset(ResetCode::CANCEL);
  auto r = peer->read(1000ms);
  EXPECT_EQ(r.status, Stream::Status::RESET);
  EXPECT_EQ(peer->reset_code(), static_cast<uint32_t>(ResetCode::CANCEL));
  EXPECT_EQ(peer->write(std::vector<uint8_t>{1}), Stream::Status::RESET);

  Node nohandler(fast_options(), false);
  b.dial(nohandler);
  auto s2 = b.t->open_stream(nohandler.id());
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->read(1000ms).status, Stream::Status::RESET);
  EXPECT_EQ(s2->reset_code(), static_cast<uint32_t>(ResetCode::NO_HANDLER));
}

TEST(Transport, GoawayCarriesItsReasonToBothOwners) {
  Node a, b;
  b.dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  a.t->disconnect(b.id(), static_cast<uint32_t>(GoAwayCode::NOT_ADMITTED), "wrong mesh secret");
  ASSERT_TRUE(b.wait([&] { return b.disconnected.size() == 1; }));
  EXPECT_EQ(b.disconnected[0].first, a.id());
  EXPECT_EQ(b.disconnected[0].second.code, static_cast<uint32_t>(GoAwayCode::NOT_ADMITTED));
  EXPECT_TRUE(b.disconnected[0].second.by_peer);
  EXPECT_EQ(b.disconnected[0].second.message, "wrong mesh secret");
  ASSERT_TRUE(a.wait([&] { return a.disconnected.size() == 1; }));
  EXPECT_FALSE(a.disconnected[0].second.by_peer);
  EXPECT_EQ(a.disconnected[0].second.code, static_cast<uint32_t>(GoAwayCode::NOT_ADMITTED));
  EXPECT_TRUE(b.has_log("not admitted"));
  EXPECT_FALSE(a.t->connected(b.id()));
  EXPECT_FALSE(b.t->connected(a.id()));
  EXPECT_FALSE(b.t->send(a.id(), 1, std::vector<uint8_t>{1}));
}

TEST(Transport, GracefulGoawayLetsOpenStreamsFinish) {
  Node a, b;
  b.dial(a);
  auto s = b.t->open_stream(a.id());
  ASSERT_TRUE(a.wait([&] { return a.streams.size() == 1; }));
  auto peer = a.streams[0];
  a.t->disconnect(b.id(), static_cast<uint32_t>(GoAwayCode::NORMAL), "bye");
  ASSERT_TRUE(b.wait([&] { return b.disconnected.size() == 1; }));
  // The stream still works both ways; new ones are not accepted.
  std::vector<uint8_t> req = {'q'}, resp = {'a'};
  EXPECT_EQ(s->write(req, 1000ms), Stream::Status::OK);
  EXPECT_EQ(peer->read(1000ms).message, req);
  EXPECT_EQ(peer->write(resp, 1000ms), Stream::Status::OK);
  EXPECT_EQ(s->read(1000ms).message, resp);
  EXPECT_EQ(b.t->open_stream(a.id()), nullptr);
  s->end();
  peer->end();
  EXPECT_EQ(s->read(1000ms).status, Stream::Status::END);
}

TEST(Transport, ReconnectAfterDisconnect) {
  Node a, b;
  for (int i = 0; i < 3; ++i) {
    b.dial(a);
    ASSERT_TRUE(a.wait([&] { return a.connected.size() == size_t(i + 1); }));
    std::vector<uint8_t> body = {static_cast<uint8_t>(i)};
    ASSERT_TRUE(b.t->send(a.id(), 1, body));
    ASSERT_TRUE(a.wait([&] { return a.messages.size() == size_t(i + 1); }));
    b.t->disconnect(a.id());
    ASSERT_TRUE(a.wait([&] { return a.disconnected.size() == size_t(i + 1); }));
    ASSERT_TRUE(b.wait([&] { return b.disconnected.size() == size_t(i + 1); }));
  }
  // A node that restarts with the same identity is taken back at once.
  auto key = NodeIdentity::generate();
  auto make = [&] { return std::make_unique<Transport>(key, fast_options()); };
  auto c1 = make();
  ASSERT_TRUE(c1->connect("127.0.0.1", a.port, a.id()));
  ASSERT_TRUE(eventually([&] { return a.t->connected(key.id()); }));
  auto first_binding = a.t->channel_binding(key.id());
  c1.reset();  // stop: GOAWAY(SHUTDOWN)
  auto c2 = make();
  ASSERT_TRUE(c2->connect("127.0.0.1", a.port, a.id()));
  ASSERT_TRUE(eventually([&] { return a.t->connected(key.id()) && a.t->channel_binding(key.id()) != first_binding; }));
}

TEST(Transport, SimultaneousDialsKeepOneConnection) {
  for (int round = 0; round < 5; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "round %d\n", round);
    auto elapsed = [&] { return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count(); };
    Node a, b;
    std::atomic<int> done{0};
    std::atomic<int> failed{0};
    auto cb = [&](std::optional<PeerInfo> info, CloseReason) {
      if (!info) ++failed;
      ++done;
    };
    a.t->connect_async("127.0.0.1", b.port, b.id(), cb);
    b.t->connect_async("127.0.0.1", a.port, a.id(), cb);
    ASSERT_TRUE(eventually([&] { return done == 2; }));
    EXPECT_EQ(failed.load(), 0);
    std::this_thread::sleep_for(150ms);  // let the duplicate drain
    EXPECT_TRUE(a.t->connected(b.id()));
    EXPECT_TRUE(b.t->connected(a.id()));
    {
      std::lock_guard lk(a.m);
      EXPECT_EQ(a.connected.size(), 1u);
      EXPECT_TRUE(a.disconnected.empty());
    }
    {
      std::lock_guard lk(b.m);
      EXPECT_EQ(b.connected.size(), 1u);
      EXPECT_TRUE(b.disconnected.empty());
    }
    // Both ends use the same connection.
    EXPECT_EQ(*a.t->channel_binding(b.id()), *b.t->channel_binding(a.id()));
    std::vector<uint8_t> x = {42};
    ASSERT_TRUE(a.t->send(b.id(), 3, x));
    ASSERT_TRUE(b.wait([&] { return b.messages.size() == 1; }));
    if (std::getenv("LLMESH_TEST_LOG")) std::fprintf(stderr, "round body %lld ms\n", (long long)elapsed());
  }
}

TEST(Transport, KeepaliveMeasuresRoundTrips) {
  Node a, b;
  b.dial(a);
  ASSERT_TRUE(eventually([&] { return b.t->rtt(a.id()).has_value(); }, 2000ms));
  EXPECT_LT(b.t->rtt(a.id())->count(), 1000000);
  std::this_thread::sleep_for(500ms);  // several intervals: still connected
  EXPECT_TRUE(b.t->connected(a.id()));
  EXPECT_EQ(a.count_disconnected(), 0u);
}

TEST(Transport, SilentTcpServerFailsTheHandshakeInTime) {
  asio::io_context io;
  tcp::acceptor silent(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // never accepts
  TransportOptions o = fast_options();
  o.handshake_timeout = 300ms;
  Node b(o);
  auto t0 = std::chrono::steady_clock::now();
  CloseReason why;
  EXPECT_FALSE(b.t->connect("127.0.0.1", silent.local_endpoint().port(), std::nullopt, &why));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(why.code, static_cast<uint32_t>(GoAwayCode::HANDSHAKE_TIMEOUT)) << why.describe();
  EXPECT_LT(took, 2000ms);
  // Nothing listening: a prompt error.
  uint16_t port = silent.local_endpoint().port();
  silent.close();
  EXPECT_FALSE(b.t->connect("127.0.0.1", port, std::nullopt, &why));
}

TEST(Transport, SilentInboundTcpClientIsDropped) {
  TransportOptions o = fast_options();
  o.handshake_timeout = 200ms;
  Node a(o);
  asio::io_context io;
  tcp::socket sock(io);
  sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), a.port));
  uint8_t byte;
  boost::system::error_code ec;
  auto t0 = std::chrono::steady_clock::now();
  sock.read_some(asio::buffer(&byte, 1), ec);  // blocks until the transport gives up
  EXPECT_TRUE(ec);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2000ms);
}

TEST(Transport, PeerThatStopsReadingIsDetected) {
  Node a;
  RawPeer raw;
  raw.connect(a.port);
  raw.hello();
  ASSERT_TRUE(raw.expect(FrameType::HELLO));
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  auto t0 = std::chrono::steady_clock::now();
  // From now on the raw peer neither reads nor answers PINGs.
  ASSERT_TRUE(a.wait([&] { return a.disconnected.size() == 1; }, 3000ms));
  EXPECT_EQ(a.disconnected[0].second.code, static_cast<uint32_t>(GoAwayCode::KEEPALIVE_TIMEOUT))
      << a.disconnected[0].second.describe();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
}

TEST(Transport, VersionMismatchIsAGoawayWithReason) {
  Node a;
  RawPeer raw;
  raw.connect(a.port);
  raw.hello(5, 6);
  auto f = raw.expect(FrameType::GOAWAY);
  ASSERT_TRUE(f);
  ASSERT_GE(f->payload.size(), 4u);
  EXPECT_EQ(get_u32(f->payload.data()), static_cast<uint32_t>(GoAwayCode::VERSION_MISMATCH));
  std::string text(f->payload.begin() + 4, f->payload.end());
  EXPECT_NE(text.find("5..6"), std::string::npos) << text;
  EXPECT_FALSE(raw.read_frame(1000ms));  // then the connection ends
  EXPECT_TRUE(a.has_log("version mismatch"));
  std::lock_guard lk(a.m);
  EXPECT_TRUE(a.connected.empty());
}

TEST(Transport, NewerVersionsNegotiateDown) {
  Node a;
  RawPeer raw;
  raw.connect(a.port);
  raw.hello(1, 9);
  ASSERT_TRUE(raw.expect(FrameType::HELLO));
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  EXPECT_EQ(a.connected[0].version, 1u);
}

TEST(Transport, UnknownFramesAreIgnoredMalformedOnesClose) {
  Node a;
  RawPeer raw;
  raw.connect(a.port);
  raw.hello();
  ASSERT_TRUE(raw.expect(FrameType::HELLO));
  raw.send_frame(static_cast<FrameType>(0x42), 0, 0, {1, 2, 3});  // a frame type from the future
  std::vector<uint8_t> msg = {0, 5, 'o', 'k'};
  raw.send_frame(FrameType::MSG, 0, 0, msg);
  ASSERT_TRUE(a.wait([&] { return a.messages.size() == 1; }));
  EXPECT_EQ(a.messages[0].kind, 5);
  EXPECT_EQ(a.messages[0].body, (std::vector<uint8_t>{'o', 'k'}));
  // PING is answered with the same bytes.
  std::vector<uint8_t> nonce = {1, 2, 3, 4, 5, 6, 7, 8};
  raw.send_frame(FrameType::PING, 0, 0, nonce);
  auto pong = raw.expect(FrameType::PONG);
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->payload, nonce);
  // A length field below the header size.
  raw.send({0, 0, 0, 2, 1, 0});
  auto f = raw.expect(FrameType::GOAWAY);
  ASSERT_TRUE(f);
  EXPECT_EQ(get_u32(f->payload.data()), static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR));
  ASSERT_TRUE(a.wait([&] { return a.disconnected.size() == 1; }));
  EXPECT_EQ(a.disconnected[0].second.code, static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR));
  EXPECT_TRUE(a.has_log("malformed frame"));
}

TEST(Transport, OversizeFramesAndBadFirstFramesClose) {
  {
    Node a;
    RawPeer raw;
    raw.connect(a.port);
    raw.hello();
    ASSERT_TRUE(raw.expect(FrameType::HELLO));
    std::vector<uint8_t> header;
    put_u32(header, 6 + (2u << 20));  // over the 1 MiB default
    header.insert(header.end(), {0x06, 0, 0, 0, 0, 1});
    raw.send(header);
    auto f = raw.expect(FrameType::GOAWAY);
    ASSERT_TRUE(f);
    EXPECT_EQ(get_u32(f->payload.data()), static_cast<uint32_t>(GoAwayCode::FRAME_TOO_LARGE));
  }
  {
    Node a;
    RawPeer raw;
    raw.connect(a.port);
    raw.send_frame(FrameType::MSG, 0, 0, {0, 1});  // before HELLO
    auto f = raw.expect(FrameType::GOAWAY);
    ASSERT_TRUE(f);
    EXPECT_EQ(get_u32(f->payload.data()), static_cast<uint32_t>(GoAwayCode::PROTOCOL_ERROR));
  }
  {
    Node a;
    RawPeer raw;
    raw.connect(a.port);
    raw.hello();
    ASSERT_TRUE(raw.expect(FrameType::HELLO));
    // DATA beyond the stream's credit is a flow control violation.
    raw.send_frame(FrameType::OPEN, 0, 1, {});
    ASSERT_TRUE(a.wait([&] { return a.streams.size() == 1; }));
    std::vector<uint8_t> lots(1 << 20);
    for (int i = 0; i < 5; ++i) raw.send_frame(FrameType::DATA, frame_flags::MORE, 1, lots);
    auto f = raw.expect(FrameType::GOAWAY);
    ASSERT_TRUE(f);
    EXPECT_EQ(get_u32(f->payload.data()), static_cast<uint32_t>(GoAwayCode::FLOW_CONTROL));
  }
}

TEST(Transport, StopSendsShutdownToPeers) {
  Node a;
  auto b = std::make_unique<Node>();
  b->dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  auto t0 = std::chrono::steady_clock::now();
  b->t->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  ASSERT_TRUE(a.wait([&] { return a.disconnected.size() == 1; }));
  EXPECT_EQ(a.disconnected[0].second.code, static_cast<uint32_t>(GoAwayCode::SHUTDOWN));
  EXPECT_TRUE(a.disconnected[0].second.by_peer);
  CloseReason why;
  EXPECT_FALSE(b->t->connect("127.0.0.1", a.port, std::nullopt, &why));
}

// Admission hooks: each side's ADMIT follows its HELLO; the connection is ready only when the
// peer's passes verify(), and a refusal reaches the dialer with its code and both logs.
namespace {
TransportOptions admitting(std::string token, std::string expected) {
  TransportOptions o = fast_options();
  o.admission.make = [token](const PeerInfo& p) {
    std::string body = token + (p.outbound ? "/dialer" : "/acceptor");
    body.append(reinterpret_cast<const char*>(p.channel_binding.data()), 4);
    return std::vector<uint8_t>(body.begin(), body.end());
  };
  o.admission.verify = [expected](const PeerInfo& p,
                                   std::span<const uint8_t> admit) -> std::optional<std::pair<uint32_t, std::string>> {
    std::string want = expected + (p.outbound ? "/acceptor" : "/dialer");
    want.append(reinterpret_cast<const char*>(p.channel_binding.data()), 4);
    if (std::string(admit.begin(), admit.end()) == want) return std::nullopt;
    return std::make_pair(uint32_t{0x102}, std::string("wrong_secret: the proof does not verify"));
  };
  return o;
}
}  // namespace

TEST(Transport, AdmissionHooksAdmitMatchingPeers) {
  Node a(admitting("k1", "k1")), b(admitting("k1", "k1"));
  b.dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  std::vector<uint8_t> hi{1, 2, 3};
  ASSERT_TRUE(b.t->send(a.id(), 7, hi));
  ASSERT_TRUE(a.wait([&] { return a.messages.size() == 1; }));
  EXPECT_EQ(a.messages[0].kind, 7);  // the ADMIT itself never reaches the owner
}

TEST(Transport, AdmissionRefusalReachesBothSidesWithItsCode) {
  Node a(admitting("k1", "k1")), b(admitting("k2", "k2"));
  CloseReason why;
  auto info = b.t->connect("127.0.0.1", a.port, a.id(), &why);
  EXPECT_FALSE(info);
  EXPECT_EQ(why.code, 0x102u) << why.describe();
  EXPECT_NE(why.describe().find("wrong_secret"), std::string::npos) << why.describe();
  EXPECT_TRUE(eventually([&] { return a.has_log("admission refused: peer " + b.id().short_hex()); }));
  EXPECT_TRUE(b.has_log("admission refused") || why.by_peer);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(a.t->connected(b.id()));
  EXPECT_FALSE(b.t->connected(a.id()));
  std::lock_guard lk(a.m);
  EXPECT_TRUE(a.connected.empty());
  EXPECT_TRUE(a.messages.empty());
}

TEST(Transport, PeerWithoutAdmissionIsRefusedByOneWithIt) {
  // b sends no ADMIT: b considers itself connected after HELLO, but a never does and drops
  // the connection when its handshake time runs out.
  Node a(admitting("k1", "k1")), b;
  CloseReason why;
  b.t->connect("127.0.0.1", a.port, a.id(), &why);
  EXPECT_FALSE(a.t->connected(b.id()));
  EXPECT_TRUE(eventually([&] { return !b.t->connected(a.id()); }, 3000ms));
  std::lock_guard lk(a.m);
  EXPECT_TRUE(a.connected.empty());
}

// Stream ids must reach the peer in increasing order even when many threads open streams at
// once (an OPEN out of order is a protocol error that closes the connection).
TEST(Transport, StreamsOpenedConcurrentlyReachThePeerInOrder) {
  TransportOptions o = fast_options();
  o.max_streams = 4096;
  Node a(o), b(o);
  b.dial(a);
  ASSERT_TRUE(a.wait([&] { return a.connected.size() == 1; }));
  constexpr int kThreads = 8, kEach = 100;
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t)
    th.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        auto s = b.t->open_stream(a.id(), {1});
        ASSERT_TRUE(s);
        s->reset();
      }
    });
  for (auto& t : th) t.join();
  EXPECT_TRUE(a.wait([&] { return a.streams.size() == size_t(kThreads * kEach); }, 10000ms)) << a.streams.size();
  EXPECT_TRUE(a.t->connected(b.id()));
  EXPECT_FALSE(a.has_log("not increasing"));
}
