// Mesh listings: what a public mesh publishes on nostr relays so that anyone can find and join
// it without an address (`llmesh serve --publish`, `llmesh discover`, `--auto`).
//
// A listing is a NIP-01 event of kind 30078 (NIP-78 application data: addressable, so a relay
// keeps only the newest per publisher and "d" tag), signed with the publishing node's nostr key
// (discovery/nostr_event.h), with the tags
//   ["d", "llmesh:<mesh id hex>"]  one listing per mesh per publisher
//   ["t", "llmesh"]                what `discover` asks relays for
//   ["expiration", "<unix s>"]     NIP-40: the listing is void after it (refreshed before)
// and as content a JSON object (version 1; unknown keys are ignored, so it grows additively):
//   {"v":1, "mesh_id":"<32 hex>", "name":"...", "region":"...", "public":true,
//    "nodes":[{"address":"host:port","node_id":"<64 hex>"}...],       how to connect
//    "models":[{"name":"...","nodes":2,"context_length":4096}...],    served now
//    "wanted":["..."],                                                asked for, not served
//    "capacity":{"nodes":3,"servers":2,"clients":1,"slots":8,"free_slots":6,"tokens_per_second":41.5},
//    "limits":{"requests_per_minute":60,"concurrent":4}, "software":"llmesh/0.1.0"}
// Only public meshes are published: their secret is derived from the mesh id
// (invite::MeshSecret::public_mesh), so a listing never carries a secret. Everything read from
// a relay is untrusted: sizes and types are checked and a bad listing is refused with a reason.
// Format and ranking: docs/discovery.md.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "discovery/nostr_event.h"
#include "invite/invite_token.h"
#include "invite/mesh_secret.h"

namespace llmesh::mesh::discovery {

inline constexpr uint32_t kListingKind = 30078;
inline constexpr std::string_view kListingTopic = "llmesh";
inline constexpr std::string_view kListingDPrefix = "llmesh:";
inline constexpr uint32_t kListingVersion = 1;
inline constexpr size_t kMaxListingNodes = 16;
inline constexpr size_t kMaxListingModels = 64;
inline constexpr size_t kMaxModelNameChars = 200;
inline constexpr size_t kMaxMeshNameChars = 64;
inline constexpr size_t kMaxRegionChars = 32;
// A listing dated further ahead than this is refused (a publisher's clock may be a bit off).
inline constexpr int64_t kMaxClockSkewS = 600;

class ListingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ListingModel {
  std::string name;
  uint32_t nodes = 0;           // nodes serving it
  uint32_t context_length = 0;
  bool operator==(const ListingModel&) const = default;
};

struct ListingCapacity {
  uint32_t nodes = 0;     // alive members, this one included
  uint32_t servers = 0;
  uint32_t clients = 0;
  uint32_t slots = 0;     // requests the servers generate at once
  uint32_t free_slots = 0;
  double tokens_per_second = 0;
  bool operator==(const ListingCapacity&) const = default;
};

struct MeshListing {
  invite::MeshId mesh_id{};
  std::string name;
  std::string region;
  bool is_public = true;
  std::vector<invite::InviteNode> nodes;
  std::vector<ListingModel> models;
  std::vector<std::string> wanted;
  ListingCapacity capacity;
  uint32_t requests_per_minute = 0;  // per-peer limits of the publishing node (0: none)
  uint32_t concurrent = 0;
  std::string software;
  // From the event (not in the content):
  std::string publisher;  // nostr public key, hex
  std::string event_id;
  int64_t created_at = 0;
  int64_t expires = 0;

  std::string mesh_id_hex() const { return invite::to_hex(mesh_id); }
  bool serves(std::string_view model) const;
  bool wants(std::string_view model) const;
  // The content object. Throws ListingError when a field is over its limit.
  nlohmann::json to_content() const;
  // Reads a content object. Throws ListingError naming the field that is wrong.
  static MeshListing from_content(const nlohmann::json& j);
};

// The unsigned event of a listing (kind, tags, content, created_at = now), valid for ttl_s;
// the caller signs it with NostrKey::sign.
NostrEvent make_listing_event(const MeshListing& l, int64_t now, int64_t ttl_s);

// Reads a listing from an event whose signature was checked (nostr_relay's queries do).
// Refuses, with `reason` a stable code and `error` a sentence: another kind or topic
// (not_a_listing), no or a passed expiration (expired), dated in the future (from_future),
// a "d" tag that does not name the content's mesh (mismatched_mesh), bad content (bad_content).
struct ListingRead {
  std::optional<MeshListing> listing;
  std::string reason;
  std::string error;
};
ListingRead listing_from_event(const NostrEvent& e, int64_t now);

// The relay filter for listings.
nlohmann::json listing_filter(size_t limit = 500);

// A mesh as found on the relays: the listings of every publisher of one mesh id, merged.
struct FoundMesh {
  MeshListing listing;                     // the newest listing (its name, models, capacity)
  std::vector<std::string> publishers;     // nostr keys that listed it
  std::vector<std::string> relays;         // relays it was found on
  std::vector<invite::InviteNode> nodes;   // every listed node, newest listing's first
  // Filled by measure_latency: the quickest TCP connect to a listed node, and how many answered.
  std::optional<double> rtt_ms;
  size_t reachable = 0;
  bool probed = false;
  // Filled by rank_meshes.
  bool joinable = false;
  double score = 0;
  std::vector<std::string> reasons;  // why it ranks where it does, for `discover`
};

// Groups listings by mesh id; the newest listing of a mesh leads, nodes are merged (at most
// kMaxListingNodes), and of several listings by one publisher only the newest counts.
std::vector<FoundMesh> merge_listings(const std::vector<std::pair<MeshListing, std::string>>& listings_with_relay);

// TCP connect time to each listed node (all at once, each within `timeout`).
void measure_latency(std::vector<FoundMesh>& meshes, std::chrono::milliseconds timeout);

// What the joining node looks for.
struct MeshPreferences {
  bool server = false;     // a server brings `model`; a client wants to use it
  std::string model;       // empty: any
  std::string region;      // empty: any
  std::string exclude_mesh;  // mesh id hex this node must not join (its own)
};
// Scores and sorts (best first): model match, region, capacity, latency (docs/discovery.md).
// A mesh is joinable when it is public, lists a node, and (once probed) one answered.
void rank_meshes(std::vector<FoundMesh>& meshes, const MeshPreferences& p);

nlohmann::json found_mesh_json(const FoundMesh& m);

}  // namespace llmesh::mesh::discovery
