#include "nostr_relay/nostr_relay.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

using namespace llmesh::mesh::discovery;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {

// What a test server does with a connection.
enum class Behaviour {
  relay,      // a nostr relay: EVENT -> store + OK; REQ -> served, stored, EOSE
  oversized,  // REQ -> one EVENT far larger than the client's limit
  closed,     // REQ -> CLOSED
  garbage,    // any message -> text that is not JSON
  notice,     // any message -> NOTICE, then nothing
  silent,     // accepts TCP, never reads or answers
  not_ws,     // answers the WebSocket upgrade with plain text and closes
};

// A server on 127.0.0.1 on its own thread (one io_context, coroutines), for one test.
class TestServer {
 public:
  explicit TestServer(Behaviour b, ssl::context* tls = nullptr) : behaviour_(b), tls_(tls) {
    acceptor_.open(tcp::v4());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestServer() {
    io_.stop();
    thread_.join();
  }
  std::string url() const { return std::string(tls_ ? "wss" : "ws") + "://127.0.0.1:" + std::to_string(port_); }
  uint16_t port() const { return port_; }

  // Event JSON texts served first to every REQ, as they are (tampered ones included).
  void serve_raw(std::string event_json) {
    std::lock_guard lock(mu_);
    raw_.push_back(std::move(event_json));
  }
  std::vector<json> stored() {
    std::lock_guard lock(mu_);
    return stored_;
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      tcp::socket s = co_await acceptor_.async_accept(asio::use_awaitable);
      if (behaviour_ == Behaviour::silent) {
        held_.push_back(std::move(s));
      } else if (behaviour_ == Behaviour::not_ws) {
        asio::co_spawn(io_, not_websocket(std::move(s)), asio::detached);
      } else if (tls_) {
        websocket::stream<ssl::stream<beast::tcp_stream>> ws(std::move(s), *tls_);
        asio::co_spawn(io_, tls_session(std::move(ws)), asio::detached);
      } else {
        asio::co_spawn(io_, session(websocket::stream<beast::tcp_stream>(std::move(s))), asio::detached);
      }
    }
  }

  asio::awaitable<void> not_websocket(tcp::socket s) {
    co_await asio::async_read_until(s, asio::dynamic_buffer(scratch_), "\r\n\r\n", asio::use_awaitable);
    co_await asio::async_write(s, asio::buffer(std::string("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")),
                               asio::use_awaitable);
  }

  asio::awaitable<void> tls_session(websocket::stream<ssl::stream<beast::tcp_stream>> ws) {
    co_await ws.next_layer().async_handshake(ssl::stream_base::server, asio::use_awaitable);
    co_await session(std::move(ws));
  }

  template <class WS>
  static asio::awaitable<void> send(WS& ws, json m) {
    std::string text = m.dump();
    co_await ws.async_write(asio::buffer(text), asio::use_awaitable);
  }

  template <class WS>
  asio::awaitable<void> session(WS ws) {
    co_await ws.async_accept(asio::use_awaitable);
    ws.text(true);
    // Messages a client must ignore.
    {
      json reply = json::array({"AUTH", "challenge-123"});
      co_await send(ws, std::move(reply));
    }
    {
      json reply = json::array({"SOMETHING_NEW", 1, 2});
      co_await send(ws, std::move(reply));
    }
    for (;;) {
      beast::flat_buffer buffer;
      co_await ws.async_read(buffer, asio::use_awaitable);
      json m = json::parse(beast::buffers_to_string(buffer.data()));
      std::string type = m[0];
      if (behaviour_ == Behaviour::garbage) {
        std::string text = "<html>not json</html>";
        co_await ws.async_write(asio::buffer(text), asio::use_awaitable);
        continue;
      }
      if (behaviour_ == Behaviour::notice) {
        {
          json reply = json::array({"NOTICE", "rate-limited: slow down"});
          co_await send(ws, std::move(reply));
        }
        continue;
      }
      if (type == "EVENT") {
        {
          std::lock_guard lock(mu_);
          stored_.push_back(m[1]);
        }
        {
          json reply = json::array({"OK", "0000", true, ""});
          co_await send(ws, std::move(reply));
        }  // about another event: ignored
        {
          json reply = json::array({"OK", m[1]["id"], true, ""});
          co_await send(ws, std::move(reply));
        }
      } else if (type == "REQ") {
        std::string sub = m[1];
        if (behaviour_ == Behaviour::closed) {
          {
            json reply = json::array({"CLOSED", sub, "restricted: members only"});
            co_await send(ws, std::move(reply));
          }
          continue;
        }
        if (behaviour_ == Behaviour::oversized) {
          json big = {{"content", std::string(600 * 1024, 'x')}};
          {
            json reply = json::array({"EVENT", sub, big});
            co_await send(ws, std::move(reply));
          }
          continue;
        }
        std::vector<std::string> texts;
        {
          std::lock_guard lock(mu_);
          texts = raw_;
          for (const auto& e : stored_) texts.push_back(e.dump());
        }
        {
          json reply = json::array({"EVENT", "other-subscription", json::parse(texts.empty() ? "{}" : texts[0])});
          co_await send(ws, std::move(reply));
        }
        for (const auto& t : texts) {
          std::string msg = R"(["EVENT",")" + sub + "\"," + t + "]";
          co_await ws.async_write(asio::buffer(msg), asio::use_awaitable);
        }
        {
          json reply = json::array({"EOSE", sub});
          co_await send(ws, std::move(reply));
        }
      }
    }
  }

  Behaviour behaviour_;
  ssl::context* tls_;
  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::thread thread_;
  std::vector<tcp::socket> held_;
  std::string scratch_;
  std::mutex mu_;
  std::vector<std::string> raw_;
  std::vector<json> stored_;
};

// tests/node/discovery/relay.mjs (@nostr-relay/core, an independent implementation) as a child
// process, stopped with the test. url() is empty when node or the npm packages are missing.
class NodeRelay {
 public:
  NodeRelay() {
    fs::path root = LLMESH_SOURCE_DIR;
    if (!fs::exists(root / "tests/node/node_modules/@nostr-relay/core") || !fs::exists(root / "tests/node/node_modules/ws"))
      return;
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      std::string script = (root / "tests/node/discovery/relay.mjs").string();
      ::execlp("node", "node", script.c_str(), "--port", "0", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    // The first line is {"url": ...}; EOF (no node) leaves url_ empty.
    std::string line;
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n') line.push_back(c);
    ::close(out[0]);
    auto j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("url")) url_ = j["url"];
  }
  ~NodeRelay() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  const std::string& url() const { return url_; }

 private:
  pid_t pid_ = -1;
  std::string url_;
};

// A port nothing listens on (bound, then closed: connection refused).
uint16_t dead_port() {
  asio::io_context io;
  tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

NostrEvent listing(const NostrKey& key, std::string content) {
  NostrEvent e;
  e.created_at = 1'750'000'000;
  e.kind = 30078;
  e.tags = {{"d", "mesh"}, {"t", "llmesh"}};
  e.content = std::move(content);
  key.sign(e);
  return e;
}

RelayOptions quick(milliseconds timeout = milliseconds(3000)) {
  RelayOptions o;
  o.timeout = timeout;
  return o;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM).
struct SelfSigned {
  std::string cert, key;
};
SelfSigned self_signed() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, k);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  X509_add_ext(x, san, -1);
  X509_EXTENSION_free(san);
  X509_sign(x, k, EVP_sha256());
  auto pem = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string s(data, size_t(n));
    BIO_free(bio);
    return s;
  };
  SelfSigned out{pem([&](BIO* b) { PEM_write_bio_X509(b, x); }),
                 pem([&](BIO* b) { PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr); })};
  X509_free(x);
  EVP_PKEY_free(k);
  return out;
}

}  // namespace

TEST(RelayUrl, Parses) {
  auto u = parse_relay_url("wss://relay.example.com");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "relay.example.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/");
  EXPECT_EQ(u->text, "wss://relay.example.com");
  u = parse_relay_url("WS://Relay.Example.com:7447/nostr?x=1#frag");
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "relay.example.com");
  EXPECT_EQ(u->port, 7447);
  EXPECT_EQ(u->target, "/nostr?x=1");
  u = parse_relay_url("ws://[::1]:8080");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 8080);
  u = parse_relay_url("wss://[2001:db8::7]/");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "2001:db8::7");
  EXPECT_EQ(u->port, 443);
  u = parse_relay_url("ws://10.0.0.1?q");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->target, "/?q");

  auto refused = [](const char* url, const char* why) {
    std::string error;
    EXPECT_FALSE(parse_relay_url(url, &error)) << url;
    EXPECT_TRUE(contains(error, why)) << url << ": " << error;
  };
  refused("https://relay.example.com", "is not ws or wss");
  refused("relay.example.com", "not ws:// or wss://");
  refused("wss://", "no host");
  refused("wss://:443", "no host");
  refused("wss://host:0", "out of range");
  refused("wss://host:65536", "out of range");
  refused("wss://host:12a", "bad port");
  refused("wss://host:", "empty port");
  refused("wss://user@host", "user info");
  refused("wss://::1/", "in brackets");
  refused("wss://[::1", "unterminated");
  refused("wss://[nope]:1", "not an IPv6 address");
  refused("wss://[::1]x", "after the IPv6");
  refused("wss://ho st", "space or control");
}

TEST(NostrRelay, PublishThenQueryRoundTrip) {
  TestServer relay(Behaviour::relay);
  NostrKey key = NostrKey::generate();
  NostrEvent e = listing(key, "mesh listing \"1\"\n\xf0\x9f\x9a\x80");
  auto published = publish_event({relay.url()}, e, quick());
  ASSERT_EQ(published.size(), 1u);
  EXPECT_TRUE(published[0].ok) << published[0].error;
  EXPECT_EQ(published[0].relay, relay.url());
  ASSERT_EQ(relay.stored().size(), 1u);
  EXPECT_EQ(relay.stored()[0], e.to_json());

  auto found = query_relays({relay.url()}, {{"kinds", {30078}}, {"#t", {"llmesh"}}}, quick());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_TRUE(found[0].ok) << found[0].error;
  ASSERT_EQ(found[0].events.size(), 1u);
  EXPECT_EQ(found[0].events[0].id, e.id);
  EXPECT_EQ(found[0].events[0].content, e.content);
  EXPECT_EQ(found[0].rejected, 0u);
}

TEST(NostrRelay, TamperedEventsAreRejectedAndCounted) {
  TestServer relay(Behaviour::relay);
  NostrKey key = NostrKey::generate();
  NostrEvent good = listing(key, "honest");
  NostrEvent flipped = good;  // content changed, id and sig kept
  flipped.content = "dishonest";
  NostrEvent resealed = flipped;  // id recomputed, old signature
  resealed.id = compute_id(resealed);
  json wrong_types = good.to_json();
  wrong_types["kind"] = "30078";
  relay.serve_raw(good.to_json().dump());
  relay.serve_raw(good.to_json().dump());  // a duplicate: kept once, not a rejection
  relay.serve_raw(flipped.to_json().dump());
  relay.serve_raw(resealed.to_json().dump());
  relay.serve_raw(wrong_types.dump());

  auto found = query_relays({relay.url()}, {{"kinds", {30078}}}, quick());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_TRUE(found[0].ok) << found[0].error;
  ASSERT_EQ(found[0].events.size(), 1u);
  EXPECT_EQ(found[0].events[0].id, good.id);
  EXPECT_EQ(found[0].rejected, 3u);
  ASSERT_EQ(found[0].rejections.size(), 3u);
  EXPECT_EQ(found[0].rejections[0], "bad_id: " + flipped.id.substr(0, 8));
  EXPECT_EQ(found[0].rejections[1], "bad_signature: " + resealed.id.substr(0, 8));
  EXPECT_EQ(found[0].rejections[2], "malformed: kind: not an integer");
}

TEST(NostrRelay, MaxEventsEndsTheQuery) {
  TestServer relay(Behaviour::relay);
  NostrKey key = NostrKey::generate();
  for (int i = 0; i < 5; ++i) relay.serve_raw(listing(key, "event " + std::to_string(i)).to_json().dump());
  RelayOptions o = quick();
  o.max_events = 3;
  auto found = query_relays({relay.url()}, json::object(), o);
  EXPECT_TRUE(found[0].ok) << found[0].error;
  EXPECT_EQ(found[0].events.size(), 3u);
}

TEST(NostrRelay, DeadAndSilentRelaysFailWithinTheTimeoutWhileALiveOneAnswers) {
  TestServer live(Behaviour::relay), silent(Behaviour::silent);
  NostrEvent e = listing(NostrKey::generate(), "x");
  const milliseconds timeout(1500);
  std::vector<std::string> relays = {"ws://127.0.0.1:" + std::to_string(dead_port()), silent.url(), live.url(),
                                     "not-a-url", "ws://no-such-host.invalid"};
  auto start = std::chrono::steady_clock::now();
  auto published = publish_event(relays, e, quick(timeout));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(published.size(), relays.size());
  EXPECT_FALSE(published[0].ok);
  EXPECT_TRUE(contains(published[0].error, "cannot connect")) << published[0].error;
  EXPECT_FALSE(published[1].ok);
  EXPECT_TRUE(contains(published[1].error, "timed out after 1500 ms in the WebSocket handshake")) << published[1].error;
  EXPECT_GE(published[1].took, timeout - milliseconds(50));
  EXPECT_TRUE(published[2].ok) << published[2].error;
  EXPECT_LT(published[2].took, timeout);
  EXPECT_FALSE(published[3].ok);
  EXPECT_TRUE(contains(published[3].error, "not ws:// or wss://")) << published[3].error;
  EXPECT_FALSE(published[4].ok);
  EXPECT_FALSE(published[4].error.empty());
  // Generous: the whole call is bounded by the per-relay timeout (plus a short goodbye).
  EXPECT_LT(took, timeout + milliseconds(2500));

  auto found = query_relays(relays, json::object(), quick(timeout));
  EXPECT_TRUE(found[2].ok) << found[2].error;
  EXPECT_EQ(found[2].events.size(), 1u);
  EXPECT_FALSE(found[0].ok);
  EXPECT_FALSE(found[1].ok);
}

TEST(NostrRelay, MisbehavingRelaysFailWithReasons) {
  NostrEvent e = listing(NostrKey::generate(), "x");
  auto query_error = [&](Behaviour b, milliseconds timeout = milliseconds(3000)) {
    TestServer server(b);
    auto r = query_relays({server.url()}, json::object(), quick(timeout));
    EXPECT_FALSE(r[0].ok);
    return r[0].error;
  };
  std::string oversized = query_error(Behaviour::oversized);
  EXPECT_TRUE(contains(oversized, "larger than 524288 bytes")) << oversized;
  EXPECT_EQ(query_error(Behaviour::closed), "relay closed the subscription: restricted: members only");
  EXPECT_TRUE(contains(query_error(Behaviour::garbage), "not a nostr message: <html>not json</html>"));
  EXPECT_TRUE(contains(query_error(Behaviour::not_ws), "WebSocket handshake failed"));
  std::string notice = query_error(Behaviour::notice, milliseconds(1000));
  EXPECT_TRUE(contains(notice, "timed out after 1000 ms waiting for EOSE")) << notice;
  EXPECT_TRUE(contains(notice, "(relay notice: rate-limited: slow down)")) << notice;

  TestServer closed(Behaviour::closed);  // a publish is not affected by CLOSED handling
  TestServer noticing(Behaviour::notice);
  auto published = publish_event({noticing.url()}, e, quick(milliseconds(1000)));
  EXPECT_FALSE(published[0].ok);
  EXPECT_TRUE(contains(published[0].error, "waiting for OK")) << published[0].error;
}

TEST(NostrRelay, WssTrustsTheGivenCaFileAndRefusesOtherwise) {
  SelfSigned cert = self_signed();
  ssl::context server_tls(ssl::context::tls_server);
  server_tls.use_certificate_chain(asio::buffer(cert.cert));
  server_tls.use_private_key(asio::buffer(cert.key), ssl::context::pem);
  TestServer relay(Behaviour::relay, &server_tls);

  std::string tmpl = (fs::temp_directory_path() / "llmesh-relay-XXXXXX").string();
  fs::path dir = ::mkdtemp(tmpl.data());
  fs::path ca = dir / "ca.pem";
  std::ofstream(ca) << cert.cert;

  NostrEvent e = listing(NostrKey::generate(), "over TLS");
  auto refused = publish_event({relay.url()}, e, quick());
  EXPECT_FALSE(refused[0].ok);
  EXPECT_TRUE(contains(refused[0].error, "TLS handshake failed")) << refused[0].error;
  EXPECT_TRUE(contains(refused[0].error, "certificate verify failed")) << refused[0].error;
  EXPECT_TRUE(contains(refused[0].error, "self-signed certificate") || contains(refused[0].error, "self signed"))
      << refused[0].error;

  RelayOptions o = quick();
  o.ca_file = ca.string();
  auto published = publish_event({relay.url()}, e, o);
  EXPECT_TRUE(published[0].ok) << published[0].error;
  auto found = query_relays({"wss://localhost:" + std::to_string(relay.port())}, json::object(), o);
  EXPECT_TRUE(found[0].ok) << found[0].error;
  ASSERT_EQ(found[0].events.size(), 1u);
  EXPECT_EQ(found[0].events[0].id, e.id);

  o.ca_file = (dir / "missing.pem").string();
  auto no_ca = publish_event({relay.url()}, e, o);
  EXPECT_FALSE(no_ca[0].ok);
  EXPECT_TRUE(contains(no_ca[0].error, "cannot load CA file")) << no_ca[0].error;
  fs::remove_all(dir);
}

TEST(NostrRelay, InteroperatesWithNostrRelayCore) {
  NodeRelay relay;
  if (relay.url().empty()) GTEST_SKIP() << "node or tests/node/node_modules is missing (npm ci in tests/node)";
  NostrKey key = NostrKey::generate();
  NostrEvent v1 = listing(key, "first \"listing\"\n\xf0\x9f\x9a\x80 \x01");
  NostrEvent v2 = v1;  // the same address (kind, pubkey, d), newer: replaces v1
  v2.created_at += 60;
  v2.content = "second listing";
  key.sign(v2);
  NostrEvent forged = v1;
  forged.content = "forged";
  forged.id = compute_id(forged);

  auto ok1 = publish_event({relay.url()}, v1, quick(milliseconds(10000)));
  EXPECT_TRUE(ok1[0].ok) << ok1[0].error;
  auto ok2 = publish_event({relay.url()}, v2, quick(milliseconds(10000)));
  EXPECT_TRUE(ok2[0].ok) << ok2[0].error;
  auto refused = publish_event({relay.url()}, forged, quick(milliseconds(10000)));
  EXPECT_FALSE(refused[0].ok);
  EXPECT_TRUE(contains(refused[0].error, "refused: ")) << refused[0].error;

  json filter = {{"kinds", {30078}}, {"authors", {key.public_hex()}}, {"#d", {"mesh"}}};
  auto found = query_relays({relay.url()}, filter, quick(milliseconds(10000)));
  ASSERT_TRUE(found[0].ok) << found[0].error;
  ASSERT_EQ(found[0].events.size(), 1u);
  EXPECT_EQ(found[0].events[0].id, v2.id);
  EXPECT_EQ(found[0].rejected, 0u);
}
