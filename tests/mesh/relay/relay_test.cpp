// The fault relay in-process, driven with plain blocking sockets on loopback.
#include "relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

using namespace llmesh::relay;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (fd >= 0) ::close(fd);
    fd = o.fd;
    o.fd = -1;
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct Listener {
  Fd sock;
  uint16_t port = 0;
  Listener() {
    sock.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(sock.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(sock.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(sock.fd, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(sock.fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  // -1 on timeout.
  Fd accept(int timeout_ms = 3000) {
    pollfd p{sock.fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return Fd(-1);
    return Fd(::accept4(sock.fd, nullptr, nullptr, SOCK_CLOEXEC));
  }
};

Fd connect_to(uint16_t port) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  EXPECT_EQ(::connect(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  int one = 1;
  ::setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}
bool write_all(int fd, const std::string& s) { return write_all(fd, reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

// >0 bytes read, 0 EOF, -1 error (errno set), -2 timeout.
ssize_t read_some(int fd, uint8_t* buf, size_t n, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int r = ::poll(&p, 1, timeout_ms);
  if (r == 0) return -2;
  if (r < 0) return -1;
  return ::recv(fd, buf, n, 0);
}

// Reads exactly n bytes (or fails): true on success.
bool read_exact(int fd, uint8_t* buf, size_t n, int timeout_ms = 10000) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read_some(fd, buf + got, n - got, timeout_ms);
    if (r <= 0) return false;
    got += size_t(r);
  }
  return true;
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t x = rng();
    std::memcpy(&v[i], &x, 8);
  }
  for (size_t i = n - n % 8; i < n; ++i) v[i] = uint8_t(rng());
  return v;
}

// A connected pair through a relay link: client <-> relay <-> server.
struct Pair {
  Fd client, server;
};
Pair open_pair(FaultRelay& relay, uint16_t relay_port, Listener& target) {
  Pair p;
  p.client = connect_to(relay_port);
  p.server = target.accept();
  EXPECT_GE(p.server.fd, 0) << "relay did not connect onward";
  return p;
}

// Sends a stream both ways at once and checks both arrive byte for byte.
void exchange_and_check(Pair& p, size_t n_up, size_t n_down) {
  auto up = random_bytes(n_up, 1), down = random_bytes(n_down, 2);
  std::vector<uint8_t> got_up(n_up), got_down(n_down);
  bool ok[4] = {};
  std::thread t1([&] { ok[0] = write_all(p.client.fd, up.data(), up.size()); });
  std::thread t2([&] { ok[1] = write_all(p.server.fd, down.data(), down.size()); });
  std::thread t3([&] { ok[2] = read_exact(p.server.fd, got_up.data(), n_up, 20000); });
  std::thread t4([&] { ok[3] = read_exact(p.client.fd, got_down.data(), n_down, 20000); });
  t1.join(), t2.join(), t3.join(), t4.join();
  EXPECT_TRUE(ok[0] && ok[1] && ok[2] && ok[3]);
  EXPECT_TRUE(got_up == up) << "client -> server stream corrupted";
  EXPECT_TRUE(got_down == down) << "server -> client stream corrupted";
}

double echo_rtt_ms(Pair& p) {
  uint8_t b = 'x', r = 0;
  auto t = Clock::now();
  EXPECT_TRUE(write_all(p.client.fd, &b, 1));
  EXPECT_TRUE(read_exact(p.server.fd, &r, 1));
  EXPECT_TRUE(write_all(p.server.fd, &r, 1));
  EXPECT_TRUE(read_exact(p.client.fd, &r, 1));
  return ms_since(t);
}

}  // namespace

TEST(FaultRelay, ByteExactLargeStreamBothWays) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("a", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  exchange_and_check(p, 16 << 20, (16 << 20) + 12345);
  auto s = relay.stats("a");
  EXPECT_EQ(s.up_bytes, uint64_t(16 << 20));
  EXPECT_EQ(s.down_bytes, uint64_t((16 << 20) + 12345));
  EXPECT_EQ(s.connections, 1u);
  EXPECT_EQ(s.active, 1u);
}

TEST(FaultRelay, ManyLinksAndConnections) {
  FaultRelay relay;
  Listener t1, t2;
  uint16_t p1 = relay.add_link("one", 0, "127.0.0.1", t1.port);
  uint16_t p2 = relay.add_link("two", 0, "localhost", t2.port);
  EXPECT_NE(p1, p2);
  auto a = open_pair(relay, p1, t1);
  auto b = open_pair(relay, p2, t2);
  auto c = open_pair(relay, p1, t1);
  exchange_and_check(a, 100000, 1000);
  exchange_and_check(b, 1000, 100000);
  exchange_and_check(c, 5000, 5000);
  EXPECT_EQ(relay.stats("one").connections, 2u);
  EXPECT_EQ(relay.stats("two").connections, 1u);
  EXPECT_EQ(relay.links(), (std::vector<std::string>{"one", "two"}));
}

TEST(FaultRelay, LatencyWithinBounds) {
  FaultRelay relay(/*bind_host=*/"127.0.0.1", /*seed=*/7);
  Listener target;
  uint16_t port = relay.add_link("l", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  EXPECT_LT(echo_rtt_ms(p), 40.0);  // no faults: loopback speed
  FaultSpec f;
  f.latency_ms = 50;
  f.jitter_ms = 10;
  relay.set_fault("l", Direction::both, f);
  for (int i = 0; i < 8; ++i) {
    double rtt = echo_rtt_ms(p);
    EXPECT_GE(rtt, 2 * (50 - 10) - 1) << "round trip " << i;
    EXPECT_LE(rtt, 2 * (50 + 10) + 60) << "round trip " << i;
  }
  // One direction only.
  relay.restore("l");
  f.jitter_ms = 0;
  relay.set_fault("l", Direction::up, f);
  double rtt = echo_rtt_ms(p);
  EXPECT_GE(rtt, 49);
  EXPECT_LE(rtt, 50 + 60);
  EXPECT_EQ(relay.fault("l", Direction::up).latency_ms, 50);
  EXPECT_EQ(relay.fault("l", Direction::down).latency_ms, 0);
}

TEST(FaultRelay, JitterNeverReorders) {
  FaultRelay relay("127.0.0.1", 3);
  Listener target;
  uint16_t port = relay.add_link("j", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  FaultSpec f;
  f.latency_ms = 5;
  f.jitter_ms = 5;
  relay.set_fault("j", Direction::both, f);
  // Many small writes, each becoming its own segment with its own random delay.
  std::vector<uint8_t> sent;
  std::thread w([&] {
    for (int i = 0; i < 2000; ++i) {
      uint8_t b[4];
      std::memcpy(b, &i, 4);
      write_all(p.client.fd, b, 4);
    }
  });
  std::vector<uint8_t> got(2000 * 4);
  EXPECT_TRUE(read_exact(p.server.fd, got.data(), got.size()));
  w.join();
  for (int i = 0; i < 2000; ++i) {
    int v;
    std::memcpy(&v, &got[size_t(i) * 4], 4);
    ASSERT_EQ(v, i);
  }
}

TEST(FaultRelay, LossStallsButNeverCorruptsOrReorders) {
  FaultRelay relay("127.0.0.1", 11);
  Listener target;
  uint16_t port = relay.add_link("loss", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  relay.command("fault loss loss=0.002 stall=200-400");
  auto t = Clock::now();
  exchange_and_check(p, 1 << 20, 1 << 20);  // ~725 segments each way: a few stalls expected
  double elapsed = ms_since(t);
  auto s = relay.stats("loss");
  EXPECT_GT(s.stalls_up + s.stalls_down, 0u);
  EXPECT_GE(elapsed, 199);
  // A stall is 200-400 ms of head-of-line blocking.
  relay.command("fault loss loss=1 stall=250-250");
  double rtt = echo_rtt_ms(p);
  EXPECT_GE(rtt, 2 * 250 - 1);
  EXPECT_LE(rtt, 2 * 250 + 150);
  relay.restore("loss");
  EXPECT_LT(echo_rtt_ms(p), 40.0);
}

TEST(FaultRelay, BandwidthLimit) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("bw", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  EXPECT_EQ(relay.command("fault bw up rate=400000"), "ok");
  auto t = Clock::now();
  exchange_and_check(p, 400000, 10);
  double elapsed = ms_since(t);
  EXPECT_GE(elapsed, 900);
  EXPECT_LE(elapsed, 2500);
}

TEST(FaultRelay, CutIsSeenByBothEnds) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("c", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  exchange_and_check(p, 1000, 1000);
  relay.cut("c");
  uint8_t b[16];
  EXPECT_EQ(read_some(p.client.fd, b, sizeof b, 3000), 0) << "client did not see an orderly close";
  EXPECT_EQ(read_some(p.server.fd, b, sizeof b, 3000), 0) << "server did not see an orderly close";
  EXPECT_EQ(relay.stats("c").active, 0u);
  // The link still accepts new connections.
  auto q = open_pair(relay, port, target);
  exchange_and_check(q, 100, 100);
}

TEST(FaultRelay, ResetIsSeenByBothEnds) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("r", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  exchange_and_check(p, 1000, 1000);
  EXPECT_EQ(relay.command("reset r"), "ok");
  uint8_t b[16];
  errno = 0;
  EXPECT_EQ(read_some(p.client.fd, b, sizeof b, 3000), -1);
  EXPECT_EQ(errno, ECONNRESET);
  errno = 0;
  EXPECT_EQ(read_some(p.server.fd, b, sizeof b, 3000), -1);
  EXPECT_EQ(errno, ECONNRESET);
}

TEST(FaultRelay, EndResetIsPassedOn) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("e", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  exchange_and_check(p, 10, 10);
  linger l{1, 0};
  ::setsockopt(p.server.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  p.server = Fd();
  uint8_t b[16];
  errno = 0;
  EXPECT_EQ(read_some(p.client.fd, b, sizeof b, 3000), -1);
  EXPECT_EQ(errno, ECONNRESET);
}

TEST(FaultRelay, HalfCloseIsForwarded) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("h", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  ASSERT_TRUE(write_all(p.client.fd, "request"));
  ::shutdown(p.client.fd, SHUT_WR);
  uint8_t b[64];
  ASSERT_TRUE(read_exact(p.server.fd, b, 7));
  EXPECT_EQ(read_some(p.server.fd, b, sizeof b, 3000), 0);  // the client's FIN
  ASSERT_TRUE(write_all(p.server.fd, "response"));         // the other way still works
  ASSERT_TRUE(read_exact(p.client.fd, b, 8));
  EXPECT_EQ(std::memcmp(b, "response", 8), 0);
  p.server = Fd();
  EXPECT_EQ(read_some(p.client.fd, b, sizeof b, 3000), 0);
}

TEST(FaultRelay, BlackholeThenRestore) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("bh", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  exchange_and_check(p, 100, 100);
  relay.blackhole("bh", true);
  EXPECT_TRUE(relay.stats("bh").blackhole);
  ASSERT_TRUE(write_all(p.client.fd, "hello"));
  ASSERT_TRUE(write_all(p.server.fd, "world"));
  uint8_t b[16];
  // Nothing arrives, and neither end sees a close: the peer just went silent.
  EXPECT_EQ(read_some(p.server.fd, b, sizeof b, 400), -2);
  EXPECT_EQ(read_some(p.client.fd, b, sizeof b, 100), -2);
  // A new connection during the blackhole is accepted but goes nowhere.
  Fd late = connect_to(port);
  Fd none = target.accept(300);
  EXPECT_LT(none.fd, 0);
  relay.blackhole("bh", false);
  ASSERT_TRUE(read_exact(p.server.fd, b, 5));
  EXPECT_EQ(std::memcmp(b, "hello", 5), 0);
  ASSERT_TRUE(read_exact(p.client.fd, b, 5));
  EXPECT_EQ(std::memcmp(b, "world", 5), 0);
  exchange_and_check(p, 200000, 200000);
  // The held connection goes through now.
  Pair q{std::move(late), target.accept()};
  ASSERT_GE(q.server.fd, 0);
  exchange_and_check(q, 1000, 1000);
}

TEST(FaultRelay, BlackholeBackpressuresBigSender) {
  FaultRelay relay;
  Listener target;
  uint16_t port = relay.add_link("bp", 0, "127.0.0.1", target.port);
  auto p = open_pair(relay, port, target);
  relay.blackhole("bp", true);
  auto data = random_bytes(8 << 20, 5);
  std::vector<uint8_t> got(data.size());
  bool wrote = false, read_ok = false;
  std::thread w([&] { wrote = write_all(p.client.fd, data.data(), data.size()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(relay.stats("bp").up_bytes, 0u);
  relay.restore("bp");
  read_ok = read_exact(p.server.fd, got.data(), got.size());
  w.join();
  EXPECT_TRUE(wrote && read_ok);
  EXPECT_TRUE(got == data);
}

TEST(FaultRelay, TargetRefusedGivesClientAReset) {
  FaultRelay relay;
  uint16_t dead_port;
  {
    Listener l;
    dead_port = l.port;
  }
  uint16_t port = relay.add_link("dead", 0, "127.0.0.1", dead_port);
  Fd c = connect_to(port);
  uint8_t b[4];
  ssize_t r = read_some(c.fd, b, sizeof b, 3000);
  EXPECT_TRUE(r == 0 || (r == -1 && errno == ECONNRESET)) << r;
}

TEST(FaultRelay, ControlProtocol) {
  FaultRelay relay;
  Listener target;
  EXPECT_EQ(relay.command("ping"), "ok pong");
  EXPECT_EQ(relay.command(""), "");
  EXPECT_EQ(relay.command("# comment"), "");
  std::string r = relay.command("link add x 0 127.0.0.1 " + std::to_string(target.port));
  ASSERT_TRUE(r.starts_with("ok port=")) << r;
  uint16_t port = uint16_t(std::stoi(r.substr(8)));
  EXPECT_TRUE(relay.command("link add x 0 127.0.0.1 1").starts_with("error: link 'x' exists"));
  EXPECT_TRUE(relay.command("link add y " + std::to_string(port) + " 127.0.0.1 1").starts_with("error: cannot listen"));
  EXPECT_TRUE(relay.command("link add y 0 127.0.0.1 0").starts_with("error: invalid port"));
  EXPECT_TRUE(relay.command("link add bad/name 0 127.0.0.1 80").starts_with("error: invalid link name"));
  EXPECT_TRUE(relay.command("link add y 0").starts_with("error: usage"));
  EXPECT_EQ(relay.command("link list"), "ok x=" + std::to_string(port) + ">127.0.0.1:" + std::to_string(target.port));
  EXPECT_EQ(relay.command("fault x latency=50 jitter=20 loss=0.05"), "ok");
  EXPECT_EQ(relay.command("fault x down rate=1000 stall=300-500"), "ok");
  std::string show = relay.command("show x");
  EXPECT_NE(show.find("up: latency=50 jitter=20 loss=0.05 rate=0 stall=200-400"), std::string::npos) << show;
  EXPECT_NE(show.find("down: latency=50 jitter=20 loss=0.05 rate=1000 stall=300-500"), std::string::npos) << show;
  EXPECT_TRUE(relay.command("fault x loss=2").starts_with("error: loss"));
  EXPECT_TRUE(relay.command("fault x latency=-1").starts_with("error: invalid value"));
  EXPECT_TRUE(relay.command("fault x latency=abc").starts_with("error: invalid value"));
  EXPECT_TRUE(relay.command("fault x speed=1").starts_with("error: unknown fault setting"));
  EXPECT_TRUE(relay.command("fault x stall=500-100").starts_with("error: stall"));
  EXPECT_TRUE(relay.command("fault nope latency=1").starts_with("error: no link named 'nope'"));
  EXPECT_TRUE(relay.command("cut nope").starts_with("error: no link"));
  EXPECT_TRUE(relay.command("blackhole x maybe").starts_with("error: usage"));
  EXPECT_EQ(relay.command("blackhole x on"), "ok");
  EXPECT_EQ(relay.command("stats x"),
            "ok up=0 down=0 connections=0 active=0 stalls_up=0 stalls_down=0 blackhole=on");
  EXPECT_EQ(relay.command("restore x"), "ok");
  EXPECT_NE(relay.command("show x").find("up: latency=0 jitter=0 loss=0 rate=0"), std::string::npos);
  EXPECT_TRUE(relay.command("frobnicate").starts_with("error: unknown command"));
  EXPECT_TRUE(relay.command("help").starts_with("ok commands:"));
  EXPECT_EQ(relay.command("link del x"), "ok");
  EXPECT_EQ(relay.command("link list"), "ok");
  EXPECT_FALSE(relay.shutdown_requested());
  EXPECT_EQ(relay.command("shutdown"), "ok");
  EXPECT_TRUE(relay.shutdown_requested());
}

TEST(FaultRelay, ControlPortSpeaksTheSameProtocol) {
  FaultRelay relay;
  Listener target;
  uint16_t cport = relay.start_control(0);
  Fd c = connect_to(cport);
  auto ask = [&](const std::string& line) {
    EXPECT_TRUE(write_all(c.fd, line + "\n"));
    std::string reply;
    uint8_t ch;
    while (read_some(c.fd, &ch, 1, 3000) == 1 && ch != '\n') reply += char(ch);
    return reply;
  };
  EXPECT_EQ(ask("ping"), "ok pong");
  std::string r = ask("link add n 0 127.0.0.1 " + std::to_string(target.port));
  ASSERT_TRUE(r.starts_with("ok port="));
  uint16_t port = uint16_t(std::stoi(r.substr(8)));
  auto p = open_pair(relay, port, target);
  exchange_and_check(p, 3000, 4000);
  EXPECT_EQ(ask("stats n"), "ok up=3000 down=4000 connections=1 active=1 stalls_up=0 stalls_down=0 blackhole=off");
  EXPECT_EQ(ask("cut n"), "ok");
  uint8_t b[4];
  EXPECT_EQ(read_some(p.client.fd, b, 4, 3000), 0);
  EXPECT_TRUE(ask("nonsense").starts_with("error: "));
  EXPECT_EQ(ask("quit"), "ok");
  EXPECT_EQ(read_some(c.fd, b, 1, 3000), 0);
}

TEST(FaultRelay, ApiErrors) {
  FaultRelay relay;
  EXPECT_THROW(relay.stats("missing"), RelayError);
  EXPECT_THROW(relay.cut("missing"), RelayError);
  FaultSpec bad;
  bad.loss = 1.5;
  relay.add_link("z", 0, "127.0.0.1", 9);
  EXPECT_THROW(relay.set_fault("z", Direction::both, bad), RelayError);
  EXPECT_THROW(relay.add_link("z", 0, "127.0.0.1", 9), RelayError);
  EXPECT_THROW(FaultRelay("not-an-address").add_link("q", 0, "127.0.0.1", 9), RelayError);
}
