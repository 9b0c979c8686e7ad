// SWIM membership with Lifeguard-style suspicion, as a pure state machine (docs/gossip.md).
//
// No sockets, threads or clocks inside: the owner feeds it time (tick) and received messages
// (on_message) and sends whatever take_outgoing() returns to the named members, one message per
// transport frame. Membership changes come out of take_events(). Randomness comes from the seed,
// so a simulated network with virtual time replays exactly.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gossip/dissemination.h"
#include "gossip/node_state.h"
#include "gossip/wire.h"

namespace llmesh::gossip {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;
using std::chrono::milliseconds;

struct SwimConfig {
  // Failure detection: one probe every probe_interval; a direct ping waits probe_timeout for its
  // ack, then indirect_k members ping the target for us, and the probe fails if no ack arrives
  // within indirect_timeout after that.
  Duration probe_interval = milliseconds(500);
  Duration probe_timeout = milliseconds(300);
  Duration indirect_timeout = milliseconds(500);
  int indirect_k = 3;
  // Suspicion (Lifeguard): timeout starts at suspicion_max_mult * min and shrinks to
  // min = suspicion_mult * max(1, log10(n)) * probe_interval as independent confirmations
  // arrive (suspicion_confirmations of them reach min).
  double suspicion_mult = 1.5;
  double suspicion_max_mult = 4.0;
  int suspicion_confirmations = 3;
  // On hearing that a member is suspect, probe it now rather than on our round-robin turn: a
  // dead member collects confirmations (and is declared dead) sooner; a live one just answers.
  bool probe_on_suspect = true;
  // Dissemination: every update is sent retransmit_mult * ceil(log10(n+1)) times, piggybacked on
  // probes and in gossip messages to gossip_fanout members every gossip_interval.
  int retransmit_mult = 4;
  Duration gossip_interval = milliseconds(200);
  int gossip_fanout = 3;
  std::size_t piggyback_bytes = 1024;      // piggyback budget per message
  std::size_t max_message_bytes = 1 << 20; // refuse bigger incoming messages
  // Anti-entropy: full push-pull with a random member (interval grows past 32 members), and
  // with a random dead member every reconnect_interval so partitions heal.
  Duration push_pull_interval = std::chrono::seconds(20);
  Duration reconnect_interval = std::chrono::seconds(10);
  // Dead members still receive gossip for a while (so a falsely dead node learns and refutes),
  // and are forgotten (reaped) after dead_reap_after; likewise members that left.
  Duration gossip_to_dead = std::chrono::seconds(30);
  Duration dead_reap_after = std::chrono::seconds(120);
  Duration join_retry_interval = std::chrono::seconds(1);
};

struct Member {
  MemberId id;
  MemberStatus status = MemberStatus::alive;
  std::uint64_t incarnation = 0;
  bool has_state = false;  // false until the member's state record has arrived
  NodeState state;
  TimePoint since{};       // last status change
};

struct MemberEvent {
  enum class Kind : std::uint8_t { joined, updated, suspect, alive, dead, left, reaped };
  Kind kind;
  MemberId id;
  std::uint64_t incarnation = 0;
  TimePoint at{};
};
const char* event_kind_name(MemberEvent::Kind k);

struct Outgoing {
  MemberId to;
  std::vector<std::uint8_t> bytes;
};

struct GossipStats {
  struct PerKind {
    std::uint64_t messages_sent = 0, bytes_sent = 0, messages_received = 0, bytes_received = 0;
  };
  PerKind by_kind[kMsgKinds];  // indexed by MsgKind
  std::uint64_t decode_errors = 0;
  std::uint64_t updates_sent = 0, updates_received = 0;
  std::uint64_t refutations = 0;
  std::uint64_t bytes_sent() const;
  std::uint64_t bytes_received() const;
  std::string last_decode_error;
};

class Swim {
 public:
  Swim(MemberId self, NodeState self_state, SwimConfig config, std::uint64_t seed);

  // Contact seed members (push-pull with each); retried every join_retry_interval until one
  // of them has answered with its view of the mesh.
  void join(std::vector<MemberId> seeds, TimePoint now);
  // Announce a graceful leave; keep calling tick() until leave_done() (or a short while) so the
  // announcement spreads, then stop.
  void leave(TimePoint now);
  bool leave_done() const;
  // A seed answered join()'s push-pull with its view of the mesh.
  bool synced() const { return synced_; }
  // Replace this node's state record (state_version is assigned here) and spread it.
  void update_self(NodeState state, TimePoint now);

  void tick(TimePoint now);
  void on_message(const MemberId& from, std::span<const std::uint8_t> bytes, TimePoint now);

  std::vector<Outgoing> take_outgoing();
  std::vector<MemberEvent> take_events();

  const MemberId& self() const { return self_; }
  std::uint64_t incarnation() const;
  const NodeState& self_state() const;
  std::vector<Member> members() const;  // including self
  const Member* find(const MemberId& id) const;
  std::size_t alive_count() const;       // alive or suspect, including self
  const GossipStats& stats() const { return stats_; }
  const SwimConfig& config() const { return config_; }
  std::size_t pending_broadcasts() const { return queue_.size(); }

 private:
  struct Probe {
    MemberId target;
    TimePoint direct_deadline;
    TimePoint final_deadline;
    bool indirect_sent = false;
    std::vector<MemberId> helpers;
  };
  struct Relay {
    MemberId requester;
    std::uint32_t requester_seq;
    TimePoint deadline;
  };
  struct Suspicion {
    TimePoint start;
    Duration min, max;
    int k;
    std::set<MemberId> confirmers;
    TimePoint deadline() const;
  };

  // Membership rules (SWIM with incarnations).
  void on_alive(const MemberId& id, std::uint64_t inc, TimePoint now, bool gossip);
  void on_suspect(const MemberId& id, std::uint64_t inc, const MemberId& from, TimePoint now);
  void on_dead(const MemberId& id, std::uint64_t inc, const MemberId& from, TimePoint now);
  void on_left(const MemberId& id, std::uint64_t inc, TimePoint now);
  void on_state(const MemberId& id, const NodeState& state, TimePoint now);
  void refute(std::uint64_t seen_incarnation, TimePoint now, bool declared_gone = false);
  void set_status(Member& m, MemberStatus s, TimePoint now);
  void emit(MemberEvent::Kind kind, const Member& m, TimePoint now);

  // Timers.
  void start_probe(TimePoint now);
  void probe(const MemberId& id, TimePoint now);
  void check_probes(TimePoint now);
  void check_suspicions(TimePoint now);
  void gossip_round(TimePoint now);
  void push_pull(const MemberId& to);
  void reap(TimePoint now);

  // Messages.
  void handle(const MemberId& from, const Message& msg, TimePoint now);
  void merge(const MemberId& from, const std::vector<SyncEntry>& entries, TimePoint now);
  std::vector<SyncEntry> digest() const;
  void send(const MemberId& to, Message msg, bool piggyback = true);
  void broadcast_alive(const Member& m);
  void broadcast_state(const Member& m);
  void broadcast(const Update& u);

  std::vector<MemberId> random_members(std::size_t k, const std::set<MemberId>& exclude,
                                       bool include_recent_dead, TimePoint now);
  int transmit_limit() const;
  Member& self_member();
  const Member& self_member() const;

  MemberId self_;
  SwimConfig config_;
  std::mt19937_64 rng_;
  std::map<MemberId, Member> members_;
  std::map<MemberId, Suspicion> suspicions_;
  std::map<MemberId, NodeState> pending_states_;  // states of members not known yet
  std::map<std::uint32_t, Probe> probes_;
  std::map<std::uint32_t, Relay> relays_;
  std::vector<MemberId> probe_order_;
  std::size_t probe_index_ = 0;
  std::uint32_t next_seq_ = 1;
  BroadcastQueue queue_;
  std::vector<MemberId> seeds_;
  bool synced_ = false;  // a push-pull reply arrived: the join is done
  bool leaving_ = false;
  bool started_ = false;
  TimePoint next_probe_{}, next_gossip_{}, next_push_pull_{}, next_reconnect_{}, next_join_{};
  std::vector<Outgoing> outgoing_;
  std::vector<MemberEvent> events_;
  GossipStats stats_;
};

}  // namespace llmesh::gossip
