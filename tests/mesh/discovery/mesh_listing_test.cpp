#include "discovery/mesh_listing.h"

#include <gtest/gtest.h>

#include <boost/asio.hpp>

using namespace llmesh::mesh::discovery;
using llmesh::invite::InviteNode;
using llmesh::invite::MeshSecret;
using nlohmann::json;

namespace {

constexpr int64_t kNow = 1'800'000'000;

MeshListing sample(uint8_t id_byte = 1) {
  MeshListing l;
  l.mesh_id.fill(id_byte);
  l.name = "friends";
  l.region = "eu-west";
  InviteNode n;
  n.address = "10.0.0.1:7411";
  n.node_id.fill(0xab);
  l.nodes = {n};
  l.models = {{"stories260K", 2, 512}};
  l.wanted = {"qwen3-8b"};
  l.capacity = {3, 2, 1, 8, 6, 41.5};
  l.requests_per_minute = 60;
  l.concurrent = 4;
  l.software = "llmesh/test";
  return l;
}

NostrEvent signed_event(const MeshListing& l, const NostrKey& key, int64_t now = kNow, int64_t ttl = 180) {
  NostrEvent e = make_listing_event(l, now, ttl);
  key.sign(e);
  return e;
}

}  // namespace

TEST(MeshListing, ContentRoundTrip) {
  MeshListing l = sample();
  MeshListing back = MeshListing::from_content(l.to_content());
  EXPECT_EQ(back.mesh_id, l.mesh_id);
  EXPECT_EQ(back.name, l.name);
  EXPECT_EQ(back.region, l.region);
  EXPECT_TRUE(back.is_public);
  EXPECT_EQ(back.nodes, l.nodes);
  EXPECT_EQ(back.models, l.models);
  EXPECT_EQ(back.wanted, l.wanted);
  EXPECT_EQ(back.capacity, l.capacity);
  EXPECT_EQ(back.requests_per_minute, 60u);
  EXPECT_EQ(back.concurrent, 4u);
  EXPECT_TRUE(back.serves("stories260K"));
  EXPECT_TRUE(back.wants("qwen3-8b"));
  // Unknown keys are ignored: newer publishers may add fields.
  json j = l.to_content();
  j["future_field"] = {{"x", 1}};
  EXPECT_NO_THROW(MeshListing::from_content(j));
}

TEST(MeshListing, EventCarriesTagsAndNoSecret) {
  auto key = NostrKey::generate();
  MeshSecret pub = MeshSecret::create_public();
  MeshListing l = sample();
  l.mesh_id = pub.mesh_id;
  NostrEvent e = signed_event(l, key);
  EXPECT_EQ(e.kind, kListingKind);
  EXPECT_EQ(e.tag_value("d"), "llmesh:" + pub.mesh_id_hex());
  EXPECT_EQ(e.tag_value("t"), "llmesh");
  EXPECT_EQ(e.tag_value("expiration"), std::to_string(kNow + 180));
  EXPECT_EQ(verify_event(e), EventCheck::ok);
  EXPECT_EQ(e.content.find(llmesh::invite::to_hex(pub.secret)), std::string::npos);
  auto r = listing_from_event(e, kNow + 10);
  ASSERT_TRUE(r.listing) << r.error;
  EXPECT_EQ(r.listing->publisher, key.public_hex());
  EXPECT_EQ(r.listing->expires, kNow + 180);
  EXPECT_EQ(r.listing->created_at, kNow);
  EXPECT_EQ(r.listing->event_id, e.id);
}

TEST(MeshListing, RefusesExpiredFutureMismatchedAndForeignEvents) {
  auto key = NostrKey::generate();
  MeshListing l = sample();
  NostrEvent e = signed_event(l, key);
  auto expired = listing_from_event(e, kNow + 181);
  EXPECT_FALSE(expired.listing);
  EXPECT_EQ(expired.reason, "expired");

  NostrEvent future = signed_event(l, key, kNow + kMaxClockSkewS + 60);
  EXPECT_EQ(listing_from_event(future, kNow).reason, "from_future");

  NostrEvent no_exp = make_listing_event(l, kNow, 180);
  no_exp.tags.pop_back();
  key.sign(no_exp);
  EXPECT_EQ(listing_from_event(no_exp, kNow).reason, "expired");

  NostrEvent bad_exp = make_listing_event(l, kNow, 180);
  bad_exp.tags.back()[1] = "12x";
  key.sign(bad_exp);
  EXPECT_EQ(listing_from_event(bad_exp, kNow).reason, "expired");

  NostrEvent other_d = make_listing_event(l, kNow, 180);
  other_d.tags[0][1] = "llmesh:" + std::string(32, '0');
  key.sign(other_d);
  EXPECT_EQ(listing_from_event(other_d, kNow).reason, "mismatched_mesh");

  NostrEvent note = make_listing_event(l, kNow, 180);
  note.kind = 1;
  key.sign(note);
  EXPECT_EQ(listing_from_event(note, kNow).reason, "not_a_listing");

  NostrEvent garbage = make_listing_event(l, kNow, 180);
  garbage.content = "{not json";
  key.sign(garbage);
  EXPECT_EQ(listing_from_event(garbage, kNow).reason, "bad_content");
}

TEST(MeshListing, HostileContentIsRefusedNamingTheField) {
  auto refused = [](json j) -> std::string {
    try {
      MeshListing::from_content(j);
    } catch (const ListingError& e) {
      return e.what();
    }
    return "";
  };
  json good = sample().to_content();
  json j = good;
  j["v"] = 2;
  EXPECT_NE(refused(j).find("version 2"), std::string::npos);
  j = good;
  j.erase("mesh_id");
  EXPECT_NE(refused(j).find("mesh_id: missing"), std::string::npos);
  j = good;
  j["mesh_id"] = "zz";
  EXPECT_NE(refused(j).find("mesh_id"), std::string::npos);
  j = good;
  j["nodes"][0]["address"] = "no-port";
  EXPECT_NE(refused(j).find("nodes[0].address"), std::string::npos);
  j = good;
  j["nodes"][0]["node_id"] = std::string(63, 'a');
  EXPECT_NE(refused(j).find("nodes[0].node_id"), std::string::npos);
  j = good;
  j["nodes"] = json::array();
  for (int i = 0; i < 17; ++i) j["nodes"].push_back(good["nodes"][0]);
  EXPECT_NE(refused(j).find("more than 16"), std::string::npos);
  j = good;
  j["models"][0]["name"] = std::string(201, 'm');
  EXPECT_NE(refused(j).find("models[0].name"), std::string::npos);
  j = good;
  j["capacity"]["slots"] = -1;
  EXPECT_NE(refused(j).find("capacity.slots"), std::string::npos);
  j = good;
  j["capacity"]["tokens_per_second"] = "fast";
  EXPECT_NE(refused(j).find("capacity.tokens_per_second"), std::string::npos);
  j = good;
  j["public"] = "yes";
  EXPECT_NE(refused(j).find("public"), std::string::npos);
  j = good;
  j["name"] = std::string(65, 'n');
  EXPECT_NE(refused(j).find("name"), std::string::npos);
  j = good;
  j["wanted"] = {1, 2};
  EXPECT_NE(refused(j).find("wanted[0]"), std::string::npos);
  EXPECT_NE(refused(json::array()).find("not a JSON object"), std::string::npos);
  // A listing without "public": true is not a public mesh (it cannot be joined by its id).
  j = good;
  j.erase("public");
  EXPECT_FALSE(MeshListing::from_content(j).is_public);
}

TEST(MeshListing, MergeKeepsNewestPerPublisherAndUnitesNodes) {
  MeshListing a = sample(7);
  a.publisher = "p1";
  a.created_at = 100;
  MeshListing a_old = a;
  a_old.created_at = 50;
  a_old.name = "old name";
  MeshListing b = sample(7);
  b.publisher = "p2";
  b.created_at = 90;
  b.nodes[0].address = "10.0.0.2:7411";
  b.nodes[0].node_id.fill(0xcd);
  MeshListing other = sample(8);
  other.publisher = "p3";
  other.created_at = 10;
  auto found = merge_listings({{a_old, "ws://r1"}, {a, "ws://r2"}, {b, "ws://r1"}, {other, "ws://r1"}});
  ASSERT_EQ(found.size(), 2u);
  const FoundMesh& m = found[0].listing.mesh_id[0] == 7 ? found[0] : found[1];
  EXPECT_EQ(m.listing.name, "friends");  // the newest listing leads
  EXPECT_EQ(m.listing.created_at, 100);
  EXPECT_EQ(m.publishers, (std::vector<std::string>{"p1", "p2"}));
  EXPECT_EQ(m.relays, (std::vector<std::string>{"ws://r1", "ws://r2"}));
  ASSERT_EQ(m.nodes.size(), 2u);
  EXPECT_EQ(m.nodes[0].address, "10.0.0.1:7411");
  EXPECT_EQ(m.nodes[1].address, "10.0.0.2:7411");
}

TEST(MeshListing, RankingPrefersModelRegionCapacityAndLatency) {
  auto make = [](uint8_t id, std::vector<std::string> models, std::string region, uint32_t free, double rtt) {
    FoundMesh f;
    f.listing = sample(id);
    f.listing.models.clear();
    for (auto& m : models) f.listing.models.push_back({m, 1, 512});
    f.listing.wanted.clear();
    f.listing.region = region;
    f.listing.capacity.free_slots = free;
    f.nodes = f.listing.nodes;
    f.probed = true;
    f.reachable = 1;
    f.rtt_ms = rtt;
    return f;
  };
  std::vector<FoundMesh> ms = {make(1, {"a"}, "us", 4, 5), make(2, {"b"}, "eu", 4, 5), make(3, {"b"}, "us", 4, 5),
                               make(4, {"b"}, "us", 0, 5), make(5, {"b"}, "us", 4, 50)};
  rank_meshes(ms, {.server = false, .model = "b", .region = "us"});
  std::vector<int> order;
  for (auto& m : ms) order.push_back(m.listing.mesh_id[0]);
  // Model first, then region; free slots outweigh 45 ms more latency.
  EXPECT_EQ(order, (std::vector<int>{3, 5, 4, 2, 1}));
  for (auto& m : ms) EXPECT_TRUE(m.joinable);

  // A server prefers the mesh that wants its model.
  auto wants = make(6, {"x"}, "", 0, 50);
  wants.listing.wanted = {"b"};
  std::vector<FoundMesh> ss = {make(7, {"b"}, "", 4, 1), wants};
  rank_meshes(ss, {.server = true, .model = "b"});
  EXPECT_EQ(ss[0].listing.mesh_id[0], 6);

  // Not joinable: private, no node answered, no node listed, or this node's own mesh.
  auto priv = make(8, {"b"}, "us", 4, 1);
  priv.listing.is_public = false;
  auto dead = make(9, {"b"}, "us", 4, 1);
  dead.reachable = 0;
  dead.rtt_ms.reset();
  auto empty = make(10, {"b"}, "us", 4, 1);
  empty.nodes.clear();
  auto own = make(11, {"b"}, "us", 4, 1);
  std::vector<FoundMesh> bad = {priv, dead, empty, own, make(12, {"a"}, "", 0, 900)};
  rank_meshes(bad, {.model = "b", .exclude_mesh = own.listing.mesh_id_hex()});
  EXPECT_EQ(bad[0].listing.mesh_id[0], 12);
  EXPECT_TRUE(bad[0].joinable);
  for (size_t i = 1; i < bad.size(); ++i) EXPECT_FALSE(bad[i].joinable) << int(bad[i].listing.mesh_id[0]);
}

TEST(MeshListing, LatencyProbeFindsTheListeningNodeAndGivesUpOnAClosedPort) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acc(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const int port = acc.local_endpoint().port();
  boost::asio::ip::tcp::acceptor closed(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const int closed_port = closed.local_endpoint().port();
  closed.close();
  FoundMesh live;
  live.nodes = {InviteNode{"127.0.0.1:" + std::to_string(port), {}}, InviteNode{"127.0.0.1:" + std::to_string(closed_port), {}}};
  FoundMesh gone;
  gone.nodes = {InviteNode{"127.0.0.1:" + std::to_string(closed_port), {}}};
  std::vector<FoundMesh> ms = {live, gone};
  measure_latency(ms, std::chrono::milliseconds(3000));
  EXPECT_TRUE(ms[0].probed);
  EXPECT_EQ(ms[0].reachable, 1u);
  ASSERT_TRUE(ms[0].rtt_ms);
  EXPECT_EQ(ms[1].reachable, 0u);
  EXPECT_FALSE(ms[1].rtt_ms);
}

TEST(PublicMesh, SecretIsDerivedFromTheIdAndCannotRotate) {
  MeshSecret p = MeshSecret::create_public();
  EXPECT_TRUE(p.is_public());
  EXPECT_EQ(p.secret, MeshSecret::public_secret(p.mesh_id));
  EXPECT_EQ(MeshSecret::public_mesh(p.mesh_id), p);
  EXPECT_THROW(p.rotate(), llmesh::invite::MeshSecretError);
  MeshSecret q = MeshSecret::create_public();
  EXPECT_NE(q.mesh_id, p.mesh_id);
  EXPECT_NE(q.secret, p.secret);
  MeshSecret priv = MeshSecret::create();
  EXPECT_FALSE(priv.is_public());
  EXPECT_NO_THROW(priv.rotate());
}
