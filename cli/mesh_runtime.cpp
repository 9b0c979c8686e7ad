#include "cli/mesh_runtime.h"

#include <httplib.h>
#include <signal.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "hardware/hardware_probe.h"
#include "identity/private_file.h"
#include "invite/invite_token.h"
#include "invite/mesh_secret.h"
#include "log/event_log.h"
#include "node/mesh_view.h"
#include "routing/request_format.h"
#include "server/api_error.h"

namespace llmesh::cli {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kNodeFile = "node.json";
constexpr auto kRefreshInterval = std::chrono::milliseconds(1000);
constexpr auto kSlowRefresh = std::chrono::seconds(5);

std::string random_hex(size_t bytes) {
  std::vector<uint8_t> b(bytes);
  randombytes_buf(b.data(), b.size());
  return invite::to_hex(b);
}

bool is_wildcard(const std::string& h) { return h.empty() || h == "0.0.0.0" || h == "::"; }
// A host as it appears in a URL: IPv6 in brackets.
std::string url_host(const std::string& h) { return h.find(':') != std::string::npos ? "[" + h + "]" : h; }

// The host other nodes' tools can use to reach this API from this machine.
std::string local_api_host(const std::string& listen) {
  if (is_wildcard(listen)) return "127.0.0.1";
  return listen;
}

}  // namespace

void add_mesh_options(CLI::App* sub, MeshCliOptions& o, bool client) {
  auto* join = sub->add_option("--join", o.join,
                               client ? "Invite token of the mesh to use (from `llmesh invite` on a member); also LLMESH_JOIN"
                                      : "Join the mesh of this invite token (from `llmesh invite` on a member); "
                                        "also LLMESH_JOIN. Without it: the mesh saved in $LLMESH_HOME, or a new one");
  join->group("Mesh");
  if (!client)
    sub->add_flag("--no-mesh", o.no_mesh, "Serve alone: no mesh transport, no gossip, no routing")->group("Mesh");
  if (client) o.mesh_port = 0;
  sub->add_option_function<int>(
         "--mesh-port",
         [&o](const int& p) {
           o.mesh_port = p;
           o.mesh_port_given = true;
         },
         client ? "TCP port of the mesh transport (default 0: any free port)"
                : "TCP port of the mesh transport (default 7411, or any free port when 7411 is taken; 0: any)")
      ->check(CLI::Range(0, 65535))
      ->group("Mesh");
  sub->add_option("--mesh-listen", o.mesh_listen, "Address the mesh transport listens on")
      ->capture_default_str()
      ->group("Mesh");
  sub->add_option("--advertise", o.advertise,
                  "HOST or HOST:PORT other nodes dial to reach this one (default: the listen address, or this "
                  "machine's first non-loopback IPv4)")
      ->group("Mesh");
  sub->add_option("--join-timeout", o.join_timeout_s, "Seconds to wait for the mesh when joining")
      ->check(CLI::Range(1, 600))
      ->capture_default_str()
      ->group("Mesh");
  add_discovery_options(sub, o.discovery, client);
  add_lan_options(sub, o.lan);
  sub->add_option_function<int>(
         "--console-port",
         [&o](const int& p) {
           o.console_port = p;
           o.console_port_given = true;
         },
         "TCP port of the web console (docs/console.md; default 3131, skipped with a warning when taken; 0: any "
         "free port)")
      ->check(CLI::Range(0, 65535))
      ->group("Console");
  sub->add_option("--console-listen", o.console_listen,
                  "Address the web console listens on (default: the API's --listen address)")
      ->group("Console");
  sub->add_flag("--no-console", o.no_console, "No web console")->group("Console");
}

MeshRuntime::MeshRuntime(const MeshCliOptions& opt, LocalNode local, bool quiet)
    : opt_(opt), local_(std::move(local)), quiet_(quiet), home_(mesh::default_home()) {
  const DiscoveryCliOptions& disc = opt_.discovery;
  if (disc.auto_join && !opt_.join.empty())
    throw std::invalid_argument("--auto and --join both choose the mesh to join: give one of them");
  if (disc.wants.size() > gossip::kMaxWanted)
    throw std::invalid_argument("--want: at most 16 models (the gossip record carries no more)");
  if (opt_.join.empty() && !disc.auto_join)
    if (const char* j = std::getenv("LLMESH_JOIN")) opt_.join = j;
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  if (disc.publish || disc.auto_join) relays_ = resolve_relays(disc.relays);
  // A private mesh's listing would invite anyone in: --publish only ever publishes a public one.
  auto refuse_private = [&](const invite::MeshSecret& s, const std::string& whose) {
    if (disc.publish && !s.is_public())
      throw std::runtime_error(
          "--publish: " + whose + " mesh " + s.mesh_id_hex().substr(0, 8) +
          " is private, and a private mesh is never published. For a public mesh: --publish without --join "
          "in a home with no private mesh (LLMESH_HOME=DIR), or join one with --auto");
  };

  const fs::path secret_path = home_ / "mesh.json";
  invite::MeshSecret secret;
  int64_t token_expires = 0;
  if (!opt_.join.empty()) {
    auto d = invite::decode_invite(opt_.join);
    if (!d.ok())
      throw std::runtime_error("--join: " + d.error + " (" + invite::invite_error_name(d.code) + ", token " +
                               invite::redact_token(opt_.join) + ")");
    secret = d.invite->mesh;
    refuse_private(secret, "the token's");
    token_expires = d.invite->expires;
    seeds_ = d.invite->nodes;
    auto saved = invite::try_load_mesh_secret(secret_path);
    if (!saved || !(*saved == secret)) {
      if (saved && saved->mesh_id != secret.mesh_id && !quiet_)
        logs::info("mesh", fmt::format("leaving mesh {} for mesh {} (the token's); {} is replaced",
                                       saved->mesh_id_hex().substr(0, 8), secret.mesh_id_hex().substr(0, 8),
                                       secret_path.string()),
                   {{"mesh_id", secret.mesh_id_hex()}, {"left_mesh_id", saved->mesh_id_hex()}});
      invite::save_mesh_secret(secret, secret_path);
    }
  } else if (disc.auto_join) {
    secret = resolve_auto();  // saved once a join succeeds
  } else if (auto saved = invite::try_load_mesh_secret(secret_path)) {
    secret = *saved;
    refuse_private(secret, "this home's (" + secret_path.string() + ")");
  } else {
    secret = disc.publish ? invite::MeshSecret::create_public() : invite::MeshSecret::create();
    invite::save_mesh_secret(secret, secret_path);
    if (!quiet_)
      logs::info("mesh",
                 fmt::format("created a new {} mesh {} ({} in {}); `llmesh invite` prints a token",
                             secret.is_public() ? "public" : "private", secret.mesh_id_hex().substr(0, 8),
                             secret.is_public() ? "its id" : "secret", secret_path.string()),
                 {{"mesh_id", secret.mesh_id_hex()}, {"public", secret.is_public()}});
  }

  mesh::MeshNodeOptions mo;
  mo.listen_host = opt_.mesh_listen;
  mo.listen_port = static_cast<uint16_t>(opt_.mesh_port);
  mo.advertise = opt_.advertise;
  mo.secret_path = secret_path;
  mo.peers_path = home_ / "peers.json";
  mo.token_expires = token_expires;
  mo.transport.software_version = std::string("llmesh/") + LLMESH_VERSION;
  auto mesh_sink = logs::line_sink("mesh");
  if (quiet_) mo.log = [mesh_sink](const std::string& line) {
    // Quiet: only what a user must see (refusals, failures, rotations, deaths).
    if (line.find("refused") != std::string::npos || line.find("rotated") != std::string::npos ||
        line.find(" dead") != std::string::npos || line.find("(reason ") != std::string::npos)
      mesh_sink(line);
  };
  else mo.log = mesh_sink;

  gossip::NodeState s = load_state();
  auto identity = mesh::NodeIdentity::load_or_create(home_);
  node_ = std::make_unique<mesh::MeshNode>(identity, secret, mo, s);
  try {
    node_->start();
  } catch (const std::runtime_error& e) {
    if (opt_.mesh_port_given || mo.listen_port == 0) throw;
    // Another node on this machine holds the default port: any free one works as well, since
    // the port travels in gossip and invites.
    node_.reset();
    mo.listen_port = 0;
    node_ = std::make_unique<mesh::MeshNode>(identity, secret, mo, s);
    node_->start();
    if (!quiet_)
      logs::warn("mesh", "mesh_port_in_use",
                 fmt::format("mesh port {} is taken ({}); using {}", opt_.mesh_port, e.what(), node_->mesh_address()),
                 {{"port", opt_.mesh_port}});
  }
  if (seeds_.empty()) seeds_ = node_->saved_peers();

  router_ = std::make_unique<mesh::MeshRouter>(node_->transport(), [this] {
    std::vector<mesh::RouteTarget> out;
    for (auto& v : node_->members()) {
      if (v.self || !v.id || !v.member.has_state) continue;
      if (v.member.status != gossip::MemberStatus::alive) continue;
      if (v.member.state.role != gossip::Role::server) continue;
      out.push_back({*v.id, v.member.state, v.rtt});
    }
    return out;
  });
  router_->set_self([this] { return load_state(); });
  if (opt_.lan.lan()) lan_ = std::make_unique<LanJoin>(*node_, opt_.lan, quiet_);
}

MeshRuntime::~MeshRuntime() {
  stopping_ = true;
  if (console_) console_->stop();  // its state comes from the node
  lan_.reset();  // waits for a join it started
  stop_publisher();
  if (refresher_.joinable()) refresher_.join();
  if (forward_) forward_->stop();
  if (node_) node_->stop();
  // node.json names a running node: remove ours (another run may have replaced it).
  std::error_code ec;
  fs::path f = home_ / kNodeFile;
  std::ifstream in(f);
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (j.is_object() && j.value("pid", -1) == static_cast<int>(::getpid())) fs::remove(f, ec);
  }
}

gossip::NodeState MeshRuntime::load_state() const {
  gossip::NodeState s = node_ ? node_->state() : gossip::NodeState{};
  s.role = local_.role;
  s.software_version = std::string("llmesh/") + LLMESH_VERSION;
  s.wanted = opt_.discovery.wants;
  if (local_.model) {
    const auto* m = local_.model;
    gossip::ModelInfo info;
    info.name = m->id;
    info.aliases = m->aliases;
    info.context_length = static_cast<uint32_t>(m->n_ctx());
    info.created = m->created;
    int layers = m->info.is_object() && m->info.contains("n_layer") ? m->info["n_layer"].get<int>() : 0;
    info.total_layers = static_cast<uint32_t>(layers);
    info.loaded = {0, info.total_layers};
    info.on_disk = {info.loaded};
    s.models = {info};
    SchedulerStats st = m->scheduler->stats();
    s.load.active_requests = static_cast<uint32_t>(st.active);
    s.load.queued = static_cast<uint32_t>(st.queued);
    s.load.parallel_slots = static_cast<uint32_t>(st.n_parallel);
  }
  if (local_.describe) local_.describe(s);
  return s;
}

json MeshRuntime::status() const {
  json st = node_->status_json();
  if (local_.split_status) st["split"] = local_.split_status();
  if (lan_) st["lan"] = lan_->status_json();
  st["discovery"] = discovery_status();
  mesh::add_mesh_view(st);
  std::lock_guard lk(console_mu_);
  if (api_port_ > 0)
    st["node"]["api_url"] = fmt::format("http://{}:{}/v1", url_host(local_api_host(local_.api_host)), api_port_);
  if (!console_url_.empty()) st["node"]["console_url"] = console_url_;
  return st;
}

// The console of this node (docs/console.md), on --console-port. The default port may be taken
// (another node on this machine): the node runs without a console then, and says so.
void MeshRuntime::start_console(int api_port, json& out) {
  if (opt_.no_console) return;
  api::ConsoleOptions co;
  co.host = opt_.console_listen.empty() ? local_.api_host : opt_.console_listen;
  co.port = opt_.console_port;
  co.api_host = local_api_host(local_.api_host);
  co.api_port = api_port;
  co.api_key = local_.api_key;
  auto console = std::make_unique<api::ConsoleServer>(
      co, [this] { return status(); },
      [this] { return api_ ? api_->metrics_text() : mesh::mesh_metrics_text(status()); });
  try {
    console->bind();
  } catch (const std::runtime_error& e) {
    // Asked for by the user: a console that cannot start stops the start.
    if (opt_.console_port_given || !opt_.console_listen.empty())
      throw std::runtime_error(std::string("--console-port/--console-listen: ") + e.what());
    logs::warn("console", "console_port_in_use",
               fmt::format("no web console: {}; choose another port with --console-port, or --no-console", e.what()),
               {{"port", co.port}});
    out["console_error"] = e.what();
    return;
  }
  console->start();
  console_ = std::move(console);
  {
    std::lock_guard lk(console_mu_);
    console_url_ = console_->url();
  }
  out["console"] = console_->url();
  if (!quiet_) logs::info("console", fmt::format("web console at {}", console_->url()), {{"url", console_->url()}});
}

void MeshRuntime::add_endpoints(api::ApiServer& server) {
  api_ = &server;
  // /metrics: the mesh as this node sees it, after the node's own serving metrics.
  server.set_extra_metrics([this] { return mesh::mesh_metrics_text(status()); });
  control_key_ = random_hex(32);
  auto control_ok = [this](const httplib::Request& req) {
    const std::string k = req.get_header_value("X-Llmesh-Control");
    return !k.empty() && invite::constant_time_equal(
                             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(k.data()), k.size()),
                             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(control_key_.data()),
                                                      control_key_.size()));
  };
  server.add_endpoint("GET", "/mesh/status", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(api::dump_json(status()), "application/json");
  });
  // Invites carry the mesh secret: only a caller that can read this node's node.json (its own
  // user on this machine) gets one.
  server.add_endpoint(
      "POST", "/mesh/invite",
      [this, control_ok](const httplib::Request& req, httplib::Response& res) {
        if (!control_ok(req))
          throw api::ApiError(403, "permission_error",
                              "Invites need this node's control key (X-Llmesh-Control, from $LLMESH_HOME/node.json): "
                              "run `llmesh invite` on the node's machine as its user");
        json body = req.body.empty() ? json::object() : json::parse(req.body, nullptr, false);
        if (!body.is_object()) throw api::ApiError(400, "invalid_request_error", "The body must be a JSON object");
        auto number = [&](const char* key, int64_t dflt, int64_t lo, int64_t hi) {
          if (!body.contains(key)) return dflt;
          const json& v = body[key];
          if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
            throw api::ApiError(400, "invalid_request_error",
                                fmt::format("'{}' must be an integer in {}..{}", key, lo, hi), key);
          return v.get<int64_t>();
        };
        int64_t expires_in = number("expires_in", 0, 0, int64_t{10} * 366 * 24 * 3600);
        size_t max_nodes = static_cast<size_t>(number("max_nodes", 8, 1, invite::kMaxInviteNodes));
        if (body.contains("rotate") && !body["rotate"].is_boolean())
          throw api::ApiError(400, "invalid_request_error", "'rotate' must be true or false", "rotate");
        bool rotated = false;
        if (body.value("rotate", false)) {
          if (node_->secret().is_public())
            throw api::ApiError(400, "invalid_request_error",
                                "This mesh is public: its secret is derived from its id, so there is nothing to "
                                "rotate (reason public_mesh_no_rotation)",
                                "rotate");
          node_->rotate_secret();
          rotated = true;
        }
        int64_t expires = invite::expiry_after(expires_in);
        std::string token = node_->invite(expires, max_nodes);
        auto d = invite::decode_invite(token);
        json nodes = json::array();
        for (auto& n : d.invite->nodes) nodes.push_back({{"address", n.address}, {"node_id", invite::to_hex(n.node_id)}});
        auto secret = node_->secret();
        res.set_content(json{{"token", token},
                             {"expires", expires},
                             {"expires_utc", expires ? invite::format_utc(expires) : "never"},
                             {"mesh_id", secret.mesh_id_hex()},
                             {"epoch", secret.epoch},
                             {"fingerprint", secret.fingerprint()},
                             {"rotated", rotated},
                             {"nodes", nodes}}
                            .dump(),
                        "application/json");
      },
      /*needs_api_key=*/false);
}

json MeshRuntime::on_listening(int api_port) {
  const std::string api_host = local_api_host(local_.api_host);
  mesh::ForwardServerOptions fo;
  fo.host = api_host;
  fo.port = api_port;
  fo.api_key = local_.api_key;
  fo.log = logs::line_sink("forward", quiet_);
  // Per-peer limits on forwarded requests: always on a public mesh (anyone may join it).
  peer_limits_ = peer_limit_options(opt_.discovery, opt_.discovery.auto_join || node_->secret().is_public());
  if (peer_limits_) {
    limiter_ = std::make_shared<mesh::PeerLimits>(*peer_limits_);
    fo.peer_limits = limiter_;
  }
  if (local_.model || local_.take_stream) {
    if (local_.model) forward_ = std::make_unique<mesh::ForwardServer>(fo);
    node_->set_stream_handler([this](std::shared_ptr<mesh::Stream> s) {
      if (local_.take_stream && local_.take_stream(s)) return;
      if (forward_ && mesh::routing::stream_type(s->header()) == "http")
        forward_->accept(std::move(s));
      else
        s->reset(mesh::ResetCode::NO_HANDLER);
    });
  }
  const std::string adv_host = mesh::split_host_port(node_->mesh_address())->first;
  node_->update_state([&](gossip::NodeState& s) {
    s.api_address = (is_wildcard(local_.api_host) ? adv_host : local_.api_host) + ":" + std::to_string(api_port);
  });

  {
    std::lock_guard lk(console_mu_);
    api_port_ = api_port;
  }
  json out = {{"node_id", node_->id().hex()}, {"mesh_address", node_->mesh_address()}};
  start_console(api_port, out);
  json node_file = {{"version", 1},
                    {"pid", static_cast<int>(::getpid())},
                    {"api", api_host + ":" + std::to_string(api_port)},
                    {"node_id", node_->id().hex()},
                    {"mesh_address", node_->mesh_address()},
                    {"control_key", control_key_}};
  if (console_) node_file["console"] = console_->url();
  mesh::write_private_file(home_ / kNodeFile, node_file.dump(2) + "\n");

  // Before the join: a node whose saved peers are stale is found on the LAN meanwhile.
  if (lan_) lan_->start(/*waiting=*/seeds_.empty() && auto_candidates_.empty());
  if (!auto_candidates_.empty()) {
    join_auto(out);
  } else if (!seeds_.empty()) {
    auto r = node_->join(seeds_, std::chrono::seconds(opt_.join_timeout_s));
    out["joined"] = r.ok;
    out["join_ms"] = r.took.count();
    out["members"] = r.members;
    if (r.ok) {
      if (!quiet_)
        logs::info("mesh", fmt::format("joined the mesh in {} ms: {} members known", r.took.count(), r.members),
                   {{"join_ms", r.took.count()}, {"members", r.members}});
    } else {
      // Every seed that answered refused us (wrong secret, rotated out, another mesh): the
      // token, or the secret saved by an earlier run, cannot work. Say so and stop.
      bool refused = r.error.find("refused") != std::string::npos;
      out["join_error"] = r.error;
      if (refused && r.reached == 0)
        throw std::runtime_error(
            "not admitted to the mesh: " + r.error +
            (opt_.join.empty() ? " (this node rejoined with the secret saved in " + (home_ / "mesh.json").string() +
                                     "; ask a member for a new token: --join TOKEN)"
                               : ""));
      logs::warn("mesh", "seeds_unreachable",
                 fmt::format("{} not answered yet ({}); still trying in the background",
                             opt_.join.empty() ? "the saved peers have" : "the token's nodes have", r.error),
                 {{"reached", r.reached}});
    }
  } else if (!quiet_) {
    logs::info("mesh", fmt::format("mesh node {} at {}; invite others with `llmesh invite`", node_->id().short_hex(),
                                   node_->mesh_address()),
               {{"node_id", node_->id().hex()}, {"mesh_address", node_->mesh_address()}});
  }
  out["mesh_id"] = node_->secret().mesh_id_hex();
  out["public"] = node_->secret().is_public();
  if (opt_.discovery.publish) {
    auto publisher = std::make_unique<ListingPublisher>(
        opt_.discovery, relays_, *node_, home_, peer_limits_, logs::line_sink("discovery", quiet_, "llmesh: "));
    publisher->start();
    out["nostr_pubkey"] = publisher->public_key();
    std::lock_guard lk(discovery_mu_);
    publisher_ = std::move(publisher);
  }
  refresher_ = std::thread([this] { refresh_state_loop(); });
  return out;
}

// Load and free memory change all the time; they are spread when they change in a way that
// matters for routing (requests running or waiting) and at most every few seconds otherwise.
std::vector<gossip::Link> MeshRuntime::measured_links() const {
  std::vector<gossip::Link> links;
  for (const auto& v : node_->members()) {
    if (v.self || !v.connected || !v.rtt || !v.id) continue;
    if (v.member.status != gossip::MemberStatus::alive && v.member.status != gossip::MemberStatus::suspect) continue;
    // Coarse steps (50 us, 0.1 ms, 1 ms, 10 ms): jitter alone does not re-send the record.
    int64_t us = std::max<int64_t>(1, v.rtt->count());
    int64_t step = us < 1000 ? 50 : us < 10000 ? 100 : us < 100000 ? 1000 : 10000;
    us = std::max<int64_t>(step, (us + step / 2) / step * step);
    links.push_back({v.id->hex().substr(0, gossip::kLinkPeerChars),
                     static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX))});
  }
  std::sort(links.begin(), links.end(), [](const gossip::Link& a, const gossip::Link& b) {
    return a.rtt_us != b.rtt_us ? a.rtt_us < b.rtt_us : a.peer < b.peer;
  });
  if (links.size() > gossip::kMaxLinks) links.resize(gossip::kMaxLinks);
  return links;
}

void MeshRuntime::refresh_state_loop() {
  auto hw_at = std::chrono::steady_clock::now() - std::chrono::hours(1);
  double gflops = -1;  // measured once: it costs ~150 ms of every core
  uint64_t last_generated = 0;
  auto last_t = std::chrono::steady_clock::now();
  auto slow_at = last_t - std::chrono::hours(1);
  while (!stopping_) {
    for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(kRefreshInterval / 10);
    if (stopping_) break;
    auto now = std::chrono::steady_clock::now();
    gossip::NodeState fresh = load_state();
    double tps = 0;
    if (local_.model) {
      uint64_t g = local_.model->scheduler->stats().generated_tokens;
      double dt = std::chrono::duration<double>(now - last_t).count();
      tps = dt > 0 && last_generated ? static_cast<double>(g - last_generated) / dt : 0;
      last_generated = g;
      last_t = now;
    }
    std::optional<gossip::Hardware> hw;
    if (now - hw_at > std::chrono::seconds(60)) {
      hw_at = now;
      bool measure = gflops < 0 && local_.model;
      HardwareInfo h = probe_hardware(local_.threads, measure);
      if (measure) gflops = h.matmul_gflops;
      gossip::Hardware g;
      g.cores = h.cores;
      g.ram_bytes = h.ram_bytes;
      g.free_ram_bytes = h.free_ram_bytes >> 26 << 26;  // 64 MiB steps: no chatter
      g.matmul_gflops = std::round(std::max(gflops, 0.0) * 10) / 10;
      g.accelerator = h.accelerator;
      hw = g;
    }
    // Counters and round trips change all the time and matter only to people and /metrics:
    // spread every kSlowRefresh at most. (members() takes the node's lock: not inside update_state.)
    std::optional<gossip::NodeState> slow;
    if (now - slow_at >= kSlowRefresh) {
      slow_at = now;
      slow.emplace();
      if (local_.model) {
        SchedulerStats st = local_.model->scheduler->stats();
        slow->load.requests_total = st.requests_done;
        slow->load.generated_tokens_total = st.generated_tokens;
      }
      slow->links = measured_links();
    }
    node_->update_state([&](gossip::NodeState& s) {
      s.models = fresh.models;
      s.load.active_requests = fresh.load.active_requests;
      s.load.queued = fresh.load.queued;
      s.load.parallel_slots = fresh.load.parallel_slots;
      s.wanted = fresh.wanted;
      // Throughput in coarse steps, so a busy node does not re-send its record every second.
      double rounded = tps < 1 ? 0 : std::pow(2.0, std::round(std::log2(tps) * 2) / 2);
      s.load.tokens_per_second = std::round(rounded * 10) / 10;
      if (hw) s.hardware = *hw;
      if (local_.describe) local_.describe(s);
      if (slow) {
        s.load.requests_total = slow->load.requests_total;
        s.load.generated_tokens_total = slow->load.generated_tokens_total;
        s.links = slow->links;
      }
    });
  }
}

invite::MeshSecret MeshRuntime::resolve_auto() {
  const DiscoveryCliOptions& d = opt_.discovery;
  mesh::discovery::MeshPreferences p;
  p.server = local_.role == gossip::Role::server;
  p.model = local_.model ? local_.model->id : !d.auto_model.empty() ? d.auto_model : d.wants.empty() ? "" : d.wants[0];
  p.region = d.region;
  auto res = discover_meshes(relays_, p, std::chrono::milliseconds(d.discover_timeout_ms));
  size_t answered = 0;
  for (const auto& r : res.relays)
    if (r.value("ok", false)) answered++;
  for (const auto& r : res.relays)
    if (!r.value("ok", false) && !quiet_)
      logs::warn("discovery", "relay_failed",
                 fmt::format("--auto: relay {} skipped: {}", r.value("url", ""), r.value("error", "")),
                 {{"relay", r.value("url", "")}});
  for (const auto& r : res.refused)
    if (!quiet_)
      logs::warn("discovery", r.value("reason", "bad_listing"), fmt::format("--auto: refused {}", r.value("error", "")),
                 {{"event", r.value("event", "")}, {"relay", r.value("relay", "")}});
  for (auto& m : res.meshes) {
    if (!m.joinable) continue;
    // A client that asked for a model has no use for a mesh without it.
    if (!p.server && !p.model.empty() && !m.listing.serves(p.model)) continue;
    auto_candidates_.push_back(m);
  }
  json candidates = json::array();
  for (const auto& m : auto_candidates_) candidates.push_back(mesh::discovery::found_mesh_json(m));
  auto_status_ = {{"relays", res.relays},      {"meshes_found", res.meshes.size()},
                  {"candidates", candidates},  {"refused", res.refused},
                  {"model", p.model},          {"region", p.region}};
  if (!quiet_)
    logs::info("discovery",
               fmt::format("--auto: {} of {} relays answered; {} meshes listed, {} to try{}{}", answered, relays_.size(),
                           res.meshes.size(), auto_candidates_.size(), p.model.empty() ? "" : " for ", p.model),
               {{"relays_answered", answered}, {"meshes", res.meshes.size()}, {"candidates", auto_candidates_.size()}});
  if (auto_candidates_.empty()) {
    if (!p.server)
      throw std::runtime_error(fmt::format(
          "--auto: no public mesh{} to join: {} of {} relays answered, {} meshes listed ({} refused){}",
          p.model.empty() ? "" : " serving " + p.model, answered, relays_.size(), res.meshes.size(),
          res.refused.size(), answered == 0 ? "; check --relay / LLMESH_RELAYS" : ""));
    auto fresh = invite::MeshSecret::create_public();
    invite::save_mesh_secret(fresh, home_ / "mesh.json");
    auto_status_["started"] = fresh.mesh_id_hex();
    if (!quiet_)
      logs::info("discovery", fmt::format("--auto: no public mesh to join; started the public mesh {}{}",
                                          fresh.mesh_id_hex().substr(0, 8),
                                          opt_.discovery.publish ? "" : " (add --publish so that others find it)"),
                 {{"mesh_id", fresh.mesh_id_hex()}});
    return fresh;
  }
  seeds_ = auto_candidates_.front().nodes;
  return invite::MeshSecret::public_mesh(auto_candidates_.front().listing.mesh_id);
}

void MeshRuntime::join_auto(json& out) {
  const auto per_mesh = std::chrono::seconds(std::min(opt_.join_timeout_s, 10));
  auto label_of = [](const mesh::discovery::FoundMesh& m) {
    return (m.listing.name.empty() ? "" : "'" + m.listing.name + "' ") + m.listing.mesh_id_hex().substr(0, 8);
  };
  std::string errors;
  json tried = json::array();
  // Admitted to `m`: save it (a restart rejoins it) and say so.
  auto settle = [&](const mesh::discovery::FoundMesh& m, const mesh::JoinResult& r) {
    const auto secret = invite::MeshSecret::public_mesh(m.listing.mesh_id);
    const fs::path secret_path = home_ / "mesh.json";
    auto saved = invite::try_load_mesh_secret(secret_path);
    if (saved && saved->mesh_id != secret.mesh_id && !quiet_)
      logs::info("mesh", fmt::format("leaving mesh {} for the public mesh {}; {} is replaced",
                                     saved->mesh_id_hex().substr(0, 8), label_of(m), secret_path.string()));
    if (!saved || !(*saved == secret)) invite::save_mesh_secret(secret, secret_path);
    out["joined"] = true;
    out["join_ms"] = r.took.count();
    out["members"] = r.members;
    {
      std::lock_guard lk(discovery_mu_);
      auto_status_["joined"] = m.listing.mesh_id_hex();
      auto_status_["tried"] = tried;
    }
    if (!quiet_)
      logs::info("discovery", fmt::format("--auto: joined the public mesh {} in {} ms: {} members known", label_of(m),
                                          r.took.count(), r.members),
                 {{"mesh_id", m.listing.mesh_id_hex()}, {"join_ms", r.took.count()}, {"members", r.members}});
  };
  // Leaves a mesh that did not admit this node; false when it did after all (its join gave up
  // just before an admission arrived): then this node stays in it.
  auto leave_for = [&](const invite::MeshSecret& next, const mesh::discovery::FoundMesh& previous) {
    try {
      node_->switch_mesh(next);
      return true;
    } catch (const std::logic_error&) {
      mesh::JoinResult late;
      late.reached = 1;
      late.members = node_->members().size();
      settle(previous, late);
      return false;
    }
  };
  for (size_t i = 0; i < auto_candidates_.size(); ++i) {
    const auto& c = auto_candidates_[i];
    if (i > 0 && !leave_for(invite::MeshSecret::public_mesh(c.listing.mesh_id), auto_candidates_[i - 1])) return;
    auto r = node_->join(c.nodes, per_mesh);
    tried.push_back({{"mesh_id", c.listing.mesh_id_hex()}, {"ok", r.ok || r.reached > 0}, {"error", r.error}});
    if (r.ok || r.reached > 0) return settle(c, r);  // admitted: a view still on its way arrives by gossip
    errors += (errors.empty() ? "" : "; ") + label_of(c) + ": " + r.error;
    if (!quiet_)
      logs::warn("discovery", "join_failed",
                 fmt::format("--auto: mesh {} did not admit this node: {}{}", label_of(c), r.error,
                             i + 1 < auto_candidates_.size() ? "; trying the next" : ""),
                 {{"mesh_id", c.listing.mesh_id_hex()}});
  }
  {
    std::lock_guard lk(discovery_mu_);
    auto_status_["tried"] = tried;
  }
  if (local_.role != gossip::Role::server)
    throw std::runtime_error("--auto: no public mesh found admitted this node: " + errors);
  auto fresh = invite::MeshSecret::create_public();
  if (!leave_for(fresh, auto_candidates_.back())) return;
  invite::save_mesh_secret(fresh, home_ / "mesh.json");
  {
    std::lock_guard lk(discovery_mu_);
    auto_status_["started"] = fresh.mesh_id_hex();
  }
  out["joined"] = false;
  out["join_error"] = errors;
  if (!quiet_)
    logs::warn("discovery", "no_mesh_admitted",
               fmt::format("--auto: no mesh found admitted this node; started the public mesh {}",
                           fresh.mesh_id_hex().substr(0, 8)),
               {{"mesh_id", fresh.mesh_id_hex()}});
}

void MeshRuntime::stop_publisher() {
  ListingPublisher* p = nullptr;
  {
    std::lock_guard lk(discovery_mu_);
    p = publisher_.get();
  }
  if (p) p->stop();  // not under the lock: a round in flight finishes first (at most the relay timeout)
}

json MeshRuntime::discovery_status() const {
  std::lock_guard lk(discovery_mu_);
  auto secret = node_->secret();
  json j = {{"public", secret.is_public()}, {"mesh_id", secret.mesh_id_hex()}};
  if (publisher_) j["publish"] = publisher_->status();
  if (!auto_status_.is_null()) j["auto"] = auto_status_;
  if (limiter_) {
    auto st = limiter_->stats();
    const auto& o = limiter_->options();
    j["peer_limits"] = {{"requests_per_minute", o.requests_per_minute},
                        {"burst", o.burst},
                        {"concurrent", o.concurrent},
                        {"admitted", st.admitted},
                        {"rate_limited", st.rate_limited},
                        {"concurrency_limited", st.concurrency_limited}};
  }
  return j;
}

void MeshRuntime::on_stopping() {
  stopping_ = true;
  stop_publisher();
  if (lan_) lan_->stop();  // no more announcements: nobody joins through a leaving node
  if (node_) node_->begin_leave(std::chrono::milliseconds(1000));
}

NodeControl find_running_node(const fs::path& home) {
  fs::path f = home / kNodeFile;
  std::ifstream in(f);
  if (!in)
    throw std::runtime_error("no running llmesh node for " + home.string() +
                             " (no node.json): start one with `llmesh serve -m MODEL` or `llmesh client --join TOKEN`, "
                             "or set LLMESH_HOME to the node's home");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (!j.is_object() || !j.contains("api") || !j["api"].is_string() || !j.contains("control_key"))
    throw std::runtime_error(f.string() + " is damaged: restart the node");
  int pid = j.value("pid", 0);
  if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH)
    throw std::runtime_error("the node that wrote " + f.string() + " (pid " + std::to_string(pid) +
                             ") is not running: start it again");
  auto hp = mesh::split_host_port(j["api"].get<std::string>());
  if (!hp) throw std::runtime_error(f.string() + " names no usable API address");
  return {hp->first, hp->second, j.value("control_key", std::string()), j.value("node_id", std::string())};
}

}  // namespace llmesh::cli
