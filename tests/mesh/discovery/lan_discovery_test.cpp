// LAN discovery: the announcement codec against hostile datagrams, the fingerprint, and (as root,
// in a fresh network namespace of its own) discovery between LanDiscovery instances.
#include "discovery/lan_discovery.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include <gtest/gtest.h>

namespace llmesh::mesh::discovery {
namespace {

using namespace std::chrono_literals;

LanAnnouncement sample() {
  LanAnnouncement a;
  a.type = LanMessageType::announce;
  for (size_t i = 0; i < a.fingerprint.size(); ++i) a.fingerprint[i] = uint8_t(0xa0 + i);
  for (size_t i = 0; i < a.node_id.size(); ++i) a.node_id[i] = uint8_t(i * 7 + 1);
  a.mesh_port = 7411;
  a.role = gossip::Role::client;
  a.capacity = {3, 2, 8, 5, 2, 1234};
  return a;
}

TEST(LanCodec, RoundTripsBothTypesAndExtremes) {
  auto a = sample();
  auto bytes = encode_lan_message(a);
  ASSERT_EQ(bytes.size(), kLanMessageSize);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "LMLD");
  auto d = decode_lan_message(bytes);
  ASSERT_TRUE(d.message) << lan_refusal_name(d.refusal);
  EXPECT_EQ(*d.message, a);

  a.type = LanMessageType::query;
  a.role = gossip::Role::server;
  a.mesh_port = 65535;
  a.capacity = {65535, 65535, 65535, 65535, 65535, 0xffffffffu};
  d = decode_lan_message(encode_lan_message(a));
  ASSERT_TRUE(d.message);
  EXPECT_EQ(*d.message, a);
}

TEST(LanCodec, LayoutIsBigEndianAtDocumentedOffsets) {
  auto b = encode_lan_message(sample());
  EXPECT_EQ(b[4], 1);     // version
  EXPECT_EQ(b[5], 1);     // announce
  EXPECT_EQ(b[6], 1);     // client
  EXPECT_EQ(b[8], 0xa0);  // fingerprint
  EXPECT_EQ(b[24], 1);    // node id
  EXPECT_EQ(b[56] << 8 | b[57], 7411);
  EXPECT_EQ(b[58] << 8 | b[59], 3);
  EXPECT_EQ(b[66] << 8 | b[67], 2);
  EXPECT_EQ(uint32_t(b[68]) << 24 | uint32_t(b[69]) << 16 | uint32_t(b[70]) << 8 | b[71], 1234u);
}

TEST(LanCodec, EveryTruncationIsRefused) {
  auto b = encode_lan_message(sample());
  for (size_t n = 0; n < b.size(); ++n) {
    auto d = decode_lan_message(std::span<const uint8_t>(b.data(), n));
    EXPECT_FALSE(d.message) << n;
    EXPECT_EQ(d.refusal, LanRefusal::too_short) << n;
  }
}

TEST(LanCodec, TrailingBytesOfLaterVersionsAreIgnored) {
  auto a = sample();
  auto b = encode_lan_message(a);
  b.resize(kLanMaxDatagram, 0xee);
  auto d = decode_lan_message(b);
  ASSERT_TRUE(d.message);
  EXPECT_EQ(*d.message, a);
}

TEST(LanCodec, WrongMagicVersionTypeRolePortAreRefused) {
  const auto good = encode_lan_message(sample());
  auto with = [&](size_t at, uint8_t v) {
    auto b = good;
    b[at] = v;
    return decode_lan_message(b).refusal;
  };
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(with(i, good[i] ^ 0x20), LanRefusal::bad_magic);
  EXPECT_EQ(with(4, 0), LanRefusal::bad_version);
  EXPECT_EQ(with(4, 2), LanRefusal::bad_version);
  EXPECT_EQ(with(4, 255), LanRefusal::bad_version);
  EXPECT_EQ(with(5, 0), LanRefusal::bad_type);
  EXPECT_EQ(with(5, 3), LanRefusal::bad_type);
  EXPECT_EQ(with(6, 2), LanRefusal::bad_role);
  EXPECT_EQ(with(6, 255), LanRefusal::bad_role);
  auto b = good;
  b[56] = b[57] = 0;
  EXPECT_EQ(decode_lan_message(b).refusal, LanRefusal::bad_port);
  // A newer version's datagram is refused even when short: version before size.
  std::vector<uint8_t> v2 = {'L', 'M', 'L', 'D', 2};
  EXPECT_EQ(decode_lan_message(v2).refusal, LanRefusal::bad_version);
  EXPECT_EQ(with(7, 0xff), LanRefusal::none);  // reserved: ignored
}

TEST(LanCodec, RandomAndMutatedDatagramsNeverCrash) {
  std::mt19937 rng(7);
  const auto good = encode_lan_message(sample());
  size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> b;
    if (i % 2) {
      b.resize(rng() % 200);
      for (auto& x : b) x = uint8_t(rng());
    } else {
      b = good;
      for (int k = 0, n = 1 + int(rng() % 4); k < n; ++k) b[rng() % b.size()] = uint8_t(rng());
      b.resize(rng() % (b.size() + 40), uint8_t(rng()));
    }
    auto d = decode_lan_message(b);
    EXPECT_EQ(d.message.has_value(), d.refusal == LanRefusal::none);
    if (d.message) {
      ++accepted;
      // What was accepted is exactly the first 72 bytes (the reserved byte reads as 0).
      std::vector<uint8_t> prefix(b.begin(), b.begin() + kLanMessageSize);
      prefix[7] = 0;
      EXPECT_EQ(encode_lan_message(*d.message), prefix);
    }
  }
  EXPECT_GT(accepted, 0u);
}

TEST(LanFingerprint, KeyedByTheSecretAndChangesOnRotation) {
  auto s = invite::MeshSecret::create();
  auto fp = lan_fingerprint(s);
  EXPECT_EQ(fp, lan_fingerprint(s));

  auto rotated = s;
  rotated.rotate();
  EXPECT_NE(lan_fingerprint(rotated), fp);

  auto epoch_only = s;
  epoch_only.epoch += 1;
  EXPECT_NE(lan_fingerprint(epoch_only), fp);

  auto other = invite::MeshSecret::create();
  EXPECT_NE(lan_fingerprint(other), fp);

  auto other_id = s;  // same secret, another mesh id
  other_id.mesh_id[0] ^= 1;
  EXPECT_NE(lan_fingerprint(other_id), fp);

  // Not the admission key, not the status fingerprint, and no run of 4 secret bytes inside.
  EXPECT_NE(invite::to_hex(std::span<const uint8_t>(fp.data(), 4)), s.fingerprint());
  for (size_t i = 0; i + 4 <= s.secret.size(); ++i)
    EXPECT_EQ(std::search(fp.begin(), fp.end(), s.secret.begin() + i, s.secret.begin() + i + 4), fp.end());
}

// ---------------------------------------------------------------------------------------------
// Real multicast, in a network namespace of this test's own (only lo, made multicast-capable):
// needs root. The thread that unshares is the only one in the new namespace, with the threads
// it starts, so the rest of the test binary is unaffected.

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return cond();
}

// In this thread's own network namespace: lo up and multicast-capable. Empty string: ok.
std::string private_loopback() {
  if (::geteuid() != 0) return "not root";
  if (::unshare(CLONE_NEWNET) != 0) return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  ifreq r{};
  std::strncpy(r.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = ::ioctl(fd, SIOCGIFFLAGS, &r) == 0;
  r.ifr_flags |= IFF_UP | IFF_MULTICAST;
  ok = ok && ::ioctl(fd, SIOCSIFFLAGS, &r) == 0;
  ::close(fd);
  return ok ? "" : std::string("cannot set lo up: ") + std::strerror(errno);
}

struct Instance {
  explicit Instance(const LanFingerprint& fp, uint8_t id_byte, uint16_t mesh_port) {
    LanDiscoveryOptions o;
    o.port = 17412;
    o.interval = 200ms;
    o.fingerprint = fp;
    o.describe = [id_byte, mesh_port] {
      LanAnnouncement a;
      a.node_id.fill(id_byte);
      a.mesh_port = mesh_port;
      a.capacity.members_alive = 1;
      return a;
    };
    o.on_peer = [this](const LanPeer& p) {
      std::lock_guard lk(mu);
      heard.push_back(p);
    };
    lan = std::make_unique<LanDiscovery>(o);
  }
  bool heard_from(uint8_t id_byte) {
    std::lock_guard lk(mu);
    return std::any_of(heard.begin(), heard.end(), [&](const LanPeer& p) { return p.node_id[0] == id_byte; });
  }
  std::mutex mu;
  std::vector<LanPeer> heard;
  std::unique_ptr<LanDiscovery> lan;
};

TEST(LanDiscovery, FindsTheSameMeshIgnoresAnotherAndSurvivesFloods) {
  std::string skip;
  std::thread t([&] {
    skip = private_loopback();
    if (!skip.empty()) return;
    auto mesh = invite::MeshSecret::create();
    auto stranger = invite::MeshSecret::create();
    Instance a(lan_fingerprint(mesh), 0xa1, 1001), b(lan_fingerprint(mesh), 0xb2, 1002),
        c(lan_fingerprint(stranger), 0xc3, 1003);
    a.lan->start();
    b.lan->start();
    c.lan->start();
    EXPECT_EQ(a.lan->interfaces(), std::vector<std::string>{"lo"});
    EXPECT_TRUE(wait_until([&] { return a.heard_from(0xb2) && b.heard_from(0xa1); }, 5s));
    EXPECT_TRUE(wait_until([&] { return c.lan->stats().other_mesh >= 2 && a.lan->stats().other_mesh >= 1; }, 5s));
    EXPECT_FALSE(a.heard_from(0xc3));
    EXPECT_FALSE(a.heard_from(0xa1)) << "its own announcements are not a peer";
    {
      std::lock_guard lk(c.mu);
      EXPECT_TRUE(c.heard.empty());
    }
    auto peers = a.lan->peers();
    ASSERT_EQ(peers.size(), 1u);
    EXPECT_EQ(peers[0].address(), "127.0.0.1:1002");
    EXPECT_EQ(peers[0].interface, "lo");
    auto st = a.lan->status_json();
    EXPECT_EQ(st["peers"].size(), 1u);
    EXPECT_EQ(st["group"], "239.255.77.77");

    // Hostile datagrams from one source: refused, counted, and beyond the rate dropped unread.
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(17412);
    inet_pton(AF_INET, "239.255.77.77", &to.sin_addr);
    ip_mreqn m{};
    m.imr_ifindex = static_cast<int>(if_nametoindex("lo"));
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &m, sizeof m);
    auto junk = encode_lan_message(sample());
    junk[4] = 9;
    auto before = a.lan->stats();
    for (int i = 0; i < 200; ++i)
      ::sendto(fd, junk.data(), junk.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    ::close(fd);
    EXPECT_TRUE(wait_until([&] { return a.lan->stats().received - before.received >= 200; }, 5s));
    auto after = a.lan->stats();
    EXPECT_GT(after.refused, before.refused);
    EXPECT_GT(after.rate_limited, before.rate_limited);
    EXPECT_LE(after.refused - before.refused, 40u) << "the rate limit bounds what is even decoded";

    // Rotation: b moves to the new epoch, a (still on the old one) now counts it as another mesh.
    auto rotated = mesh;
    rotated.rotate();
    b.lan->set_fingerprint(lan_fingerprint(rotated));
    auto other_before = a.lan->stats().other_mesh;
    EXPECT_TRUE(wait_until([&] { return a.lan->stats().other_mesh > other_before; }, 5s));
    a.lan->stop();
    b.lan->stop();
    c.lan->stop();
  });
  t.join();
  if (!skip.empty()) GTEST_SKIP() << "no private network namespace: " << skip;
}

}  // namespace
}  // namespace llmesh::mesh::discovery
