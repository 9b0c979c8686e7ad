#include "planner/planner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <openssl/evp.h>

#include "gossip/codec.h"

namespace llmesh::mesh::planner {

using nlohmann::json;

namespace {

// Totals above this are refused, so sums of a few of them never overflow.
constexpr std::uint64_t kMaxTotalBytes = 1ull << 60;

struct Cand {
  std::string id;
  std::uint64_t usable = 0;
  double gflops = 0;
  std::optional<LayerRange> pinned;
};

// Selection order: most usable memory, then fastest, then node id.
bool selection_less(const Cand& a, const Cand& b) {
  if (a.usable != b.usable) return a.usable > b.usable;
  if (a.gflops != b.gflops) return a.gflops > b.gflops;
  return a.id < b.id;
}

std::string range_text(LayerRange r) { return fmt::format("{}..{}", r.first, r.last); }

std::string short_id(const std::string& id) { return id.size() > 12 ? id.substr(0, 12) : id; }

struct Ctx {
  const ModelShape& shape;
  const PlanOptions& opts;
  const RttMatrix& rtt;
  std::uint32_t n = 0;
  std::uint64_t kv_per_layer = 0;
  std::vector<std::uint64_t> prefix;  // prefix[i]: weights + KV of layers [0, i)

  std::uint64_t layers_cost(std::uint32_t f, std::uint32_t l) const { return prefix[l] - prefix[f]; }
  // What a stage holding [f, l) needs: its layers (+KV), embeddings when first, head when last.
  std::uint64_t range_cost(std::uint32_t f, std::uint32_t l) const {
    std::uint64_t c = layers_cost(f, l);
    if (f == 0) c += shape.embed_bytes;
    if (l == n) c += shape.output_bytes;
    return c;
  }
  Stage stage(const std::string& node, std::uint32_t f, std::uint32_t l) const {
    return Stage{node, LayerRange{f, l}, range_cost(f, l), kv_per_layer * (l - f)};
  }
};

std::uint64_t usable_bytes(std::uint64_t free_bytes, const PlanOptions& o) {
  double frac = std::clamp(std::isfinite(o.memory_headroom_fraction) ? o.memory_headroom_fraction : 0.0,
                           0.0, 1.0);
  long double keep_frac = static_cast<long double>(free_bytes) * frac;
  std::uint64_t keep = keep_frac >= static_cast<long double>(free_bytes)
                           ? free_bytes
                           : static_cast<std::uint64_t>(keep_frac);
  std::uint64_t reserve = keep > free_bytes - std::min(free_bytes, o.memory_headroom_bytes)
                              ? free_bytes
                              : keep + o.memory_headroom_bytes;
  return free_bytes - std::min(free_bytes, reserve);
}

// Orders the chosen nodes into a chain: start from the node nearest `prev` (the stage before
// this segment) or, without one, from the first in selection order (most memory); then always
// the nearest remaining node by RTT, ties by selection order.
std::vector<Cand> chain(const Ctx& ctx, std::vector<Cand> chosen, const std::string* prev) {
  std::vector<Cand> out;
  auto take_nearest = [&](const std::string& from) {
    std::size_t best = 0;
    double best_ms = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < chosen.size(); ++i) {
      double ms = ctx.rtt.between(from, chosen[i].id, ctx.opts.default_rtt_ms);
      if (ms < best_ms) {
        best_ms = ms;
        best = i;
      }
    }
    out.push_back(std::move(chosen[best]));
    chosen.erase(chosen.begin() + static_cast<std::ptrdiff_t>(best));
  };
  if (prev) {
    take_nearest(*prev);
  } else {
    out.push_back(std::move(chosen.front()));
    chosen.erase(chosen.begin());
  }
  while (!chosen.empty()) take_nearest(out.back().id);
  return out;
}

// Splits [a, b) over the ordered nodes, each a non-empty contiguous range that fits its memory,
// as close as memory allows to shares proportional to min(memory share, speed share).
std::optional<std::vector<Stage>> split(const Ctx& ctx, std::uint32_t a, std::uint32_t b,
                                        const std::vector<Cand>& nodes) {
  const std::size_t k = nodes.size();
  if (k == 0 || b - a < k) return std::nullopt;
  auto fits = [&](std::size_t i, std::uint32_t f, std::uint32_t l) {
    return ctx.range_cost(f, l) <= nodes[i].usable;
  };
  // R[i]: the earliest layer nodes i..k-1 can cover up to b, each packing as much as it holds
  // (backwards from b), leaving at least one layer for each node before i.
  std::vector<std::uint32_t> R(k + 1);
  R[k] = b;
  for (std::size_t i = k; i-- > 0;) {
    std::uint32_t e = R[i + 1];
    std::uint32_t floor_s = a + static_cast<std::uint32_t>(i);
    if (e <= floor_s || !fits(i, e - 1, e)) return std::nullopt;
    std::uint32_t s = e - 1;
    while (s > floor_s && fits(i, s - 1, e)) --s;
    R[i] = s;
  }
  if (R[0] != a) return std::nullopt;

  // Target shares.
  double mem_sum = 0, spd_sum = 0;
  bool speed_known = true;
  for (const auto& c : nodes) {
    mem_sum += static_cast<double>(c.usable);
    spd_sum += c.gflops;
    if (!(c.gflops > 0)) speed_known = false;
  }
  std::vector<double> w(k);
  double w_sum = 0;
  for (std::size_t i = 0; i < k; ++i) {
    double mem = mem_sum > 0 ? static_cast<double>(nodes[i].usable) / mem_sum : 1.0 / k;
    double spd = speed_known && spd_sum > 0 ? nodes[i].gflops / spd_sum : mem;
    w[i] = std::min(mem, spd);
    w_sum += w[i];
  }
  const double seg = static_cast<double>(ctx.layers_cost(a, b));
  std::vector<Stage> out;
  std::uint32_t s = a;
  double cum = 0;
  bool ok = true;
  for (std::size_t i = 0; i + 1 < k; ++i) {
    cum += w_sum > 0 ? w[i] / w_sum : 1.0 / k;
    // The boundary whose cumulative cost is nearest the target (ties: the lower one).
    double target = cum * seg;
    std::uint32_t e_star = a;
    double best = std::numeric_limits<double>::infinity();
    for (std::uint32_t e = a; e <= b; ++e) {
      double d = std::fabs(static_cast<double>(ctx.layers_cost(a, e)) - target);
      if (d < best) {
        best = d;
        e_star = e;
      }
    }
    std::uint32_t lo = std::max<std::uint32_t>(s + 1, R[i + 1]);
    std::uint32_t cap = b - static_cast<std::uint32_t>(k - 1 - i);
    std::uint32_t hi = s;
    while (hi < cap && fits(i, s, hi + 1)) ++hi;
    if (lo > hi) {
      ok = false;
      break;
    }
    std::uint32_t e = std::clamp(e_star, lo, hi);
    out.push_back(ctx.stage(nodes[i].id, s, e));
    s = e;
  }
  if (ok && s < b && fits(k - 1, s, b)) {
    out.push_back(ctx.stage(nodes[k - 1].id, s, b));
    return out;
  }
  // Fallback: the packing that proved feasibility.
  out.clear();
  for (std::size_t i = 0; i < k; ++i) out.push_back(ctx.stage(nodes[i].id, R[i], R[i + 1]));
  return out;
}

// Places [a, b) on up to max_k nodes of `pool` (selection order).
std::optional<std::vector<Stage>> fill(const Ctx& ctx, std::uint32_t a, std::uint32_t b,
                                       const std::vector<Cand>& pool, std::size_t max_k,
                                       const std::string* prev) {
  std::size_t kmax = std::min<std::size_t>({max_k, pool.size(), static_cast<std::size_t>(b - a)});
  if (kmax == 0) return std::nullopt;
  const std::uint64_t need = ctx.range_cost(a, b);
  for (std::size_t step = 0; step < kmax; ++step) {
    std::size_t k = ctx.opts.prefer_fewer_stages ? step + 1 : kmax - step;
    std::vector<Cand> chosen(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(k));
    std::uint64_t have = 0;
    for (const auto& c : chosen) have += c.usable;
    if (have < need) continue;
    if (auto st = split(ctx, a, b, chain(ctx, std::move(chosen), prev))) return st;
  }
  return std::nullopt;
}

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}

std::string sha256_hex(const std::string& text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(text.data(), text.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("planner: SHA-256 failed");
  return hex(md, len);
}

// Validated inputs, or an error.
struct Prepared {
  std::string error;
  std::vector<Cand> cands;  // sorted by id
  std::uint64_t kv_per_layer = 0;
  std::vector<std::uint64_t> prefix;
};

Prepared prepare(const ModelShape& shape, std::span<const NodeCapacity> nodes,
                 const PlanOptions& opts) {
  Prepared p;
  auto fail = [&](std::string msg) {
    p.error = std::move(msg);
    return p;
  };
  if (shape.model.empty() || shape.model.size() > kMaxPlanString)
    return fail("model name must be 1.." + std::to_string(kMaxPlanString) + " bytes");
  if (shape.n_layer <= 0 || static_cast<std::uint64_t>(shape.n_layer) > gossip::kMaxLayers)
    return fail(fmt::format("n_layer {} out of range 1..{}", shape.n_layer, gossip::kMaxLayers));
  if (shape.layer_bytes.size() != static_cast<std::size_t>(shape.n_layer))
    return fail(fmt::format("layer_bytes has {} entries for {} layers", shape.layer_bytes.size(),
                            shape.n_layer));
  if (shape.ctx_tokens < 0 || shape.sessions < 0) return fail("ctx_tokens and sessions must be >= 0");
  if (opts.max_stages < 1) return fail("max_stages must be >= 1");
  // KV headroom per layer, overflow-checked.
  long double kv = static_cast<long double>(shape.kv_bytes_per_token_per_layer) * shape.ctx_tokens *
                   shape.sessions;
  if (kv > static_cast<long double>(kMaxTotalBytes)) return fail("KV headroom too large");
  p.kv_per_layer = shape.kv_bytes_per_token_per_layer * static_cast<std::uint64_t>(shape.ctx_tokens) *
                   static_cast<std::uint64_t>(shape.sessions);
  p.prefix.assign(shape.layer_bytes.size() + 1, 0);
  for (std::size_t i = 0; i < shape.layer_bytes.size(); ++i) {
    if (shape.layer_bytes[i] > kMaxTotalBytes) return fail(fmt::format("layer {} too large", i));
    p.prefix[i + 1] = p.prefix[i] + shape.layer_bytes[i] + p.kv_per_layer;
    if (p.prefix[i + 1] > kMaxTotalBytes) return fail("model too large");
  }
  if (shape.embed_bytes > kMaxTotalBytes || shape.output_bytes > kMaxTotalBytes)
    return fail("embedding or output bytes too large");
  std::set<std::string> seen;
  for (const auto& nc : nodes) {
    if (nc.id.empty() || nc.id.size() > gossip::kMaxIdLength)
      return fail("node id must be 1.." + std::to_string(gossip::kMaxIdLength) + " bytes");
    if (!seen.insert(nc.id).second) return fail("node " + short_id(nc.id) + " listed twice");
    if (!std::isfinite(nc.gflops) || nc.gflops < 0)
      return fail("node " + short_id(nc.id) + ": gflops must be a finite number >= 0");
    Cand c{nc.id, std::min(usable_bytes(nc.free_bytes, opts), kMaxTotalBytes), nc.gflops, nc.pinned};
    p.cands.push_back(std::move(c));
  }
  std::sort(p.cands.begin(), p.cands.end(),
            [](const Cand& a, const Cand& b) { return a.id < b.id; });
  return p;
}

struct Fixed {
  std::string node;
  LayerRange layers;
};

// The planner proper: `fixed` ranges (pins, and in replan the kept stages) stay; the gaps
// between them are filled from the other candidates.
PlanResult solve(const Ctx& ctx, const std::vector<Cand>& cands, std::vector<Fixed> fixed,
                 std::uint64_t epoch, std::vector<std::string> warnings) {
  PlanResult r;
  const std::uint32_t n = ctx.n;
  std::uint64_t available = 0;
  for (const auto& c : cands) available += c.usable;
  r.needed_bytes = ctx.range_cost(0, n);
  r.available_bytes = available;

  std::sort(fixed.begin(), fixed.end(), [](const Fixed& a, const Fixed& b) {
    return a.layers.first != b.layers.first ? a.layers.first < b.layers.first : a.node < b.node;
  });
  std::set<std::string> fixed_nodes;
  for (const auto& f : fixed) fixed_nodes.insert(f.node);
  std::vector<Cand> pool;
  for (const auto& c : cands)
    if (!fixed_nodes.count(c.id) && c.usable > 0) pool.push_back(c);
  std::sort(pool.begin(), pool.end(), selection_less);

  struct Gap {
    std::uint32_t a, b;
    const Fixed* before;
    const Fixed* after;
  };
  std::vector<Gap> gaps;
  std::uint32_t at = 0;
  const Fixed* before = nullptr;
  for (const auto& f : fixed) {
    if (f.layers.first > at) gaps.push_back({at, f.layers.first, before, &f});
    at = f.layers.last;
    before = &f;
  }
  if (at < n) gaps.push_back({at, n, before, nullptr});

  if (fixed.size() + gaps.size() > static_cast<std::size_t>(ctx.opts.max_stages)) {
    r.error = fmt::format("pinned ranges leave {} gaps: more than max_stages {}", gaps.size(),
                          ctx.opts.max_stages);
    return r;
  }
  std::vector<Stage> stages;
  for (const auto& f : fixed) stages.push_back(ctx.stage(f.node, f.layers.first, f.layers.last));
  std::size_t budget = static_cast<std::size_t>(ctx.opts.max_stages) - fixed.size();
  for (std::size_t g = 0; g < gaps.size(); ++g) {
    const Gap& gap = gaps[g];
    std::size_t later = gaps.size() - g - 1;
    auto st = fill(ctx, gap.a, gap.b, pool, budget - later, gap.before ? &gap.before->node : nullptr);
    if (!st) {
      std::uint64_t pool_bytes = 0;
      for (const auto& c : pool) pool_bytes += c.usable;
      if (fixed.empty()) {
        r.error = fmt::format(
            "model {} does not fit: needs {} (weights + KV headroom), the mesh has {} usable "
            "over {} node(s){}",
            ctx.shape.model, format_gib(r.needed_bytes), format_gib(available), cands.size(),
            available >= r.needed_bytes
                ? fmt::format(" but no {} of them can hold contiguous ranges",
                              std::min<std::size_t>(budget, pool.size()))
                : "");
      } else {
        std::string around;
        if (gap.before) around += " after node " + short_id(gap.before->node);
        if (gap.after) around += (around.empty() ? " before node " : " and before node ") +
                                 short_id(gap.after->node);
        r.needed_bytes = ctx.range_cost(gap.a, gap.b);
        r.available_bytes = pool_bytes;
        r.error = fmt::format(
            "layers {}..{}{} cannot be placed: they need {}, the unpinned nodes have {} usable",
            gap.a, gap.b, around, format_gib(r.needed_bytes), format_gib(pool_bytes));
      }
      return r;
    }
    for (auto& s : *st) {
      pool.erase(std::remove_if(pool.begin(), pool.end(), [&](const Cand& c) { return c.id == s.node; }),
                 pool.end());
      stages.push_back(std::move(s));
    }
    budget -= st->size();
  }
  std::sort(stages.begin(), stages.end(),
            [](const Stage& a, const Stage& b) { return a.layers.first < b.layers.first; });
  for (const auto& s : stages) {
    for (const auto& c : cands) {
      if (c.id != s.node) continue;
      if (!(c.gflops > 0) && stages.size() > 1)
        warnings.push_back("node " + short_id(c.id) + " has no measured speed; its share follows memory only");
      if (s.bytes > c.usable)
        warnings.push_back(fmt::format("node {}: layers {} need {}, it has {} usable", short_id(c.id),
                                       range_text(s.layers), format_gib(s.bytes), format_gib(c.usable)));
    }
  }
  Plan p;
  p.epoch = epoch;
  p.model = ctx.shape.model;
  p.n_layer = n;
  p.stages = std::move(stages);
  if (warnings.size() > kMaxPlanWarnings) warnings.resize(kMaxPlanWarnings);
  p.warnings = std::move(warnings);
  p.digest = plan_digest(p);
  r.plan = std::move(p);
  return r;
}

// Pinned ranges, validated: inside the model, no overlaps (the error names both nodes).
std::optional<std::string> collect_pins(const std::vector<Cand>& cands, std::uint32_t n,
                                        std::vector<Fixed>& out) {
  for (const auto& c : cands) {
    if (!c.pinned) continue;
    LayerRange r = *c.pinned;
    if (r.first >= r.last || r.last > n)
      return fmt::format("node {}: pinned layers {} are not a non-empty range inside 0..{}",
                         short_id(c.id), range_text(r), n);
    out.push_back({c.id, r});
  }
  std::sort(out.begin(), out.end(), [](const Fixed& a, const Fixed& b) {
    return a.layers.first != b.layers.first ? a.layers.first < b.layers.first : a.node < b.node;
  });
  for (std::size_t i = 1; i < out.size(); ++i) {
    // Sorted by first: an overlap shows up against the previous range with the largest end.
    for (std::size_t j = 0; j < i; ++j) {
      if (out[j].layers.last > out[i].layers.first)
        return fmt::format("pinned ranges overlap: node {} holds {}, node {} holds {}",
                           short_id(out[j].node), range_text(out[j].layers), short_id(out[i].node),
                           range_text(out[i].layers));
    }
  }
  return std::nullopt;
}

}  // namespace

std::vector<NodeCapacity> candidates_from(std::span<const gossip::Member> members) {
  std::vector<NodeCapacity> out;
  for (const auto& m : members) {
    if (m.status != gossip::MemberStatus::alive || !m.has_state || m.state.role != gossip::Role::server)
      continue;
    const auto& hw = m.state.hardware;
    out.push_back({m.id, hw.free_ram_bytes,
                   std::isfinite(hw.matmul_gflops) && hw.matmul_gflops > 0 ? hw.matmul_gflops : 0.0,
                   std::nullopt});
  }
  std::sort(out.begin(), out.end(), [](const NodeCapacity& a, const NodeCapacity& b) { return a.id < b.id; });
  return out;
}

void RttMatrix::set(const std::string& a, const std::string& b, double ms) {
  if (!std::isfinite(ms) || ms < 0) return;
  auto key = a < b ? std::make_pair(a, b) : std::make_pair(b, a);
  auto it = ms_.find(key);
  if (it == ms_.end() || ms < it->second) ms_[key] = ms;
}

std::optional<double> RttMatrix::get(const std::string& a, const std::string& b) const {
  if (a == b) return 0.0;
  auto it = ms_.find(a < b ? std::make_pair(a, b) : std::make_pair(b, a));
  if (it == ms_.end()) return std::nullopt;
  return it->second;
}

double RttMatrix::between(const std::string& a, const std::string& b, double fallback_ms) const {
  return get(a, b).value_or(fallback_ms);
}

std::string format_gib(std::uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30)) return fmt::format("{:.1f} GiB", b / static_cast<double>(1ull << 30));
  if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", b / static_cast<double>(1ull << 20));
  return fmt::format("{:.1f} KiB", b / 1024.0);
}

std::string plan_digest(const Plan& p) {
  // Strings are length-prefixed so that no two plans share a canonical text.
  std::string text = fmt::format("llmesh-plan-v1\n{}\n{}:{}\n{}\n", p.epoch, p.model.size(), p.model,
                                 p.n_layer);
  for (const auto& s : p.stages)
    text += fmt::format("{}:{} {} {} {} {}\n", s.node.size(), s.node, s.layers.first, s.layers.last,
                        s.bytes, s.kv_bytes);
  return sha256_hex(text);
}

PlanResult plan(const ModelShape& shape, std::span<const NodeCapacity> nodes, const RttMatrix& rtt,
                const PlanOptions& options, std::uint64_t epoch) {
  Prepared prep = prepare(shape, nodes, options);
  if (!prep.error.empty()) return PlanResult{std::nullopt, prep.error};
  Ctx ctx{shape, options, rtt, static_cast<std::uint32_t>(shape.n_layer), prep.kv_per_layer,
          std::move(prep.prefix)};
  std::vector<Fixed> pins;
  if (auto err = collect_pins(prep.cands, ctx.n, pins)) return PlanResult{std::nullopt, *err};
  return solve(ctx, prep.cands, std::move(pins), epoch, {});
}

PlanResult replan(const Plan& current, const ModelShape& shape, std::span<const NodeCapacity> nodes,
                  const RttMatrix& rtt, const PlanOptions& options) {
  const std::uint64_t next_epoch =
      current.epoch == std::numeric_limits<std::uint64_t>::max() ? current.epoch : current.epoch + 1;
  PlanResult fresh = plan(shape, nodes, rtt, options, next_epoch);
  PlanResult chosen = fresh;
  Prepared prep = prepare(shape, nodes, options);
  if (prep.error.empty() && current.model == shape.model &&
      current.n_layer == static_cast<std::uint32_t>(shape.n_layer)) {
    Ctx ctx{shape, options, rtt, static_cast<std::uint32_t>(shape.n_layer), prep.kv_per_layer,
            std::move(prep.prefix)};
    std::vector<Fixed> fixed;
    if (!collect_pins(prep.cands, ctx.n, fixed)) {
      std::vector<std::string> warnings;
      for (const auto& s : current.stages) {
        auto c = std::find_if(prep.cands.begin(), prep.cands.end(),
                              [&](const Cand& c) { return c.id == s.node; });
        if (c == prep.cands.end() || c->pinned) continue;
        if (s.layers.first >= s.layers.last || s.layers.last > ctx.n) continue;
        // Against the pins and the stages already kept (a malformed `current` may overlap).
        bool overlaps = false;
        for (const auto& f : fixed)
          if (f.layers.first < s.layers.last && s.layers.first < f.layers.last) overlaps = true;
        if (overlaps || ctx.range_cost(s.layers.first, s.layers.last) > c->usable) continue;
        fixed.push_back({s.node, s.layers});
      }
      PlanResult sticky = solve(ctx, prep.cands, std::move(fixed), next_epoch, std::move(warnings));
      if (sticky && (!fresh || !options.prefer_fewer_stages ||
                     sticky.plan->stages.size() <= fresh.plan->stages.size()))
        chosen = std::move(sticky);
    }
  }
  if (!chosen) return chosen;
  if (chosen.plan->model == current.model && chosen.plan->n_layer == current.n_layer &&
      chosen.plan->stages == current.stages) {
    Plan same = current;
    same.warnings = chosen.plan->warnings;
    same.digest = plan_digest(same);
    chosen.plan = std::move(same);
  }
  return chosen;
}

std::vector<Movement> diff(const Plan& a, const Plan& b) {
  std::map<std::string, std::pair<std::optional<LayerRange>, std::optional<LayerRange>>> held;
  for (const auto& s : a.stages) held[s.node].first = s.layers;
  for (const auto& s : b.stages) held[s.node].second = s.layers;
  const bool same_model = a.model == b.model;
  // x minus y, as up to two ranges.
  auto minus = [](LayerRange x, std::optional<LayerRange> y) {
    std::vector<LayerRange> out;
    if (!y || y->last <= x.first || x.last <= y->first) {
      out.push_back(x);
      return out;
    }
    if (x.first < y->first) out.push_back({x.first, y->first});
    if (y->last < x.last) out.push_back({y->last, x.last});
    return out;
  };
  std::vector<Movement> out;
  for (const auto& [node, ranges] : held) {
    Movement m{node, {}, {}};
    auto [had, has] = ranges;
    if (!same_model) {
      if (has) m.fetch.push_back(*has);
      if (had) m.drop.push_back(*had);
    } else {
      if (has) m.fetch = minus(*has, had);
      if (had) m.drop = minus(*had, has);
    }
    if (!m.fetch.empty() || !m.drop.empty()) out.push_back(std::move(m));
  }
  return out;
}

void validate_plan(const Plan& p) {
  auto bad = [](const std::string& why) { throw PlanError("plan: " + why); };
  if (p.model.empty() || p.model.size() > kMaxPlanString) bad("model name must be 1..256 bytes");
  if (p.n_layer == 0 || p.n_layer > gossip::kMaxLayers) bad("n_layer out of range");
  if (p.stages.empty() || p.stages.size() > kMaxPlanStages) bad("stage count out of range");
  if (p.stages.size() > p.n_layer) bad("more stages than layers");
  if (p.warnings.size() > kMaxPlanWarnings) bad("too many warnings");
  for (const auto& w : p.warnings)
    if (w.size() > kMaxPlanString) bad("warning too long");
  std::set<std::string> nodes;
  std::uint32_t at = 0;
  for (std::size_t i = 0; i < p.stages.size(); ++i) {
    const Stage& s = p.stages[i];
    if (s.node.empty() || s.node.size() > gossip::kMaxIdLength) bad(fmt::format("stage {}: bad node id", i));
    if (!nodes.insert(s.node).second) bad(fmt::format("stage {}: node holds two stages", i));
    if (s.layers.first != at)
      bad(fmt::format("stage {}: starts at layer {}, expected {} (gap or overlap)", i, s.layers.first, at));
    if (s.layers.last <= s.layers.first || s.layers.last > p.n_layer)
      bad(fmt::format("stage {}: layers {} not a non-empty range inside 0..{}", i,
                      range_text(s.layers), p.n_layer));
    if (s.kv_bytes > s.bytes) bad(fmt::format("stage {}: kv_bytes exceed bytes", i));
    at = s.layers.last;
  }
  if (at != p.n_layer) bad(fmt::format("stages end at layer {}, model has {}", at, p.n_layer));
  if (p.digest != plan_digest(p)) bad("digest does not match the plan");
}

std::vector<std::uint8_t> encode_plan(const Plan& p) {
  json stages = json::array();
  for (const auto& s : p.stages)
    stages.push_back({{"id", gossip::encode_id(s.node)},
                      {"f", s.layers.first},
                      {"l", s.layers.last},
                      {"b", s.bytes},
                      {"k", s.kv_bytes}});
  json j = {{"v", 1}, {"e", p.epoch}, {"m", p.model}, {"n", p.n_layer},
            {"s", std::move(stages)}, {"d", p.digest}, {"w", p.warnings}};
  return json::to_msgpack(j);
}

Plan decode_plan(std::span<const std::uint8_t> bytes) {
  gossip::ParseLimits limits;
  limits.max_bytes = 256 * 1024;
  limits.max_depth = 4;
  limits.max_elements = 8 * kMaxPlanStages + 2 * kMaxPlanWarnings + 64;
  limits.max_string = 1024;
  Plan p;
  try {
    json j = gossip::parse_msgpack(bytes, limits);
    const json& m = gossip::require_map(j, "plan");
    if (gossip::read_uint(m, "v", 1000, 0, true) != 1) throw PlanError("plan: unsupported version");
    p.epoch = gossip::read_uint(m, "e", std::numeric_limits<std::uint64_t>::max(), 0, true);
    p.model = gossip::read_string(m, "m", kMaxPlanString, true);
    p.n_layer = static_cast<std::uint32_t>(gossip::read_uint(m, "n", gossip::kMaxLayers, 0, true));
    p.digest = gossip::read_string(m, "d", 64, true);
    const json* st = gossip::read_array(m, "s", kMaxPlanStages);
    if (!st) throw PlanError("plan: no stages");
    for (const auto& sv : *st) {
      const json& so = gossip::require_map(sv, "stage");
      Stage s;
      s.node = gossip::read_id(so, "id", true);
      s.layers.first = static_cast<std::uint32_t>(gossip::read_uint(so, "f", gossip::kMaxLayers, 0, true));
      s.layers.last = static_cast<std::uint32_t>(gossip::read_uint(so, "l", gossip::kMaxLayers, 0, true));
      s.bytes = gossip::read_uint(so, "b", kMaxTotalBytes, 0, true);
      s.kv_bytes = gossip::read_uint(so, "k", kMaxTotalBytes, 0, false);
      p.stages.push_back(std::move(s));
    }
    if (const json* w = gossip::read_array(m, "w", kMaxPlanWarnings)) {
      for (const auto& wv : *w) {
        if (!wv.is_string() || wv.get_ref<const std::string&>().size() > kMaxPlanString)
          throw PlanError("plan: bad warning");
        p.warnings.push_back(wv.get<std::string>());
      }
    }
  } catch (const gossip::WireError& e) {
    throw PlanError(std::string("plan: ") + e.what());
  }
  validate_plan(p);
  return p;
}

json to_json(const Plan& p) {
  json stages = json::array();
  for (const auto& s : p.stages)
    stages.push_back({{"node", s.node},
                      {"first", s.layers.first},
                      {"last", s.layers.last},
                      {"layers", s.layers.last - s.layers.first},
                      {"bytes", s.bytes},
                      {"kv_bytes", s.kv_bytes}});
  return {{"epoch", p.epoch}, {"model", p.model},   {"n_layer", p.n_layer},
          {"digest", p.digest}, {"stages", stages}, {"warnings", p.warnings}};
}

}  // namespace llmesh::mesh::planner
