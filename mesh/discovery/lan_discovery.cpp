#include "discovery/lan_discovery.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

namespace llmesh::mesh::discovery {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

constexpr char kFingerprintContext[] = "llmesh-lan-v1";
constexpr size_t kMaxPeers = 64;       // matching peers remembered
constexpr size_t kMaxBuckets = 1024;   // sources rate-limited individually
constexpr auto kMinAnnounceGap = std::chrono::milliseconds(1000);  // for announce_soon and queries

void put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i)));
}
uint16_t get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

std::string ipv4_text(uint32_t addr_net) {
  char buf[INET_ADDRSTRLEN] = {};
  in_addr a{};
  a.s_addr = addr_net;
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

LanFingerprint lan_fingerprint(const invite::MeshSecret& secret) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  uint8_t epoch[4];
  for (int i = 0; i < 4; ++i) epoch[i] = uint8_t(secret.epoch >> (24 - 8 * i));
  LanFingerprint out{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, secret.secret.data(), secret.secret.size(), out.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kFingerprintContext), sizeof kFingerprintContext - 1);
  crypto_generichash_update(&st, secret.mesh_id.data(), secret.mesh_id.size());
  crypto_generichash_update(&st, epoch, sizeof epoch);
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

const char* lan_refusal_name(LanRefusal r) {
  switch (r) {
    case LanRefusal::none: return "none";
    case LanRefusal::too_short: return "too_short";
    case LanRefusal::bad_magic: return "bad_magic";
    case LanRefusal::bad_version: return "bad_version";
    case LanRefusal::bad_type: return "bad_type";
    case LanRefusal::bad_role: return "bad_role";
    case LanRefusal::bad_port: return "bad_port";
  }
  return "unknown";
}

std::vector<uint8_t> encode_lan_message(const LanAnnouncement& a) {
  std::vector<uint8_t> out;
  out.reserve(kLanMessageSize);
  out.insert(out.end(), kLanMagic.begin(), kLanMagic.end());
  out.push_back(kLanVersion);
  out.push_back(static_cast<uint8_t>(a.type));
  out.push_back(static_cast<uint8_t>(a.role));
  out.push_back(0);
  out.insert(out.end(), a.fingerprint.begin(), a.fingerprint.end());
  out.insert(out.end(), a.node_id.begin(), a.node_id.end());
  put16(out, a.mesh_port);
  put16(out, a.capacity.members_alive);
  put16(out, a.capacity.servers);
  put16(out, a.capacity.slots_total);
  put16(out, a.capacity.slots_free);
  put16(out, a.capacity.models);
  put32(out, a.capacity.tokens_per_second_x10);
  return out;
}

LanDecoded decode_lan_message(std::span<const uint8_t> b) {
  auto refuse = [](LanRefusal r) { return LanDecoded{std::nullopt, r}; };
  // The magic first: a stray datagram of another protocol is "not ours", whatever its size.
  if (b.size() < kLanMagic.size()) return refuse(LanRefusal::too_short);
  if (!std::equal(kLanMagic.begin(), kLanMagic.end(), b.begin())) return refuse(LanRefusal::bad_magic);
  if (b.size() < 5) return refuse(LanRefusal::too_short);
  if (b[4] != kLanVersion) return refuse(LanRefusal::bad_version);
  if (b.size() < kLanMessageSize) return refuse(LanRefusal::too_short);
  LanAnnouncement a;
  if (b[5] != uint8_t(LanMessageType::announce) && b[5] != uint8_t(LanMessageType::query))
    return refuse(LanRefusal::bad_type);
  a.type = static_cast<LanMessageType>(b[5]);
  if (b[6] > uint8_t(gossip::Role::client)) return refuse(LanRefusal::bad_role);
  a.role = static_cast<gossip::Role>(b[6]);
  const uint8_t* p = b.data() + 8;
  std::copy(p, p + 16, a.fingerprint.begin());
  p += 16;
  std::copy(p, p + 32, a.node_id.begin());
  p += 32;
  a.mesh_port = get16(p);
  if (a.mesh_port == 0) return refuse(LanRefusal::bad_port);
  a.capacity.members_alive = get16(p + 2);
  a.capacity.servers = get16(p + 4);
  a.capacity.slots_total = get16(p + 6);
  a.capacity.slots_free = get16(p + 8);
  a.capacity.models = get16(p + 10);
  a.capacity.tokens_per_second_x10 = get32(p + 12);
  return {a, LanRefusal::none};
}

// ---------------------------------------------------------------------------------------------

LanDiscovery::LanDiscovery(LanDiscoveryOptions opt) : opt_(std::move(opt)), fingerprint_(opt_.fingerprint) {
  if (opt_.interval < std::chrono::milliseconds(50)) opt_.interval = std::chrono::milliseconds(50);
}

LanDiscovery::~LanDiscovery() { stop(); }

void LanDiscovery::log(const std::string& line) const {
  if (opt_.log) opt_.log(line);
}

void LanDiscovery::start() {
  if (thread_.joinable()) return;
  in_addr g{};
  if (inet_pton(AF_INET, opt_.group.c_str(), &g) != 1 || !IN_MULTICAST(ntohl(g.s_addr)))
    throw std::runtime_error("LAN discovery: " + opt_.group + " is not an IPv4 multicast address");
  group_addr_ = g.s_addr;
  const std::string where = fmt::format("{}:{}", opt_.group, opt_.port);

  recv_fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (recv_fd_ < 0) throw std::runtime_error("LAN discovery: socket: " + errno_text(errno));
  int one = 1, zero = 0;
  // Several nodes on one machine listen on the same group and port.
  setsockopt(recv_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(recv_fd_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  setsockopt(recv_fd_, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
  // Only the groups this socket joined, not every group some socket on the machine joined.
  setsockopt(recv_fd_, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof zero);
  sockaddr_in bind_to{};
  bind_to.sin_family = AF_INET;
  bind_to.sin_port = htons(opt_.port);
  bind_to.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(recv_fd_, reinterpret_cast<sockaddr*>(&bind_to), sizeof bind_to) != 0) {
    int e = errno;
    ::close(recv_fd_);
    recv_fd_ = -1;
    throw std::runtime_error("LAN discovery: cannot listen on UDP port " + std::to_string(opt_.port) + " for " + where +
                             ": " + errno_text(e));
  }
  send_fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (send_fd_ < 0 || wake_fd_ < 0) {
    int e = errno;
    stop();
    throw std::runtime_error("LAN discovery: socket: " + errno_text(e));
  }
  int ttl = 1;  // the local network only: routers never forward it
  setsockopt(send_fd_, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
  setsockopt(send_fd_, IPPROTO_IP, IP_MULTICAST_LOOP, &one, sizeof one);  // other nodes on this machine

  refresh_interfaces();
  {
    std::lock_guard lk(mu_);
    std::string names;
    for (auto& i : interfaces_) names += (names.empty() ? "" : ", ") + i.name;
    log(names.empty() ? fmt::format("lan: listening on {}; no multicast-capable interface is up yet (reason no_multicast_interface)", where)
                      : fmt::format("lan: listening on {} on {}", where, names));
  }
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void LanDiscovery::stop() {
  stopping_ = true;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  for (int* fd : {&recv_fd_, &send_fd_, &wake_fd_})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

void LanDiscovery::set_fingerprint(const LanFingerprint& fp) {
  {
    std::lock_guard lk(mu_);
    if (fingerprint_ == fp) return;
    fingerprint_ = fp;
    peers_.clear();  // heard under the old secret
  }
  announce_soon();
}

void LanDiscovery::announce_soon() {
  announce_requested_ = true;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

// Joins the group on interfaces that came up, leaves it on those that went away.
void LanDiscovery::refresh_interfaces() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return;
  std::vector<Interface> now;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    if (!(a->ifa_flags & IFF_UP) || !(a->ifa_flags & IFF_MULTICAST)) continue;
    unsigned index = if_nametoindex(a->ifa_name);
    if (!index || std::any_of(now.begin(), now.end(), [&](const Interface& i) { return i.index == index; })) continue;
    now.push_back({a->ifa_name, index, reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr});
  }
  ::freeifaddrs(list);

  std::lock_guard lk(mu_);
  auto membership = [&](const Interface& i, int op) {
    ip_mreqn m{};
    m.imr_multiaddr.s_addr = group_addr_;
    m.imr_ifindex = static_cast<int>(i.index);
    return setsockopt(recv_fd_, IPPROTO_IP, op, &m, sizeof m) == 0 ? 0 : errno;
  };
  for (const auto& old : interfaces_)
    if (std::none_of(now.begin(), now.end(), [&](const Interface& i) { return i.index == old.index; }))
      membership(old, IP_DROP_MEMBERSHIP);  // usually gone with the interface already
  std::vector<Interface> joined;
  for (const auto& i : now) {
    bool had = std::any_of(interfaces_.begin(), interfaces_.end(), [&](const Interface& o) { return o.index == i.index; });
    if (!had) {
      int e = membership(i, IP_ADD_MEMBERSHIP);
      if (e != 0 && e != EADDRINUSE) {
        log(fmt::format("lan: cannot join {} on {}: {} (reason multicast_join_failed)", opt_.group, i.name, errno_text(e)));
        continue;
      }
    }
    joined.push_back(i);
  }
  interfaces_ = std::move(joined);
}

void LanDiscovery::send_message(LanMessageType type) {
  LanAnnouncement a = opt_.describe ? opt_.describe() : LanAnnouncement{};
  a.type = type;
  std::vector<Interface> ifs;
  {
    std::lock_guard lk(mu_);
    a.fingerprint = fingerprint_;
    ifs = interfaces_;
  }
  auto bytes = encode_lan_message(a);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(opt_.port);
  to.sin_addr.s_addr = group_addr_;
  uint64_t sent = 0, errors = 0;
  for (const auto& i : ifs) {
    ip_mreqn m{};
    m.imr_ifindex = static_cast<int>(i.index);
    m.imr_address.s_addr = i.addr;  // the source address (lo's 127.0.0.1 would not be picked otherwise)
    bool ok = setsockopt(send_fd_, IPPROTO_IP, IP_MULTICAST_IF, &m, sizeof m) == 0 &&
              ::sendto(send_fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
                  static_cast<ssize_t>(bytes.size());
    ok ? ++sent : ++errors;
  }
  std::lock_guard lk(mu_);
  stats_.sent += sent;
  if (errors && stats_.send_errors == 0) log(fmt::format("lan: sending on an interface failed: {} (reason multicast_send_failed)", errno_text(errno)));
  stats_.send_errors += errors;
}

bool LanDiscovery::admit_rate(uint32_t from, Clock::time_point now) {
  auto it = buckets_.find(from);
  if (it == buckets_.end()) {
    if (buckets_.size() >= kMaxBuckets) {
      // Forget sources whose bucket has refilled: they are idle.
      std::erase_if(buckets_, [&](const auto& kv) {
        return kv.second.tokens + std::chrono::duration<double>(now - kv.second.at).count() * opt_.rate_per_s >= opt_.burst;
      });
      if (buckets_.size() >= kMaxBuckets) return false;
    }
    it = buckets_.emplace(from, Bucket{opt_.burst, now}).first;
  }
  Bucket& b = it->second;
  b.tokens = std::min(opt_.burst, b.tokens + std::chrono::duration<double>(now - b.at).count() * opt_.rate_per_s);
  b.at = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

void LanDiscovery::on_datagram(std::span<const uint8_t> bytes, uint32_t from, unsigned ifindex) {
  const auto now = Clock::now();
  std::optional<LanPeer> peer;
  {
    std::lock_guard lk(mu_);
    ++stats_.received;
    if (!admit_rate(from, now)) {
      ++stats_.rate_limited;
      return;
    }
    auto d = decode_lan_message(bytes);
    if (!d.message || from == htonl(INADDR_ANY)) {  // no address to dial back
      ++stats_.refused;
      return;
    }
    const auto& a = *d.message;
    if (a.node_id == self_id_) return;  // our own, looped back
    if (sodium_memcmp(a.fingerprint.data(), fingerprint_.data(), fingerprint_.size()) != 0) {
      ++stats_.other_mesh;
      return;
    }
    ++stats_.matched;
    LanPeer p;
    p.node_id = a.node_id;
    p.host = ipv4_text(from);
    p.mesh_port = a.mesh_port;
    p.role = a.role;
    p.capacity = a.capacity;
    p.last_seen = now;
    for (const auto& i : interfaces_)
      if (i.index == ifindex) p.interface = i.name;
    if (!peers_.count(p.node_id) && peers_.size() >= kMaxPeers) {
      auto oldest = std::min_element(peers_.begin(), peers_.end(),
                                     [](const auto& x, const auto& y) { return x.second.last_seen < y.second.last_seen; });
      peers_.erase(oldest);
    }
    peers_[p.node_id] = p;
    peer = std::move(p);
    if (a.type == LanMessageType::query) announce_requested_ = true;
  }
  if (opt_.on_peer) opt_.on_peer(*peer);
}

void LanDiscovery::loop() {
  std::mt19937_64 rng(std::random_device{}());
  auto jittered = [&] {
    std::uniform_real_distribution<double> f(0.8, 1.2);
    return std::chrono::duration_cast<Clock::duration>(opt_.interval * f(rng));
  };
  if (opt_.describe) self_id_ = opt_.describe().node_id;
  // A starting node asks the others to announce now instead of waiting for their interval.
  send_message(LanMessageType::query);
  send_message(LanMessageType::announce);
  auto last_announce = Clock::now();
  auto next_announce = last_announce + jittered();
  std::vector<uint8_t> buf(kLanMaxDatagram);
  while (!stopping_) {
    auto now = Clock::now();
    if (announce_requested_ && now - last_announce >= kMinAnnounceGap) {
      announce_requested_ = false;
      // A little random delay: many nodes answering one query do not all send at once.
      std::uniform_int_distribution<int> d(0, 200);
      next_announce = std::min(next_announce, now + std::chrono::milliseconds(d(rng)));
    }
    if (now >= next_announce) {
      refresh_interfaces();
      send_message(LanMessageType::announce);
      last_announce = Clock::now();
      next_announce = last_announce + jittered();
      // Forget peers not heard for a while.
      std::lock_guard lk(mu_);
      std::erase_if(peers_, [&](const auto& kv) { return last_announce - kv.second.last_seen > 3 * opt_.interval + std::chrono::seconds(5); });
      continue;
    }
    auto wait = next_announce - now;
    if (announce_requested_) wait = std::min<Clock::duration>(wait, kMinAnnounceGap - (now - last_announce));
    int timeout_ms = static_cast<int>(std::clamp<int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(wait).count() + 1, 1, 60000));
    pollfd fds[2] = {{recv_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n = ::poll(fds, 2, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      log("lan: poll: " + errno_text(errno) + "; LAN discovery stopped (reason lan_poll_failed)");
      break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
    }
    if (!(fds[0].revents & POLLIN)) continue;
    // Drain what is queued, bounded so a flood cannot starve the announcements.
    for (int i = 0; i < 256 && !stopping_; ++i) {
      sockaddr_in from{};
      iovec iov{buf.data(), buf.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in_pktinfo))];
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t got = ::recvmsg(recv_fd_, &msg, 0);  // longer datagrams are truncated: the rest is ignored anyway
      if (got < 0) break;
      if (from.sin_family != AF_INET) continue;
      unsigned ifindex = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO)
          ifindex = static_cast<unsigned>(reinterpret_cast<in_pktinfo*>(CMSG_DATA(c))->ipi_ifindex);
      on_datagram(std::span<const uint8_t>(buf.data(), static_cast<size_t>(got)), from.sin_addr.s_addr, ifindex);
    }
  }
}

std::vector<LanPeer> LanDiscovery::peers() const {
  std::lock_guard lk(mu_);
  std::vector<LanPeer> out;
  for (const auto& [id, p] : peers_) out.push_back(p);
  std::sort(out.begin(), out.end(), [](const LanPeer& a, const LanPeer& b) { return a.last_seen > b.last_seen; });
  return out;
}

LanStats LanDiscovery::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

std::vector<std::string> LanDiscovery::interfaces() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (const auto& i : interfaces_) out.push_back(i.name);
  return out;
}

json LanDiscovery::status_json() const {
  auto list = peers();
  auto st = stats();
  auto now = Clock::now();
  json peers = json::array();
  for (const auto& p : list)
    peers.push_back({{"node_id", invite::to_hex(p.node_id)},
                     {"address", p.address()},
                     {"role", gossip::role_name(p.role)},
                     {"interface", p.interface},
                     {"age_s", std::chrono::duration<double>(now - p.last_seen).count()},
                     {"members_alive", p.capacity.members_alive},
                     {"servers", p.capacity.servers},
                     {"slots_total", p.capacity.slots_total},
                     {"slots_free", p.capacity.slots_free},
                     {"models", p.capacity.models},
                     {"tokens_per_second", p.capacity.tokens_per_second_x10 / 10.0}});
  return {{"group", opt_.group},
          {"port", opt_.port},
          {"interval_ms", opt_.interval.count()},
          {"interfaces", interfaces()},
          {"sent", st.sent},
          {"received", st.received},
          {"matched", st.matched},
          {"other_mesh", st.other_mesh},
          {"refused", st.refused},
          {"rate_limited", st.rate_limited},
          {"send_errors", st.send_errors},
          {"peers", peers}};
}

}  // namespace llmesh::mesh::discovery
