#include "nostr_relay/nostr_relay.h"

#include "invite/mesh_secret.h"

#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

namespace llmesh::mesh::discovery {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// ---- URLs ----

std::optional<RelayUrl> parse_relay_url(std::string_view url, std::string* error) {
  auto refuse = [&](const std::string& why) -> std::optional<RelayUrl> {
    if (error) *error = "relay URL \"" + std::string(url.substr(0, 200)) + "\": " + why;
    return std::nullopt;
  };
  RelayUrl r;
  r.text = std::string(url);
  for (char c : url)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return refuse("contains a space or control character");
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
    return out;
  };
  size_t colon = url.find("://");
  if (colon == std::string_view::npos) return refuse("not ws:// or wss://");
  std::string scheme = lower(url.substr(0, colon));
  if (scheme == "ws") r.tls = false;
  else if (scheme == "wss") r.tls = true;
  else return refuse("scheme \"" + scheme + "\" is not ws or wss");
  std::string_view rest = url.substr(colon + 3);
  rest = rest.substr(0, rest.find('#'));
  size_t slash = std::min(rest.find('/'), rest.find('?'));
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    r.target = std::string(rest.substr(slash));
    if (r.target[0] == '?') r.target = "/" + r.target;
  }
  if (authority.find('@') != std::string_view::npos) return refuse("user info is not allowed");
  std::string_view port_text;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return refuse("unterminated [IPv6 address]");
    r.host = std::string(authority.substr(1, close - 1));
    boost::system::error_code ec;
    asio::ip::make_address_v6(r.host, ec);
    if (ec) return refuse("\"" + r.host + "\" is not an IPv6 address");
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return refuse("unexpected text after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) return refuse("empty port");
    }
  } else {
    size_t pc = authority.rfind(':');
    if (pc != std::string_view::npos) {
      port_text = authority.substr(pc + 1);
      authority = authority.substr(0, pc);
      if (port_text.empty()) return refuse("empty port");
    }
    if (authority.find(':') != std::string_view::npos) return refuse("an IPv6 address must be in brackets");
    r.host = lower(authority);
  }
  if (r.host.empty()) return refuse("no host");
  if (port_text.empty()) {
    r.port = r.tls ? 443 : 80;
  } else {
    unsigned long p = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9' || p > 65535) return refuse("bad port \"" + std::string(port_text) + "\"");
      p = p * 10 + unsigned(c - '0');
    }
    if (p == 0 || p > 65535) return refuse("port out of range 1..65535");
    r.port = uint16_t(p);
  }
  return r;
}

namespace {

std::string prefix(std::string_view s, size_t n) {
  return s.size() <= n ? std::string(s) : std::string(s.substr(0, n)) + "...";
}

// One relay's conversation: the message that opens it, and what each relay message does to it.
class Exchange {
 public:
  enum class Step { more, done, failed };
  virtual ~Exchange() = default;
  virtual std::string request() const = 0;
  virtual std::string awaited() const = 0;  // what the relay should send next, for errors: "OK", "EOSE"
  // A nostr message of a type other than NOTICE and AUTH. On failed, *error says why.
  virtual Step on_message(const std::string& type, const json& msg, std::string* error) = 0;
  // Sent once the exchange is over (successfully or not), before closing.
  virtual std::optional<std::string> farewell() const { return std::nullopt; }
};

class PublishExchange : public Exchange {
 public:
  PublishExchange(const NostrEvent& e, PublishResult& r) : event_(e), result_(r) {}
  std::string request() const override { return json::array({"EVENT", event_.to_json()}).dump(); }
  std::string awaited() const override { return "OK"; }
  Step on_message(const std::string& type, const json& msg, std::string* error) override {
    if (type != "OK") return Step::more;
    if (msg.size() < 3 || !msg[1].is_string() || !msg[2].is_boolean()) {
      *error = "malformed OK message: " + prefix(msg.dump(), 120);
      return Step::failed;
    }
    if (msg[1].get<std::string>() != event_.id) return Step::more;  // about another event
    result_.message = msg.size() > 3 && msg[3].is_string() ? msg[3].get<std::string>() : "";
    if (msg[2].get<bool>()) return Step::done;
    *error = "refused: " + (result_.message.empty() ? std::string("(no reason given)") : result_.message);
    return Step::failed;
  }

 private:
  const NostrEvent& event_;
  PublishResult& result_;
};

class QueryExchange : public Exchange {
 public:
  static constexpr size_t kMaxRejectionsKept = 20;
  QueryExchange(const json& filter, const RelayOptions& o, QueryResult& r) : filter_(filter), options_(o), result_(r) {
    std::array<uint8_t, 6> raw{};
    RAND_bytes(raw.data(), int(raw.size()));  // unique enough among our own subscriptions
    subid_ = "llmesh-" + invite::to_hex(raw);
  }
  std::string request() const override { return json::array({"REQ", subid_, filter_}).dump(); }
  std::string awaited() const override { return "EOSE"; }
  std::optional<std::string> farewell() const override { return json::array({"CLOSE", subid_}).dump(); }

  Step on_message(const std::string& type, const json& msg, std::string* error) override {
    bool ours = msg.size() >= 2 && msg[1].is_string() && msg[1].get_ref<const std::string&>() == subid_;
    if (!ours) return Step::more;
    if (type == "EOSE") return Step::done;
    if (type == "CLOSED") {
      std::string why = msg.size() > 2 && msg[2].is_string() ? msg[2].get<std::string>() : "";
      *error = "relay closed the subscription: " + (why.empty() ? std::string("(no reason given)") : prefix(why, 200));
      return Step::failed;
    }
    if (type != "EVENT") return Step::more;
    if (msg.size() < 3) return reject("malformed: EVENT without an event");
    std::string why;
    auto e = parse_event(msg[2], &why);
    if (!e) return reject("malformed: " + why);
    EventCheck check = verify_event(*e);
    if (check != EventCheck::ok) return reject(std::string(event_check_name(check)) + ": " + e->id.substr(0, 8));
    if (!seen_.insert(e->id).second) return Step::more;
    result_.events.push_back(std::move(*e));
    return result_.events.size() >= options_.max_events ? Step::done : Step::more;
  }

 private:
  Step reject(std::string why) {
    ++result_.rejected;
    if (result_.rejections.size() < kMaxRejectionsKept) result_.rejections.push_back(std::move(why));
    return Step::more;
  }
  const json& filter_;
  const RelayOptions& options_;
  QueryResult& result_;
  std::string subid_;
  std::set<std::string> seen_;
};

// The relay's deadline: when it passes, `cancel` aborts whatever is in flight (by closing the
// socket under the TLS and WebSocket layers). Shared with the timer's handler, which may
// run after the exchange is over.
struct Deadline {
  explicit Deadline(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  std::function<void()> cancel;
  bool passed = false;
  std::string phase = "starting";

  static void arm(const std::shared_ptr<Deadline>& d, Clock::time_point when) {
    d->timer.expires_at(when);
    d->timer.async_wait([d](boost::system::error_code ec) {
      if (ec) return;
      d->passed = true;
      if (d->cancel) d->cancel();
    });
  }
};

struct Outcome {
  bool ok = false;
  std::string error;
  std::string notice;  // the relay's last NOTICE, quoted in a failure
};

std::string timed_out(const RelayOptions& o, const std::string& phase) {
  return "timed out after " + std::to_string(o.timeout.count()) + " ms " + phase;
}

constexpr auto kGoodbye = std::chrono::milliseconds(500);

auto with(boost::system::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

struct Resolved {
  boost::system::error_code ec;
  tcp::resolver::results_type endpoints;
};

// getaddrinfo cannot be cancelled, and asio's resolver waits for it even when cancelled, so a
// name is resolved on a thread of its own whose answer is dropped when the deadline passes
// first (nullopt). The thread holds nothing of the io_context once the caller has stopped
// waiting: `deliver` is cleared, under the lock, before this coroutine returns.
asio::awaitable<std::optional<Resolved>> resolve(const std::string& host, uint16_t port, Clock::time_point deadline) {
  auto ex = co_await asio::this_coro::executor;
  struct Shared {
    std::mutex mu;
    std::function<void(Resolved)> deliver;
  };
  auto shared = std::make_shared<Shared>();
  auto timer = std::make_shared<asio::steady_timer>(ex, deadline);
  auto answer = std::make_shared<std::optional<Resolved>>();
  shared->deliver = [ex, timer, answer](Resolved r) {
    asio::post(ex, [timer, answer, r = std::move(r)] {
      *answer = r;
      timer->cancel();
    });
  };
  std::thread([shared, host, port] {
    asio::io_context local;
    tcp::resolver resolver(local);
    Resolved r;
    r.endpoints = resolver.resolve(host, std::to_string(port), r.ec);
    std::lock_guard lock(shared->mu);
    if (shared->deliver) shared->deliver(std::move(r));
  }).detach();
  boost::system::error_code ec;
  co_await timer->async_wait(with(ec));
  {
    std::lock_guard lock(shared->mu);
    shared->deliver = nullptr;
  }
  co_return *answer;
}

std::string tls_failure(SSL* ssl, const boost::system::error_code& ec) {
  long v = SSL_get_verify_result(ssl);
  std::string why = "TLS handshake failed: " + ec.message();
  if (v != X509_V_OK) why += " (" + std::string(X509_verify_cert_error_string(v)) + ")";
  return why;
}

template <class WS>
asio::awaitable<void> converse(WS& ws, const RelayUrl& url, const tcp::resolver::results_type& endpoints, Exchange& x,
                               const RelayOptions& o, std::shared_ptr<Deadline> dp, Clock::time_point deadline,
                               Outcome& out) {
  Deadline& d = *dp;
  constexpr bool tls = !std::is_same_v<WS, websocket::stream<beast::tcp_stream>>;
  boost::system::error_code ec;
  // An operation failed: because the deadline passed (and closed the socket), or for `what`.
  auto fail = [&](std::string what) { out.error = d.passed ? timed_out(o, d.phase) : std::move(what); };

  d.phase = "connecting";
  co_await beast::get_lowest_layer(ws).async_connect(endpoints, with(ec));
  if (ec) co_return fail("cannot connect: " + ec.message());

  if constexpr (tls) {
    SSL* ssl = ws.next_layer().native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    boost::system::error_code not_ip;
    asio::ip::make_address(url.host, not_ip);
    if (not_ip) {
      SSL_set_tlsext_host_name(ssl, url.host.c_str());
      X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), url.host.size());
    } else {
      X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
    }
    ws.next_layer().set_verify_mode(ssl::verify_peer);
    d.phase = "in the TLS handshake";
    co_await ws.next_layer().async_handshake(ssl::stream_base::client, with(ec));
    if (ec) co_return fail(tls_failure(ssl, ec));
  }

  ws.read_message_max(o.max_message_bytes);
  ws.set_option(websocket::stream_base::decorator(
      [](websocket::request_type& req) { req.set(beast::http::field::user_agent, "llmesh"); }));
  bool v6 = url.host.find(':') != std::string::npos;
  std::string host = v6 ? "[" + url.host + "]" : url.host;
  if (url.port != (url.tls ? 443 : 80)) host += ":" + std::to_string(url.port);
  d.phase = "in the WebSocket handshake";
  co_await ws.async_handshake(host, url.target, with(ec));
  if (ec) co_return fail("WebSocket handshake failed: " + ec.message());

  ws.text(true);
  d.phase = "sending";
  std::string request = x.request();
  co_await ws.async_write(asio::buffer(request), with(ec));
  if (ec) co_return fail("cannot send: " + ec.message());

  d.phase = "waiting for " + x.awaited();
  beast::flat_buffer buffer;
  for (;;) {
    buffer.clear();
    co_await ws.async_read(buffer, with(ec));
    if (ec == websocket::error::message_too_big) {
      co_return fail("relay sent a message larger than " + std::to_string(o.max_message_bytes) + " bytes");
    }
    if (ec == websocket::error::closed) {
      std::string reason(ws.reason().reason.c_str());
      co_return fail("relay closed the connection before " + x.awaited() + (reason.empty() ? "" : ": " + reason));
    }
    if (ec) co_return fail("connection lost " + d.phase + ": " + ec.message());
    if (!ws.got_text()) continue;
    std::string text = beast::buffers_to_string(buffer.data());
    json msg = json::parse(text, nullptr, false);
    if (msg.is_discarded() || !msg.is_array() || msg.empty() || !msg[0].is_string()) {
      fail("relay sent something that is not a nostr message: " + prefix(text, 80));
      break;
    }
    const std::string type = msg[0].get<std::string>();
    if (type == "NOTICE") {
      out.notice = msg.size() > 1 && msg[1].is_string() ? prefix(msg[1].get<std::string>(), 200) : "";
      continue;
    }
    if (type == "AUTH") continue;  // NIP-42: we read only public events; no authentication
    Exchange::Step step = x.on_message(type, msg, &out.error);
    if (step == Exchange::Step::more) continue;
    out.ok = step == Exchange::Step::done;
    break;
  }

  // A polite goodbye, briefly: the result is already known, and a relay that does not answer
  // the close must not hold the call up.
  Deadline::arm(dp, std::min(deadline, Clock::now() + kGoodbye));
  if (auto bye = x.farewell()) co_await ws.async_write(asio::buffer(*bye), with(ec));
  if (!ec) co_await ws.async_close(websocket::close_code::normal, with(ec));
}

asio::awaitable<void> talk_to_relay(std::string text, Exchange& x, const RelayOptions& o, Outcome& out) {
  auto parsed = parse_relay_url(text, &out.error);
  if (!parsed) co_return;
  const RelayUrl& url = *parsed;
  auto ex = co_await asio::this_coro::executor;
  Clock::time_point deadline = Clock::now() + o.timeout;
  auto d = std::make_shared<Deadline>(ex);
  Deadline::arm(d, deadline);

  d->phase = "resolving " + url.host;
  boost::system::error_code ec;
  tcp::resolver::results_type endpoints;
  if (auto r = co_await resolve(url.host, url.port, deadline)) {
    ec = r->ec;
    endpoints = std::move(r->endpoints);
  } else {
    d->passed = true;
  }
  if (d->passed || ec) {
    out.error = d->passed ? timed_out(o, d->phase) : "cannot resolve " + url.host + ": " + ec.message();
  } else if (url.tls) {
    ssl::context ctx(ssl::context::tls_client);
    ctx.set_default_verify_paths(ec);  // no system store: only ca_file can vouch
    ec.clear();
    if (!o.ca_file.empty()) ctx.load_verify_file(o.ca_file, ec);
    if (ec) {
      out.error = "cannot load CA file " + o.ca_file + ": " + ec.message();
    } else {
      websocket::stream<ssl::stream<beast::tcp_stream>> ws(ex, ctx);
      d->cancel = [&ws] { beast::get_lowest_layer(ws).close(); };
      co_await converse(ws, url, endpoints, x, o, d, deadline, out);
    }
  } else {
    websocket::stream<beast::tcp_stream> ws(ex);
    d->cancel = [&ws] { beast::get_lowest_layer(ws).close(); };
    co_await converse(ws, url, endpoints, x, o, d, deadline, out);
  }
  d->cancel = nullptr;  // the streams die with this frame; the timer's handler may outlive it
  d->timer.cancel();
  if (!out.ok && !out.notice.empty()) out.error += " (relay notice: " + out.notice + ")";
}

// Runs one exchange per relay, all on one io_context on this thread, and fills each result's
// relay, ok, error and took fields.
template <class Result>
void run_all(const std::vector<std::string>& relays, std::vector<Result>& results,
             std::vector<std::unique_ptr<Exchange>>& exchanges, const RelayOptions& o) {
  asio::io_context io;
  std::vector<Outcome> outcomes(relays.size());
  auto start = Clock::now();
  for (size_t i = 0; i < relays.size(); ++i) {
    results[i].relay = relays[i];
    asio::co_spawn(io, talk_to_relay(relays[i], *exchanges[i], o, outcomes[i]),
                   [&, i](std::exception_ptr e) {
                     results[i].took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
                     if (!e) return;
                     outcomes[i].ok = false;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       outcomes[i].error = std::string("internal error: ") + ex.what();
                     } catch (...) {
                       outcomes[i].error = "internal error";
                     }
                   });
  }
  try {
    io.run();
  } catch (const std::exception& e) {  // a handler threw: report it on every unfinished relay
    for (auto& out : outcomes)
      if (!out.ok && out.error.empty()) out.error = std::string("internal error: ") + e.what();
  }
  for (size_t i = 0; i < relays.size(); ++i) {
    results[i].ok = outcomes[i].ok;
    results[i].error = outcomes[i].ok ? "" : outcomes[i].error;
    if (!results[i].ok && results[i].error.empty()) results[i].error = "no answer";
  }
}

}  // namespace

std::vector<PublishResult> publish_event(const std::vector<std::string>& relays, const NostrEvent& e,
                                         const RelayOptions& o) {
  std::vector<PublishResult> results(relays.size());
  std::vector<std::unique_ptr<Exchange>> exchanges;
  for (auto& r : results) exchanges.push_back(std::make_unique<PublishExchange>(e, r));
  run_all(relays, results, exchanges, o);
  return results;
}

std::vector<QueryResult> query_relays(const std::vector<std::string>& relays, const json& filter, const RelayOptions& o) {
  std::vector<QueryResult> results(relays.size());
  std::vector<std::unique_ptr<Exchange>> exchanges;
  for (auto& r : results) exchanges.push_back(std::make_unique<QueryExchange>(filter, o, r));
  run_all(relays, results, exchanges, o);
  return results;
}

}  // namespace llmesh::mesh::discovery
