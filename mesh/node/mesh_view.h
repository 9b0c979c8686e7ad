// The mesh as one picture, derived from a node's status (MeshNode::status_json): the links
// between live members with their round trips (each member gossips its own, `lk`), where each
// model's layers and expert groups are placed, and totals. `/mesh/status`, `llmesh status`, the
// web console (docs/console.md) and `/metrics` all show the same facts from here.
//
//   json st = node.status_json();
//   add_mesh_view(st);                 // st["links"], st["placement"], st["totals"]
//   std::string text = mesh_metrics_text(st);
//
// Live members are those alive or suspect; dead and departed ones are left out of the view.
// Member states arrive by gossip (validated and bounded on decode): the view still treats every
// field as optional and never throws on a missing or mistyped one.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace llmesh::mesh {

// Adds to `status`:
//   "links":     [{"from": id, "to": id, "rtt_ms"}]  one per pair of live members (the mean of
//                what each side measured), sorted by (from, to) with from < to;
//   "placement": [{"model", "total_layers", "ranges": [{"node", "first", "last", "entry"}],
//                  "expert_groups": [{"node", "index", "count", "plan"}], "missing": [[a, b]...]}]
//                one per model name, nodes in id order;
//   "totals":    {"nodes", "servers", "clients", "tokens_per_second", "active_requests",
//                 "queued", "parallel_slots", "requests_total", "generated_tokens_total"}.
void add_mesh_view(nlohmann::json& status);

// Prometheus text exposition (format 0.0.4) of a status with its view: members by status, one
// series per live member (load, counters, round trip from this node, layers held, expert
// shard), per link and per model (missing layers), and this node's gossip traffic.
std::string mesh_metrics_text(const nlohmann::json& status);

// A value for a Prometheus label: backslash, double quote and newline escaped.
std::string prometheus_label(const std::string& value);

}  // namespace llmesh::mesh
