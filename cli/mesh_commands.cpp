// llmesh invite / llmesh status: talk to the running node of this machine (found through
// $LLMESH_HOME/node.json) over its local API.
#include <httplib.h>

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/mesh_runtime.h"
#include "identity/node_identity.h"
#include "invite/invite_token.h"

namespace llmesh::cli {
namespace {

using nlohmann::json;

json call_node(const NodeControl& n, const std::string& method, const std::string& path, const json& body,
               const std::string& api_key) {
  httplib::Client cli(n.host, n.port);
  cli.set_connection_timeout(3);
  cli.set_read_timeout(15);
  httplib::Headers h{{"X-Llmesh-Control", n.control_key}};
  if (!api_key.empty()) h.emplace("Authorization", "Bearer " + api_key);
  auto res = method == "GET" ? cli.Get(path, h) : cli.Post(path, h, body.dump(), "application/json");
  if (!res)
    throw std::runtime_error(fmt::format("cannot reach the node's API at {}:{} ({}): is it still running?", n.host,
                                         n.port, httplib::to_string(res.error())));
  json j = json::parse(res->body, nullptr, false);
  if (res->status != 200) {
    std::string msg = j.is_object() && j.contains("error") && j["error"].is_object()
                          ? j["error"].value("message", res->body)
                          : res->body;
    throw std::runtime_error(fmt::format("the node answered {}: {}", res->status, msg));
  }
  if (!j.is_object()) throw std::runtime_error("the node answered something that is not JSON");
  return j;
}

struct InviteOptions {
  std::string expires = "never";
  bool rotate = false;
  size_t max_nodes = 8;
  bool json = false;
};

int run_invite(const InviteOptions& o) {
  std::string err;
  auto secs = invite::parse_duration(o.expires, &err);
  if (!secs) throw std::runtime_error("--expires: " + err);
  NodeControl n = find_running_node(mesh::default_home());
  json r = call_node(n, "POST", "/mesh/invite",
                     {{"expires_in", *secs}, {"rotate", o.rotate}, {"max_nodes", o.max_nodes}}, "");
  if (o.json) {
    std::printf("%s\n", r.dump().c_str());
    return 0;
  }
  if (r.value("rotated", false))
    std::fprintf(stderr, "rotated the mesh secret: now epoch %d; every older token stops working\n",
                 r.value("epoch", 0));
  std::fprintf(stderr, "mesh %s (epoch %d, fingerprint %s), expires %s, %zu seed node(s):\n",
               r.value("mesh_id", "").substr(0, 8).c_str(), r.value("epoch", 0),
               r.value("fingerprint", "").c_str(), r.value("expires_utc", "never").c_str(), r["nodes"].size());
  for (auto& s : r["nodes"])
    std::fprintf(stderr, "  %s  %s\n", s.value("address", "").c_str(), s.value("node_id", "").substr(0, 12).c_str());
  std::fprintf(stderr, "The token carries the mesh secret: share it only with people you let in.\n"
                       "They run: llmesh serve -m MODEL.gguf --join TOKEN   or   llmesh client --join TOKEN\n");
  std::printf("%s\n", r.value("token", "").c_str());
  return 0;
}

struct StatusOptions {
  bool json = false;
  std::string api;  // host:port; default from node.json
  std::string api_key;
};

std::string fmt_bytes(uint64_t b) {
  if (b == 0) return "-";
  if (b < (100ull << 20)) return fmt::format("{:.1f}M", static_cast<double>(b) / (1u << 20));
  return fmt::format("{:.1f}G", static_cast<double>(b) / (1u << 30));
}

// The mesh view (mesh/node/mesh_view.h) in a few lines: totals, links, placement, console.
void print_mesh_view(const json& s) {
  auto short_id = [](const json& v) { return v.is_string() ? v.get<std::string>().substr(0, 12) : std::string("?"); };
  if (s.contains("totals") && s["totals"].is_object()) {
    const json& t = s["totals"];
    auto n = [&](const char* key, const char* what) {
      const int v = t.value(key, 0);
      return fmt::format("{} {}{}", v, what, v == 1 ? "" : "s");
    };
    std::printf("totals: %s (%s, %s), %.1f tok/s, %d running, %d queued, %s, %llu requests served\n",
                n("nodes", "live node").c_str(), n("servers", "server").c_str(), n("clients", "client").c_str(),
                t.value("tokens_per_second", 0.0), t.value("active_requests", 0), t.value("queued", 0),
                n("parallel_slots", "slot").c_str(), static_cast<unsigned long long>(t.value("requests_total", uint64_t{0})));
  }
  if (s.contains("links") && s["links"].is_array() && !s["links"].empty()) {
    std::string line;
    for (const auto& l : s["links"])
      line += fmt::format("{}{}-{} {:.1f}ms", line.empty() ? "" : ", ", short_id(l["from"]), short_id(l["to"]),
                          l.value("rtt_ms", 0.0));
    std::printf("links: %s\n", line.c_str());
  }
  if (s.contains("placement") && s["placement"].is_array())
    for (const auto& p : s["placement"]) {
      std::string line = fmt::format("placement: {} ({} layers):", p.value("model", "?"), p.value("total_layers", 0));
      for (const auto& r : p.value("ranges", json::array()))
        line += fmt::format(" {}[{},{}){}", short_id(r["node"]), r.value("first", 0), r.value("last", 0),
                            r.value("entry", false) ? " entry" : "");
      for (const auto& g : p.value("expert_groups", json::array()))
        line += fmt::format(" {} experts {}/{}", short_id(g["node"]), g.value("index", 0), g.value("count", 0));
      const json missing = p.value("missing", json::array());
      if (!missing.empty()) {
        line += "; missing";
        for (const auto& m : missing)
          if (m.is_array() && m.size() == 2) line += fmt::format(" [{},{})", m[0].get<int>(), m[1].get<int>());
      }
      std::printf("%s\n", line.c_str());
    }
  if (s.contains("node") && s["node"].contains("console_url"))
    std::printf("console: %s\n", s["node"].value("console_url", "").c_str());
}

int run_status(StatusOptions& o) {
  if (o.api_key.empty())
    if (const char* k = std::getenv("LLMESH_API_KEY")) o.api_key = k;
  NodeControl n;
  if (!o.api.empty()) {
    auto hp = mesh::split_host_port(o.api);
    if (!hp) throw std::runtime_error("--api must be HOST:PORT, got '" + o.api + "'");
    n.host = hp->first;
    n.port = hp->second;
  } else {
    n = find_running_node(mesh::default_home());
  }
  json s = call_node(n, "GET", "/mesh/status", json::object(), o.api_key);
  if (o.json) {
    std::printf("%s\n", s.dump(2).c_str());
    return 0;
  }
  const auto& m = s["mesh"];
  std::printf("mesh %s  epoch %d  fingerprint %s  %d alive of %d\n", m.value("id", "").substr(0, 8).c_str(),
              m.value("epoch", 0), m.value("fingerprint", "").c_str(), m.value("alive", 0), m.value("members", 0));
  std::printf("%-13s %-6s %-8s %-21s %-21s %-28s %-7s %-6s %-6s %-6s %-5s %s\n", "NODE", "ROLE", "STATUS", "MESH",
              "API", "MODELS", "LOAD", "TOK/S", "REQS", "RTT", "CORES", "RAM free/total");
  for (const auto& row : s["members"]) {
    std::string id = row.value("id", "").substr(0, 12) + (row.value("self", false) ? "*" : "");
    json st = row.contains("state") ? row["state"] : json::object();
    std::string models;
    if (st.contains("models"))
      for (auto& md : st["models"]) {
        if (!models.empty()) models += ",";
        models += md.value("name", "?");
        // A layer range when the node holds part of the model (a pipeline stage).
        const int total = md.value("total_layers", 0);
        const json ld = md.value("layers_loaded", json::array());
        if (ld.is_array() && ld.size() == 2 && total > 0) {
          const int a = ld[0].get<int>(), b = ld[1].get<int>();
          if (a != 0 || b != total) models += b > a ? fmt::format(" [{}-{})/{}", a, b, total) : fmt::format(" -/{}", total);
        }
        if (md.value("entry", false)) models += " entry";
        // A mixture-of-experts shard: which of the plan's shards (docs/moe.md).
        if (md.contains("expert_shard") && md["expert_shard"].is_object())
          models += fmt::format(" experts {}/{}", md["expert_shard"].value("index", 0u),
                                md["expert_shard"].value("count", 0u));
      }
    std::string load = "-";
    if (st.contains("load"))
      load = fmt::format("{}+{}/{}", st["load"].value("active_requests", 0), st["load"].value("queued", 0),
                         st["load"].value("parallel_slots", 0));
    std::string rtt = row.contains("rtt_ms") ? fmt::format("{:.1f}ms", row["rtt_ms"].get<double>()) : "-";
    json hw = st.contains("hardware") ? st["hardware"] : json::object();
    json ld = st.contains("load") ? st["load"] : json::object();
    std::string tps = st.contains("load") ? fmt::format("{:.1f}", ld.value("tokens_per_second", 0.0)) : "-";
    std::string reqs = st.contains("load") ? std::to_string(ld.value("requests_total", uint64_t{0})) : "-";
    std::printf("%-13s %-6s %-8s %-21s %-21s %-28s %-7s %-6s %-6s %-6s %-5d %s/%s\n", id.c_str(),
                st.value("role", "?").c_str(), row.value("status", "?").c_str(), st.value("mesh_address", "-").c_str(),
                st.value("api_address", "-").c_str(), models.empty() ? "-" : models.c_str(), load.c_str(), tps.c_str(),
                reqs.c_str(), rtt.c_str(), hw.value("cores", 0),
                fmt_bytes(hw.value("free_ram_bytes", uint64_t{0})).c_str(), fmt_bytes(hw.value("ram_bytes", uint64_t{0})).c_str());
  }
  print_mesh_view(s);
  if (s.contains("split") && s["split"].is_object()) {
    const json& sp = s["split"];
    const json layers = sp.value("layers", json::array({0, 0}));
    std::string line = fmt::format("split: {} ({} layers): this node runs ", sp.value("model", "?"), sp.value("n_layer", 0));
    line += layers[1].get<int>() > layers[0].get<int>() ? fmt::format("[{}, {})", layers[0].get<int>(), layers[1].get<int>())
                                                        : std::string("no layers");
    line += sp.value("entry", false) ? ", answers requests" : ", no route over all layers yet";
    std::printf("%s\n", line.c_str());
    if (sp.contains("plan")) {
      std::string st;
      for (const auto& stg : sp["plan"].value("stages", json::array()))
        st += fmt::format(" {}[{},{})", stg.value("node", "").substr(0, 12), stg.value("first", 0), stg.value("last", 0));
      std::printf("plan epoch %llu:%s\n", static_cast<unsigned long long>(sp["plan"].value("epoch", uint64_t{0})), st.c_str());
    } else if (sp.contains("plan_error")) {
      std::printf("plan: none yet: %s\n", sp["plan_error"].get<std::string>().c_str());
    }
    if (sp.contains("pipeline")) {
      const json& pp = sp["pipeline"];
      std::string r;
      for (const auto& h : pp.value("route", json::array()))
        r += fmt::format(" {}[{},{})", h.value("node", "").substr(0, 12), h["layers"][0].get<int>(), h["layers"][1].get<int>());
      std::printf("route:%s  (%llu steps, %llu recoveries)\n", r.empty() ? " none yet" : r.c_str(),
                  static_cast<unsigned long long>(pp.value("steps", uint64_t{0})),
                  static_cast<unsigned long long>(pp.value("recoveries", uint64_t{0})));
    }
  }
  if (s.contains("discovery") && s["discovery"].is_object()) {
    // Public or private, the listing on nostr relays and per-peer limits (docs/discovery.md).
    const json& d = s["discovery"];
    std::string line = d.value("public", false) ? "public mesh (anyone may join by its id)" : "private mesh";
    if (d.contains("publish") && d["publish"].is_object()) {
      const json& p = d["publish"];
      size_t relays = p.value("relays", json::array()).size();
      line += p.contains("event")
                  ? fmt::format("; listed on {} of {} relays, event {}", p.value("accepted", 0), relays,
                                p.value("event", "").substr(0, 8))
                  : std::string("; not published yet");
    }
    if (d.contains("auto") && d["auto"].contains("joined"))
      line += "; joined by --auto";
    if (d.contains("peer_limits") && d["peer_limits"].is_object()) {
      const json& l = d["peer_limits"];
      line += fmt::format("; per peer: {:g}/min, {} at once ({} refused)", l.value("requests_per_minute", 0.0),
                          l.value("concurrent", 0),
                          l.value("rate_limited", uint64_t{0}) + l.value("concurrency_limited", uint64_t{0}));
    }
    std::printf("%s\n", line.c_str());
  }
  const auto& g = s["gossip"];
  std::printf("gossip: %.0f bytes/s sent by this node (%llu sent, %llu received)\n",
              g.value("bytes_sent_per_s", 0.0), static_cast<unsigned long long>(g.value("bytes_sent", uint64_t{0})),
              static_cast<unsigned long long>(g.value("bytes_received", uint64_t{0})));
  return 0;
}

}  // namespace

Runner add_invite(CLI::App& app) {
  auto o = std::make_shared<InviteOptions>();
  CLI::App* sub = app.add_subcommand(
      "invite", "Print an invite token for this machine's running node's mesh (it carries the mesh secret)");
  sub->add_option("--expires", o->expires, "How long the token works: never, or e.g. 30m, 12h, 7d, 1d12h")
      ->capture_default_str();
  sub->add_flag("--rotate", o->rotate,
                "Draw a new mesh secret first: every older token stops working; current members get the new one");
  sub->add_option("--max-nodes", o->max_nodes, "Seed nodes named in the token")->check(CLI::Range(1, 64))
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print the token and its details as one JSON object");
  return [o] { return run_invite(*o); };
}

Runner add_status(CLI::App& app) {
  auto o = std::make_shared<StatusOptions>();
  CLI::App* sub = app.add_subcommand("status", "Show the mesh as this machine's running node sees it");
  sub->add_flag("--json", o->json, "Everything the node knows, as JSON");
  sub->add_option("--api", o->api, "HOST:PORT of a node's API (default: this machine's node, from node.json)");
  sub->add_option("--api-key", o->api_key, "The node's API key, if it has one; also LLMESH_API_KEY");
  return [o] { return run_status(*o); };
}

}  // namespace llmesh::cli
