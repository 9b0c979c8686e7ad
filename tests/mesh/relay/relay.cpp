#include "relay.h"

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <deque>
#include <future>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace llmesh::relay {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

constexpr size_t kSegment = 1448;          // a typical TCP MSS: the unit of loss
constexpr size_t kMaxQueued = 1 << 20;     // per direction; beyond it the relay stops reading
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxWriteBatch = 64 * 1024;

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

bool plain(const FaultSpec& s) { return s.latency_ms <= 0 && s.jitter_ms <= 0 && s.loss <= 0 && s.rate <= 0; }

std::string fmt_double(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

uint16_t parse_port(const std::string& s, bool allow_zero) {
  if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw RelayError("invalid port '" + s + "'");
  unsigned v = unsigned(std::stoul(s));
  if (v > 65535 || (v == 0 && !allow_zero)) throw RelayError("invalid port '" + s + "'");
  return uint16_t(v);
}

}  // namespace

void parse_fault_settings(const std::vector<std::string>& words, FaultSpec& spec) {
  for (const auto& w : words) {
    auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0) throw RelayError("expected key=value, got '" + w + "'");
    std::string key = w.substr(0, eq), val = w.substr(eq + 1);
    auto num = [&](const std::string& v) {
      size_t used = 0;
      double d = 0;
      try {
        d = std::stod(v, &used);
      } catch (...) {
        used = 0;
      }
      if (used != v.size() || v.empty() || !(d >= 0) || d > 1e12) throw RelayError("invalid value for " + key + ": '" + v + "'");
      return d;
    };
    if (key == "latency") spec.latency_ms = num(val);
    else if (key == "jitter") spec.jitter_ms = num(val);
    else if (key == "loss") {
      spec.loss = num(val);
      if (spec.loss > 1) throw RelayError("loss is a probability from 0 to 1");
    } else if (key == "rate" || key == "bandwidth") spec.rate = num(val);
    else if (key == "stall") {
      auto dash = val.find('-');
      if (dash == std::string::npos) {
        spec.stall_min_ms = spec.stall_max_ms = num(val);
      } else {
        spec.stall_min_ms = num(val.substr(0, dash));
        spec.stall_max_ms = num(val.substr(dash + 1));
      }
      if (spec.stall_min_ms > spec.stall_max_ms) throw RelayError("stall range must be MIN-MAX with MIN <= MAX");
    } else {
      throw RelayError("unknown fault setting '" + key + "' (latency, jitter, loss, rate, stall)");
    }
  }
}

struct Link;

struct Pipe {
  struct Segment {
    std::vector<uint8_t> data;
    Clock::time_point release;
  };
  int dir = 0;  // 0 up (client -> target), 1 down
  tcp::socket* from = nullptr;
  tcp::socket* to = nullptr;
  std::deque<Segment> queue;
  size_t queued = 0;
  bool reading = false, writing = false, timer_armed = false, eof = false, shut = false;
  std::vector<uint8_t> buf = std::vector<uint8_t>(kReadChunk);
  std::vector<asio::const_buffer> batch;
  size_t batch_segments = 0;
  std::unique_ptr<asio::steady_timer> timer;
  Clock::time_point last_release{}, bandwidth_free{};
};

struct Session {
  explicit Session(asio::io_context& io, tcp::socket c, std::shared_ptr<Link> l)
      : client(std::move(c)), server(io), link(std::move(l)) {
    for (int d = 0; d < 2; ++d) {
      pipe[d].dir = d;
      pipe[d].timer = std::make_unique<asio::steady_timer>(io);
    }
    pipe[0].from = &client;
    pipe[0].to = &server;
    pipe[1].from = &server;
    pipe[1].to = &client;
  }
  tcp::socket client, server;
  std::shared_ptr<Link> link;
  Pipe pipe[2];
  bool connecting = false, connected = false, closed = false;
};
using SessionPtr = std::shared_ptr<Session>;

struct Link {
  Link(asio::io_context& io) : acceptor(io) {}
  std::string name;
  tcp::acceptor acceptor;
  uint16_t port = 0;
  std::string target_host;
  uint16_t target_port = 0;
  FaultSpec spec[2];
  bool blackhole = false, removed = false;
  LinkStats st;
  std::set<SessionPtr> sessions;
};
using LinkPtr = std::shared_ptr<Link>;

struct FaultRelay::Impl {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::string bind_host;
  std::mt19937_64 rng;
  std::map<std::string, LinkPtr> links;
  std::unique_ptr<tcp::acceptor> control;
  std::atomic<bool> shutdown{false};
  std::thread thread;

  Impl(std::string host, uint64_t seed) : bind_host(std::move(host)), rng(seed ? seed : std::random_device{}()) {
    thread = std::thread([this] { io.run(); });
  }

  // Runs f on the I/O thread and returns its result (exceptions included).
  template <class F>
  auto run(F f) -> decltype(f()) {
    if (io.get_executor().running_in_this_thread()) return f();
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io, [&task] { task(); });
    return fut.get();
  }

  LinkPtr find(const std::string& name) {
    auto it = links.find(name);
    if (it == links.end()) throw RelayError("no link named '" + name + "'");
    return it->second;
  }

  double uniform(double lo, double hi) {
    if (hi <= lo) return lo;
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  }

  // ---- links ----------------------------------------------------------------------------

  uint16_t add_link(const std::string& name, uint16_t listen_port, const std::string& host, uint16_t port) {
    if (!valid_name(name)) throw RelayError("invalid link name '" + name + "' (letters, digits, _ - .)");
    if (links.count(name)) throw RelayError("link '" + name + "' exists");
    if (host.empty()) throw RelayError("empty target host");
    auto L = std::make_shared<Link>(io);
    L->name = name;
    L->target_host = host;
    L->target_port = port;
    error_code ec;
    auto addr = asio::ip::make_address(bind_host, ec);
    if (ec) throw RelayError("invalid bind address '" + bind_host + "'");
    tcp::endpoint ep(addr, listen_port);
    L->acceptor.open(ep.protocol(), ec);
    if (!ec) L->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) L->acceptor.bind(ep, ec);
    if (!ec) L->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      throw RelayError("cannot listen on " + bind_host + ":" + std::to_string(listen_port) + ": " + ec.message());
    L->port = L->acceptor.local_endpoint().port();
    links[name] = L;
    accept_loop(L);
    return L->port;
  }

  void remove_link(const std::string& name) {
    auto L = find(name);
    L->removed = true;
    error_code ec;
    L->acceptor.close(ec);
    close_all(L, false);
    links.erase(name);
  }

  void accept_loop(const LinkPtr& L) {
    L->acceptor.async_accept([this, L](error_code ec, tcp::socket s) {
      if (L->removed || ec == asio::error::operation_aborted) return;
      if (!ec) {
        auto S = std::make_shared<Session>(io, std::move(s), L);
        error_code e2;
        S->client.set_option(tcp::no_delay(true), e2);
        L->sessions.insert(S);
        L->st.connections++;
        if (!L->blackhole) connect(S);
      }
      accept_loop(L);
    });
  }

  void connect(const SessionPtr& S) {
    S->connecting = true;
    auto resolver = std::make_shared<tcp::resolver>(io);
    resolver->async_resolve(
        S->link->target_host, std::to_string(S->link->target_port),
        [this, S, resolver](error_code ec, tcp::resolver::results_type results) {
          if (S->closed) return;
          if (ec) {
            close_session(S, true);
            return;
          }
          asio::async_connect(S->server, results, [this, S](error_code ec2, const tcp::endpoint&) {
            if (S->closed) return;
            if (ec2) {
              // The target refused or is unreachable: the client sees a reset, as it would
              // connecting directly.
              close_session(S, true);
              return;
            }
            error_code e;
            S->server.set_option(tcp::no_delay(true), e);
            S->connected = true;
            for (int d = 0; d < 2; ++d) {
              read(S, d);
              write(S, d);
            }
          });
        });
  }

  // ---- forwarding -----------------------------------------------------------------------

  void read(const SessionPtr& S, int d) {
    Pipe& p = S->pipe[d];
    if (S->closed || !S->connected || p.reading || p.eof || S->link->blackhole || p.queued >= kMaxQueued) return;
    p.reading = true;
    p.from->async_read_some(asio::buffer(p.buf), [this, S, d](error_code ec, size_t n) {
      Pipe& p = S->pipe[d];
      p.reading = false;
      if (S->closed) return;
      if (ec == asio::error::eof) {
        p.eof = true;
        write(S, d);
        return;
      }
      if (ec) {
        // A reset (or other error) on one side is passed on as a reset to the other.
        close_session(S, true);
        return;
      }
      enqueue(S, d, n);
      write(S, d);
      read(S, d);
    });
  }

  void enqueue(const SessionPtr& S, int d, size_t n) {
    Pipe& p = S->pipe[d];
    Link& L = *S->link;
    const FaultSpec& f = L.spec[d];
    auto now = Clock::now();
    auto ms = [](double v) {
      return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(v));
    };
    if (plain(f)) {
      Pipe::Segment seg{std::vector<uint8_t>(p.buf.begin(), p.buf.begin() + std::ptrdiff_t(n)),
                        std::max(now, p.last_release)};
      p.last_release = seg.release;
      p.queued += n;
      p.queue.push_back(std::move(seg));
      return;
    }
    for (size_t off = 0; off < n; off += kSegment) {
      size_t len = std::min(kSegment, n - off);
      double delay = f.latency_ms;
      if (f.jitter_ms > 0) delay += uniform(-f.jitter_ms, f.jitter_ms);
      if (delay < 0) delay = 0;
      if (f.loss > 0 && uniform(0, 1) < f.loss) {
        delay += uniform(f.stall_min_ms, f.stall_max_ms);
        (d == 0 ? L.st.stalls_up : L.st.stalls_down)++;
      }
      // TCP delivers in order: a segment never overtakes the one before it.
      auto release = std::max(now + ms(delay), p.last_release);
      if (f.rate > 0) {
        auto start = std::max(release, p.bandwidth_free);
        p.bandwidth_free = start + ms(double(len) * 1000.0 / f.rate);
        release = p.bandwidth_free;
      }
      p.last_release = release;
      p.queue.push_back({std::vector<uint8_t>(p.buf.begin() + std::ptrdiff_t(off),
                                              p.buf.begin() + std::ptrdiff_t(off + len)),
                         release});
      p.queued += len;
    }
  }

  void write(const SessionPtr& S, int d) {
    Pipe& p = S->pipe[d];
    if (S->closed || !S->connected || p.writing || p.timer_armed || S->link->blackhole) return;
    if (p.queue.empty()) {
      if (p.eof && !p.shut) {
        p.shut = true;
        error_code ec;
        p.to->shutdown(tcp::socket::shutdown_send, ec);
        if (S->pipe[0].shut && S->pipe[1].shut) close_session(S, false);
      }
      return;
    }
    auto now = Clock::now();
    if (p.queue.front().release > now) {
      p.timer_armed = true;
      p.timer->expires_at(p.queue.front().release);
      p.timer->async_wait([this, S, d](error_code) {
        S->pipe[d].timer_armed = false;
        write(S, d);
      });
      return;
    }
    p.batch.clear();
    p.batch_segments = 0;
    size_t bytes = 0;
    for (auto& seg : p.queue) {
      if (seg.release > now || (bytes > 0 && bytes + seg.data.size() > kMaxWriteBatch)) break;
      p.batch.push_back(asio::buffer(seg.data));
      bytes += seg.data.size();
      p.batch_segments++;
    }
    p.writing = true;
    asio::async_write(*p.to, p.batch, [this, S, d](error_code ec, size_t n) {
      Pipe& p = S->pipe[d];
      p.writing = false;
      if (S->closed) return;
      if (ec) {
        close_session(S, true);
        return;
      }
      for (size_t i = 0; i < p.batch_segments; ++i) p.queue.pop_front();
      p.queued -= n;
      (d == 0 ? S->link->st.up_bytes : S->link->st.down_bytes) += n;
      read(S, d);
      write(S, d);
    });
  }

  static void discard_unread(tcp::socket& s) {
    // Closing a socket with unread data makes the kernel send RST instead of FIN; a cut must
    // look like an orderly close, so drain what is buffered first.
    error_code ec;
    s.non_blocking(true, ec);
    uint8_t junk[16384];
    for (int i = 0; i < 1024; ++i) {
      size_t n = s.read_some(asio::buffer(junk), ec);
      if (ec || n == 0) break;
    }
  }

  void close_session(const SessionPtr& S, bool rst) {
    if (S->closed) return;
    S->closed = true;
    for (auto* s : {&S->client, &S->server}) {
      if (!s->is_open()) continue;
      error_code ec;
      if (rst) {
        s->set_option(asio::socket_base::linger(true, 0), ec);
      } else {
        s->shutdown(tcp::socket::shutdown_send, ec);
        discard_unread(*s);
      }
      s->close(ec);
    }
    for (auto& p : S->pipe) p.timer->cancel();
    S->link->sessions.erase(S);
  }

  void close_all(const LinkPtr& L, bool rst) {
    auto sessions = L->sessions;  // close_session edits the set
    for (auto& S : sessions) close_session(S, rst);
  }

  void set_blackhole(const LinkPtr& L, bool on) {
    if (L->blackhole == on) return;
    L->blackhole = on;
    if (on) return;
    auto sessions = L->sessions;
    for (auto& S : sessions) {
      if (!S->connected) {
        if (!S->connecting) connect(S);
        continue;
      }
      for (int d = 0; d < 2; ++d) {
        read(S, d);
        write(S, d);
      }
    }
  }

  LinkStats stats(const LinkPtr& L) {
    LinkStats s = L->st;
    s.active = L->sessions.size();
    s.blackhole = L->blackhole;
    return s;
  }

  // ---- control protocol -----------------------------------------------------------------

  std::string execute(std::string_view line) {
    std::vector<std::string> w;
    {
      std::istringstream in{std::string(line)};
      std::string t;
      while (in >> t) w.push_back(t);
    }
    if (w.empty() || w[0][0] == '#') return "";
    try {
      const std::string& cmd = w[0];
      auto need = [&](size_t n, const char* usage) {
        if (w.size() != n) throw RelayError(std::string("usage: ") + usage);
      };
      if (cmd == "ping") return "ok pong";
      if (cmd == "help")
        return "ok commands: link add NAME LISTEN_PORT HOST PORT | link del NAME | link list | "
               "fault NAME [up|down|both] latency=MS jitter=MS loss=P rate=BYTES_PER_S stall=MIN-MAX | "
               "cut NAME | reset NAME | blackhole NAME on|off | restore NAME | stats NAME | show NAME | ping | "
               "shutdown";
      if (cmd == "link") {
        if (w.size() >= 2 && w[1] == "add") {
          need(6, "link add NAME LISTEN_PORT TARGET_HOST TARGET_PORT");
          uint16_t port = add_link(w[2], parse_port(w[3], true), w[4], parse_port(w[5], false));
          return "ok port=" + std::to_string(port);
        }
        if (w.size() >= 2 && (w[1] == "del" || w[1] == "remove")) {
          need(3, "link del NAME");
          remove_link(w[2]);
          return "ok";
        }
        if (w.size() >= 2 && w[1] == "list") {
          std::string out = "ok";
          for (auto& [n, L] : links)
            out += " " + n + "=" + std::to_string(L->port) + ">" + L->target_host + ":" +
                   std::to_string(L->target_port);
          return out;
        }
        throw RelayError("usage: link add|del|list ...");
      }
      if (cmd == "fault") {
        if (w.size() < 2) throw RelayError("usage: fault NAME [up|down|both] key=value...");
        auto L = find(w[1]);
        size_t i = 2;
        Direction dir = Direction::both;
        if (w.size() > 2 && (w[2] == "up" || w[2] == "down" || w[2] == "both")) {
          dir = w[2] == "up" ? Direction::up : w[2] == "down" ? Direction::down : Direction::both;
          i = 3;
        }
        std::vector<std::string> kv(w.begin() + std::ptrdiff_t(i), w.end());
        for (int d = 0; d < 2; ++d) {
          if ((dir == Direction::up && d == 1) || (dir == Direction::down && d == 0)) continue;
          FaultSpec s = L->spec[d];
          parse_fault_settings(kv, s);
          L->spec[d] = s;
        }
        return "ok";
      }
      if (cmd == "cut" || cmd == "reset" || cmd == "restore" || cmd == "stats" || cmd == "show") {
        need(2, (cmd + " NAME").c_str());
        auto L = find(w[1]);
        if (cmd == "cut") close_all(L, false);
        if (cmd == "reset") close_all(L, true);
        if (cmd == "restore") {
          L->spec[0] = L->spec[1] = FaultSpec{};
          set_blackhole(L, false);
        }
        if (cmd == "stats") {
          auto s = stats(L);
          return "ok up=" + std::to_string(s.up_bytes) + " down=" + std::to_string(s.down_bytes) +
                 " connections=" + std::to_string(s.connections) + " active=" + std::to_string(s.active) +
                 " stalls_up=" + std::to_string(s.stalls_up) + " stalls_down=" + std::to_string(s.stalls_down) +
                 " blackhole=" + (s.blackhole ? "on" : "off");
        }
        if (cmd == "show") {
          std::string out = "ok port=" + std::to_string(L->port) + " target=" + L->target_host + ":" +
                            std::to_string(L->target_port);
          for (int d = 0; d < 2; ++d) {
            const auto& f = L->spec[d];
            out += std::string(d == 0 ? " up:" : " down:") + " latency=" + fmt_double(f.latency_ms) +
                   " jitter=" + fmt_double(f.jitter_ms) + " loss=" + fmt_double(f.loss) +
                   " rate=" + fmt_double(f.rate) + " stall=" + fmt_double(f.stall_min_ms) + "-" +
                   fmt_double(f.stall_max_ms);
          }
          return out + " blackhole=" + (L->blackhole ? "on" : "off");
        }
        return "ok";
      }
      if (cmd == "blackhole") {
        need(3, "blackhole NAME on|off");
        auto L = find(w[1]);
        if (w[2] != "on" && w[2] != "off") throw RelayError("usage: blackhole NAME on|off");
        set_blackhole(L, w[2] == "on");
        return "ok";
      }
      if (cmd == "shutdown") {
        shutdown = true;
        return "ok";
      }
      throw RelayError("unknown command '" + cmd + "' (try help)");
    } catch (const std::exception& e) {
      return std::string("error: ") + e.what();
    }
  }

  struct ControlConn {
    explicit ControlConn(tcp::socket s) : sock(std::move(s)), buf(4096) {}
    tcp::socket sock;
    asio::streambuf buf;
    std::string out;
  };

  uint16_t start_control(uint16_t port) {
    if (control) throw RelayError("control port already started");
    error_code ec;
    auto addr = asio::ip::make_address(bind_host, ec);
    if (ec) throw RelayError("invalid bind address '" + bind_host + "'");
    auto acc = std::make_unique<tcp::acceptor>(io);
    tcp::endpoint ep(addr, port);
    acc->open(ep.protocol(), ec);
    if (!ec) acc->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw RelayError("cannot listen on " + bind_host + ":" + std::to_string(port) + ": " + ec.message());
    control = std::move(acc);
    control_accept();
    return control->local_endpoint().port();
  }

  void control_accept() {
    control->async_accept([this](error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !control) return;
      if (!ec) control_read(std::make_shared<ControlConn>(std::move(s)));
      control_accept();
    });
  }

  void control_read(std::shared_ptr<ControlConn> c) {
    asio::async_read_until(c->sock, c->buf, '\n', [this, c](error_code ec, size_t n) {
      if (ec) return;  // closed, or a line over 4 KiB
      std::string line(asio::buffers_begin(c->buf.data()), asio::buffers_begin(c->buf.data()) + std::ptrdiff_t(n));
      c->buf.consume(n);
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      bool quit = line == "quit";
      std::string reply = quit ? "ok" : execute(line);
      if (reply.empty()) {
        control_read(c);
        return;
      }
      c->out = reply + "\n";
      asio::async_write(c->sock, asio::buffer(c->out), [this, c, quit](error_code ec2, size_t) {
        if (ec2) return;
        if (quit) {
          error_code e;
          c->sock.close(e);
          return;
        }
        control_read(c);
      });
    });
  }

  void stop_all() {
    for (auto& [n, L] : links) {
      L->removed = true;
      error_code ec;
      L->acceptor.close(ec);
      close_all(L, false);
    }
    links.clear();
    if (control) {
      error_code ec;
      control->close(ec);
      control.reset();
    }
  }
};

FaultRelay::FaultRelay(std::string bind_host, uint64_t seed)
    : impl_(std::make_shared<Impl>(std::move(bind_host), seed)) {}

FaultRelay::~FaultRelay() {
  try {
    impl_->run([this] { impl_->stop_all(); });
  } catch (...) {
  }
  impl_->guard.reset();
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t FaultRelay::add_link(const std::string& name, uint16_t listen_port, const std::string& target_host,
                              uint16_t target_port) {
  return impl_->run([&] { return impl_->add_link(name, listen_port, target_host, target_port); });
}
void FaultRelay::remove_link(const std::string& name) {
  impl_->run([&] { impl_->remove_link(name); });
}
void FaultRelay::set_fault(const std::string& name, Direction dir, const FaultSpec& spec) {
  if (spec.loss < 0 || spec.loss > 1 || spec.latency_ms < 0 || spec.jitter_ms < 0 || spec.rate < 0 ||
      spec.stall_min_ms < 0 || spec.stall_min_ms > spec.stall_max_ms)
    throw RelayError("invalid fault settings");
  impl_->run([&] {
    auto L = impl_->find(name);
    if (dir != Direction::down) L->spec[0] = spec;
    if (dir != Direction::up) L->spec[1] = spec;
  });
}
FaultSpec FaultRelay::fault(const std::string& name, Direction dir) {
  return impl_->run([&] { return impl_->find(name)->spec[dir == Direction::down ? 1 : 0]; });
}
void FaultRelay::cut(const std::string& name) {
  impl_->run([&] { impl_->close_all(impl_->find(name), false); });
}
void FaultRelay::reset(const std::string& name) {
  impl_->run([&] { impl_->close_all(impl_->find(name), true); });
}
void FaultRelay::blackhole(const std::string& name, bool on) {
  impl_->run([&] { impl_->set_blackhole(impl_->find(name), on); });
}
void FaultRelay::restore(const std::string& name) {
  impl_->run([&] {
    auto L = impl_->find(name);
    L->spec[0] = L->spec[1] = FaultSpec{};
    impl_->set_blackhole(L, false);
  });
}
LinkStats FaultRelay::stats(const std::string& name) {
  return impl_->run([&] { return impl_->stats(impl_->find(name)); });
}
std::vector<std::string> FaultRelay::links() {
  return impl_->run([&] {
    std::vector<std::string> out;
    for (auto& [n, L] : impl_->links) out.push_back(n);
    return out;
  });
}
std::string FaultRelay::command(std::string_view line) {
  return impl_->run([&] { return impl_->execute(line); });
}
uint16_t FaultRelay::start_control(uint16_t port) {
  return impl_->run([&] { return impl_->start_control(port); });
}
bool FaultRelay::shutdown_requested() const { return impl_->shutdown; }

}  // namespace llmesh::relay
