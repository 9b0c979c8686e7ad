// llmesh discover: the public meshes listed on nostr relays, checked, merged and ranked the way
// `--auto` ranks them (docs/discovery.md).
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/mesh_discovery.h"

namespace llmesh::cli {
namespace {

struct DiscoverOptions {
  std::vector<std::string> relays;
  std::string model;
  std::string region;
  bool server = false;
  bool no_probe = false;
  int timeout_ms = 5000;
  bool json = false;
};

std::string ago(int64_t t, int64_t now) {
  int64_t s = now - t;
  if (s < 0) return "now";
  if (s < 120) return fmt::format("{} s ago", s);
  return fmt::format("{} min ago", s / 60);
}

int run_discover(const DiscoverOptions& o) {
  auto relays = resolve_relays(o.relays);
  mesh::discovery::MeshPreferences p;
  p.server = o.server;
  p.model = o.model;
  p.region = o.region;
  auto res = discover_meshes(relays, p, std::chrono::milliseconds(o.timeout_ms), !o.no_probe);
  size_t answered = 0;
  for (const auto& r : res.relays)
    if (r.value("ok", false)) answered++;
  if (o.json) {
    nlohmann::json meshes = nlohmann::json::array();
    for (const auto& m : res.meshes) meshes.push_back(mesh::discovery::found_mesh_json(m));
    nlohmann::json out = {{"relays", res.relays}, {"meshes", meshes}, {"refused", res.refused}};
    std::printf("%s\n", out.dump(2).c_str());
    return answered == 0 ? 1 : 0;
  }
  for (const auto& r : res.relays) {
    if (r.value("ok", false))
      std::printf("relay %s: %zu listings%s\n", r.value("url", "").c_str(), r.value("events", size_t{0}),
                  r.value("rejected", size_t{0}) ? fmt::format(", {} with a bad signature dropped",
                                                               r.value("rejected", size_t{0})).c_str()
                                                 : "");
    else
      std::printf("relay %s: skipped: %s\n", r.value("url", "").c_str(), r.value("error", "").c_str());
  }
  for (const auto& r : res.refused)
    std::printf("refused: %s (%s)\n", r.value("error", "").c_str(), r.value("reason", "").c_str());
  if (res.meshes.empty()) {
    std::printf("no public mesh listed%s\n", answered == 0 ? " (no relay answered: check --relay)" : "");
    return answered == 0 ? 1 : 0;
  }
  const int64_t now = invite::unix_now();
  std::printf("\n");
  int rank = 0;
  for (const auto& m : res.meshes) {
    const auto& l = m.listing;
    std::string models;
    for (const auto& md : l.models) models += (models.empty() ? "" : ", ") + md.name;
    std::printf("%s %s %s%s\n", m.joinable ? fmt::format("{}.", ++rank).c_str() : "-", l.mesh_id_hex().substr(0, 8).c_str(),
                l.name.empty() ? "(unnamed)" : l.name.c_str(), l.region.empty() ? "" : (" [" + l.region + "]").c_str());
    std::printf("   models: %s%s\n", models.empty() ? "none" : models.c_str(),
                l.wanted.empty() ? "" : fmt::format("; wanted: {}", fmt::join(l.wanted, ", ")).c_str());
    std::printf("   %u nodes (%u servers), %u of %u slots free, %.1f tok/s; %s\n", l.capacity.nodes, l.capacity.servers,
                l.capacity.free_slots, l.capacity.slots, l.capacity.tokens_per_second,
                m.rtt_ms ? fmt::format("{:.1f} ms away ({} of {} nodes answered)", *m.rtt_ms, m.reachable,
                                       m.nodes.size()).c_str()
                : m.probed ? "no listed node answered"
                           : "not probed");
    std::printf("   listed %s by %zu node%s, expires in %lld s; %s\n", ago(l.created_at, now).c_str(),
                m.publishers.size(), m.publishers.size() == 1 ? "" : "s", static_cast<long long>(l.expires - now),
                m.joinable ? fmt::format("score {:.0f}: {}", m.score, fmt::join(m.reasons, ", ")).c_str()
                           : fmt::format("not joinable: {}", fmt::join(m.reasons, ", ")).c_str());
  }
  return 0;
}

}  // namespace

Runner add_discover(CLI::App& app) {
  auto o = std::make_shared<DiscoverOptions>();
  CLI::App* sub = app.add_subcommand(
      "discover", "List the public meshes found on nostr relays, best first (as `serve --auto` / `client --auto` rank them)");
  sub->add_option("--relay", o->relays,
                  "Nostr relay (ws:// or wss://, repeatable); also LLMESH_RELAYS (comma separated). Default: " +
                      fmt::format("{}", fmt::join(kDefaultRelays, ", ")));
  sub->add_option("--model", o->model, "Rank meshes that serve this model first (with --server: that want it)");
  sub->add_option("--region", o->region, "Rank meshes of this region first");
  sub->add_flag("--server", o->server, "Rank as a server bringing --model would (wanted models first)");
  sub->add_flag("--no-probe", o->no_probe, "Do not connect to the listed nodes to measure latency");
  sub->add_option("--timeout", o->timeout_ms, "Milliseconds to wait for each relay")
      ->check(CLI::Range(100, 60000))
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Relays, meshes (ranked, with scores and reasons) and refused listings as JSON");
  return [o] { return run_discover(*o); };
}

}  // namespace llmesh::cli
