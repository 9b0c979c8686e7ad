#include "routing/peer_limits.h"

#include <gtest/gtest.h>

using namespace llmesh::mesh;
using Clock = PeerLimits::Clock;

namespace {
NodeId peer(uint8_t b) {
  NodeId id;
  id.bytes.fill(b);
  return id;
}
}  // namespace

TEST(PeerLimits, BurstThenRefillAtTheRate) {
  PeerLimits lim({.requests_per_minute = 60, .burst = 3, .concurrent = 0});
  auto t = Clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(lim.admit(peer(1), t).ticket) << i;
  auto d = lim.admit(peer(1), t);
  EXPECT_FALSE(d.ticket);
  EXPECT_EQ(d.reason, "peer_rate_limited");
  EXPECT_EQ(d.retry_after_s, 1);
  EXPECT_NE(d.message.find("60 requests per minute"), std::string::npos);
  // Another peer has its own bucket.
  EXPECT_TRUE(lim.admit(peer(2), t).ticket);
  // One request per second comes back.
  EXPECT_FALSE(lim.admit(peer(1), t + std::chrono::milliseconds(500)).ticket);
  EXPECT_TRUE(lim.admit(peer(1), t + std::chrono::milliseconds(1000)).ticket);
  EXPECT_FALSE(lim.admit(peer(1), t + std::chrono::milliseconds(1100)).ticket);
  // A long pause refills up to the burst, not beyond.
  auto later = t + std::chrono::minutes(10);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(lim.admit(peer(1), later).ticket);
  EXPECT_FALSE(lim.admit(peer(1), later).ticket);
  auto st = lim.stats();
  EXPECT_EQ(st.admitted, 8u);
  EXPECT_EQ(st.rate_limited, 4u);
}

TEST(PeerLimits, ConcurrencyIsReleasedByTheTicket) {
  PeerLimits lim({.requests_per_minute = 0, .burst = 1, .concurrent = 2});
  auto a = lim.admit(peer(1));
  auto b = lim.admit(peer(1));
  ASSERT_TRUE(a.ticket);
  ASSERT_TRUE(b.ticket);
  auto c = lim.admit(peer(1));
  EXPECT_FALSE(c.ticket);
  EXPECT_EQ(c.reason, "peer_concurrency_limited");
  EXPECT_TRUE(lim.admit(peer(2)).ticket);  // released at once: a temporary
  a.ticket.reset();
  auto d = lim.admit(peer(1));
  EXPECT_TRUE(d.ticket);
  // A moved ticket releases once.
  std::optional<PeerLimits::Ticket> moved(std::move(*d.ticket));
  d.ticket.reset();
  EXPECT_FALSE(lim.admit(peer(1)).ticket);
  moved.reset();
  EXPECT_TRUE(lim.admit(peer(1)).ticket);
  EXPECT_EQ(lim.stats().concurrency_limited, 2u);
}

TEST(PeerLimits, ForgetsIdlePeersBeyondTheTable) {
  PeerLimits lim({.requests_per_minute = 60, .burst = 1, .concurrent = 1, .max_peers = 4});
  auto t = Clock::time_point{} + std::chrono::hours(1);
  auto held = lim.admit(peer(0), t);  // running: never forgotten
  ASSERT_TRUE(held.ticket);
  for (uint8_t i = 1; i < 50; ++i) EXPECT_TRUE(lim.admit(peer(i), t + std::chrono::seconds(i)).ticket);
  // peer 0 is still at its concurrency cap: it was not forgotten.
  auto again = lim.admit(peer(0), t + std::chrono::minutes(5));
  EXPECT_FALSE(again.ticket);
  EXPECT_EQ(again.reason, "peer_concurrency_limited");
}
