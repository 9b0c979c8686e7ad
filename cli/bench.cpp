// llmesh bench -m MODEL.gguf: prefill and decode speed, measured the way llama-bench does
// (pp: one batch of P prompt tokens on an empty cache; tg: N tokens generated one at a time
// from an empty cache). Reports medians over the repetitions.
//
// With speculative options (--draft MODEL, --spec ngram, --spec-accept LIST) it measures
// decode through the Scheduler instead (one greedy request of -n tokens after a short text
// prompt, the path `llmesh run` and the server take): plain decoding against the proposer, and
// with --spec-accept against the proposer forced to each acceptance rate
// (engine/speculative/forced_draft.h: a benchmarking aid for random-weight models). Each rep
// measures every configuration once, in a rotated order.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/moe_shard_options.h"
#include "cli/spec_options.h"
#include "kernels/kernels.h"
#include "sampling/sampler.h"
#include "scheduler/scheduler.h"
#include "speculative/forced_draft.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::cli {
namespace {

struct BenchOptions {
  EngineOptions engine;
  int prompt = 128, gen = 128, reps = 3;
  bool json = false, warmup = true;
  SpecCliOptions spec;
  MoeShardOptions moe;
  std::string spec_accept;  // comma list of forced acceptance rates
  std::string spec_prompt = "Once upon a time, in a small village by the sea, there lived";
};

// A line of /proc/self/status in bytes (VmRSS: resident now, VmHWM: the peak); 0 elsewhere.
uint64_t process_memory(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::strtoull(line.c_str() + std::strlen(key), nullptr, 10) * 1024;
  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<double> parse_rates(const std::string& list) {
  std::vector<double> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    double a;
    try {
      size_t used = 0;
      a = std::stod(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw std::invalid_argument(fmt::format("--spec-accept '{}': expected rates like 0,0.5,0.9,1", list));
    }
    if (a < 0 || a > 1) throw std::invalid_argument(fmt::format("--spec-accept: {} is not in [0, 1]", a));
    out.push_back(a);
  }
  if (out.empty()) throw std::invalid_argument("--spec-accept: no rates given");
  return out;
}

// One greedy request through a fresh scheduler (its slot starts empty: no prefix reuse).
struct SpecRun {
  double tok_s = 0;
  std::vector<int32_t> tokens;
  SchedulerStats stats;
};

struct CollectSink : GenerationSink {
  std::vector<int32_t> tokens;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<GenerationResult> result;
  bool on_token(const TokenEvent& ev) override {
    tokens.push_back(ev.token);
    return true;
  }
  void on_done(const GenerationResult& r) override {
    std::lock_guard lk(mu);
    result = r;
    cv.notify_all();
  }
};

SpecRun spec_run(BatchModel& bm, const std::vector<int32_t>& prompt, int n, int batch, DraftSource* draft,
                 const WindowOptions& window) {
  SchedulerOptions so;
  so.n_parallel = 1;
  so.max_queue = 0;
  so.step_tokens = batch;
  so.draft = draft;
  so.window = window;
  GenerationRequest req;
  req.prompt = prompt;
  req.sampling.temperature = 0;
  req.max_tokens = n;  // no stop tokens: exactly n
  auto sink = std::make_shared<CollectSink>();
  SpecRun out;
  {
    Scheduler s(bm, so);
    s.submit(req, sink);
    std::unique_lock lk(sink->mu);
    sink->cv.wait(lk, [&] { return sink->result.has_value(); });
    out.stats = s.stats();
  }
  const GenerationResult& r = *sink->result;
  if (r.finish == FinishReason::Error) throw std::runtime_error("generation failed: " + r.error);
  out.tokens = sink->tokens;
  // As `llmesh run`: the first token comes with the prompt, the rest took first -> last token.
  const double s = std::chrono::duration<double>(r.finished - r.first_token).count();
  out.tok_s = out.tokens.size() > 1 ? (out.tokens.size() - 1) / std::max(s, 1e-9) : 0;
  return out;
}

int run_spec_bench(BenchOptions& o) {
  if (o.gen < 2 || o.reps < 1) throw std::invalid_argument("speculative bench: -n must be >= 2 and -r >= 1");
  if (!o.spec.enabled())
    throw std::invalid_argument("--spec-accept needs a proposer to force: --draft MODEL or --spec ngram");
  const std::vector<double> rates = o.spec_accept.empty() ? std::vector<double>{} : parse_rates(o.spec_accept);
  EngineOptions eo = o.engine;
  if (eo.ctx <= 0) eo.ctx = o.gen + 512;  // room for the prompt (checked below)
  LoadedEngine e = load_engine(eo);
  std::vector<int32_t> prompt;
  try {
    prompt = Tokenizer::from_gguf(e.model->file())->encode(o.spec_prompt, true, false);
  } catch (const std::exception&) {
    prompt.clear();
  }
  if (prompt.empty()) prompt = {1, 450, 1824};  // no usable tokenizer: a fixed short prompt
  const int prompt_len = static_cast<int>(prompt.size());
  const ModelConfig& cfg = e.model->config();
  const int n_ctx = e.cache->n_ctx();
  if (prompt_len + o.gen > n_ctx)
    throw std::invalid_argument(fmt::format("prompt {} + -n {} exceeds the context {}", prompt_len, o.gen, n_ctx));
  o.spec.fetch_cache = o.engine.fetch_cache;
  SpecSetup spec = make_spec(o.spec, *e.model, e.pool.get(), o.engine.threads, 1, n_ctx);
  LocalBatchModel bm(*e.forward);

  // The reference: a plain greedy run (also the warm-up), then a short warm-up of the proposer.
  const SpecRun ref = spec_run(bm, prompt, o.gen, o.engine.batch, nullptr, spec.window);
  if (o.warmup) spec_run(bm, prompt, std::min(o.gen, 16), o.engine.batch, spec.source.get(), spec.window);

  struct Config {
    std::string label;
    double rate;  // < 0: plain (-2) or the real proposer (-1)
    std::vector<double> tok_s;
    uint64_t windows = 0, drafted = 0, accepted = 0, spec_tokens = 0, steps = 0;
    bool same = true;
  };
  std::vector<Config> configs;
  auto add = [&](std::string label, double rate) {
    configs.emplace_back();
    configs.back().label = std::move(label);
    configs.back().rate = rate;
  };
  add("no speculation", -2);
  add(spec.source->name(), -1);
  for (double a : rates) add(fmt::format("forced {:g}", a), a);

  for (int r = 0; r < o.reps; ++r) {
    for (size_t i = 0; i < configs.size(); ++i) {
      Config& c = configs[(i + r) % configs.size()];
      std::unique_ptr<ForcedAcceptanceDraft> forced;
      DraftSource* src = nullptr;
      if (c.rate >= 0) {
        // A seed per rep: the reps draw different accept/reject sequences (64 tokens are few draws).
        forced = std::make_unique<ForcedAcceptanceDraft>(*spec.source, ref.tokens, prompt_len, c.rate, cfg.n_vocab,
                                                         0x5eed + 7919 * static_cast<uint64_t>(r));
        src = forced.get();
      } else if (c.rate == -1) {
        src = spec.source.get();
      }
      SpecRun run = spec_run(bm, prompt, o.gen, o.engine.batch, src, spec.window);
      c.tok_s.push_back(run.tok_s);
      c.windows += run.stats.spec_windows;
      c.drafted += run.stats.spec_drafted;
      c.accepted += run.stats.spec_accepted;
      c.spec_tokens += run.stats.spec_tokens;
      c.steps += run.stats.steps;
      c.same = c.same && run.tokens == ref.tokens;
    }
  }
  const double plain = median(configs[0].tok_s);
  const char* isa = kernels::isa_name(kernels::active_isa());
  auto ratio_of_reps = [&](const Config& c) {
    std::vector<double> v;
    for (size_t i = 0; i < c.tok_s.size(); ++i) v.push_back(c.tok_s[i] / configs[0].tok_s[i]);
    return median(v);
  };
  if (o.json) {
    nlohmann::json j;
    j["model"] = o.engine.model;
    j["proposer"] = spec.description;
    j["threads"] = e.pool->size();
    j["prompt_tokens"] = prompt_len;
    j["decode_tokens"] = o.gen;
    j["reps"] = o.reps;
    j["draft_max"] = spec.window.draft_max;
    j["adaptive"] = spec.window.adaptive;
    j["isa"] = isa;
    j["load_s"] = e.load_seconds;
    j["rows"] = nlohmann::json::array();
    for (const Config& c : configs) {
      nlohmann::json row;
      row["config"] = c.label;
      row["forced_acceptance"] = c.rate >= 0 ? nlohmann::json(c.rate) : nlohmann::json(nullptr);
      row["speculative"] = c.rate != -2;
      row["decode_tok_s"] = median(c.tok_s);
      row["decode_runs"] = c.tok_s;
      row["ratio_vs_plain"] = median(c.tok_s) / plain;
      row["ratio_vs_plain_median_of_reps"] = ratio_of_reps(c);
      row["windows"] = c.windows;
      row["drafted"] = c.drafted;
      row["accepted"] = c.accepted;
      row["acceptance"] = c.drafted ? double(c.accepted) / c.drafted : 0.0;
      row["tokens_per_verification"] = c.windows ? double(c.spec_tokens) / c.windows : 0.0;
      row["forward_steps_per_run"] = double(c.steps) / c.tok_s.size();
      row["same_tokens"] = c.same;
      j["rows"].push_back(row);
    }
    std::puts(j.dump(2).c_str());
  } else {
    fmt::print("model: {} ({}, {} layers)\n", o.engine.model, cfg.arch_name, cfg.n_layer);
    fmt::print("proposer: {}\n", spec.description);
    fmt::print("threads: {}  kernels: {}  reps: {}  greedy decode of {} tokens after a {}-token prompt, through "
               "the scheduler\n",
               e.pool->size(), isa, o.reps, o.gen, prompt_len);
    fmt::print("| config | tok/s | vs plain | acceptance | tokens/verification | windows/run | same tokens |\n");
    fmt::print("|---|---|---|---|---|---|---|\n");
    for (const Config& c : configs) {
      const double med = median(c.tok_s);
      if (c.rate == -2) {
        fmt::print("| {} | {:.2f} | 1.00x | - | - | - | {} |\n", c.label, med, c.same ? "yes" : "NO");
        continue;
      }
      fmt::print("| {} | {:.2f} | {:.2f}x | {:.0f}% | {:.2f} | {:.1f} | {} |\n", c.label, med, ratio_of_reps(c),
                 c.drafted ? 100.0 * c.accepted / c.drafted : 0.0,
                 c.windows ? double(c.spec_tokens) / c.windows : 0.0, double(c.windows) / c.tok_s.size(),
                 c.same ? "yes" : "NO");
    }
  }
  return 0;
}

int run_bench(BenchOptions& o) {
  if (o.spec.enabled() || !o.spec_accept.empty()) return run_spec_bench(o);
  if (o.prompt < 0 || o.gen < 0 || o.reps < 1) throw std::invalid_argument("-p, -n must be >= 0 and -r >= 1");
  if (o.engine.ctx <= 0) o.engine.ctx = std::max(o.prompt, o.gen) + 1;
  std::optional<moe::MoePlan> plan = apply_moe_shard(o.moe, o.engine);
  LoadedEngine e = load_engine(o.engine);
  if (plan) check_moe_shard_model(*plan, o.moe, *e.model);
  const ModelConfig& cfg = e.model->config();
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> pick(0, cfg.n_vocab - 1);
  using Clock = std::chrono::steady_clock;

  auto prefill = [&] {
    e.cache->clear(0);
    for (int i = 0; i < o.prompt; i += o.engine.batch) {
      Batch b;
      int end = std::min(o.prompt, i + o.engine.batch);
      for (int j = i; j < end; ++j) b.add(pick(rng), j, 0, j + 1 == o.prompt);
      e.forward->run(b);
    }
  };
  auto decode = [&] {
    e.cache->clear(0);
    int32_t tok = pick(rng);
    for (int i = 0; i < o.gen; ++i) {
      Batch b;
      b.add(tok, i, 0, true);
      auto logits = e.forward->run(b);
      tok = argmax(logits.data(), cfg.n_vocab);
    }
  };
  if (o.warmup) {  // touch the weights once (page cache, mmap faults) and warm the pool
    int p = o.prompt, g = o.gen;
    o.prompt = std::min(p, 16);
    o.gen = std::min(g, 4);
    if (o.prompt > 0) prefill();
    if (o.gen > 0) decode();
    o.prompt = p;
    o.gen = g;
  }
  std::vector<double> pp, tg;
  for (int r = 0; r < o.reps; ++r) {
    if (o.prompt > 0) {
      auto t = Clock::now();
      prefill();
      pp.push_back(o.prompt / std::chrono::duration<double>(Clock::now() - t).count());
    }
    if (o.gen > 0) {
      auto t = Clock::now();
      decode();
      tg.push_back(o.gen / std::chrono::duration<double>(Clock::now() - t).count());
    }
  }
  double pp_med = pp.empty() ? 0 : median(pp), tg_med = tg.empty() ? 0 : median(tg);
  double wbytes = e.model->weight_bytes_per_token();
  const char* isa = kernels::isa_name(kernels::active_isa());
  if (o.json) {
    nlohmann::json j;
    j["model"] = o.engine.model;
    j["threads"] = e.pool->size();
    j["prompt_tokens"] = o.prompt;
    j["decode_tokens"] = o.gen;
    j["reps"] = o.reps;
    j["prefill_tok_s"] = pp_med;
    j["decode_tok_s"] = tg_med;
    j["prefill_runs"] = pp;
    j["decode_runs"] = tg;
    j["weight_bytes_per_token"] = wbytes;
    j["decode_weight_gb_s"] = wbytes * tg_med / 1e9;
    j["isa"] = isa;
    j["load_s"] = e.load_seconds;
    j["rss_bytes"] = process_memory("VmRSS:");
    j["peak_rss_bytes"] = process_memory("VmHWM:");
    if (plan) j["moe_shard"] = {{"plan", o.moe.plan}, {"shard", o.moe.shard}, {"digest", plan->digest()}};
    std::puts(j.dump(2).c_str());
  } else {
    fmt::print("model: {} ({}, {} layers, {:.1f} MiB read per token)\n", o.engine.model, cfg.arch_name,
               cfg.n_layer, wbytes / 1048576.0);
    fmt::print("threads: {}  kernels: {}  reps: {}\n", e.pool->size(), isa, o.reps);
    fmt::print("| test   |        tok/s |\n|--------|--------------|\n");
    if (o.prompt > 0) fmt::print("| pp{:<4} | {:12.2f} |\n", o.prompt, pp_med);
    if (o.gen > 0) fmt::print("| tg{:<4} | {:12.2f} |  ({:.2f} GB/s of weights)\n", o.gen, tg_med, wbytes * tg_med / 1e9);
  }
  return 0;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  auto* sub = app.add_subcommand("bench", "Measure prefill and decode tokens/s (like llama-bench)");
  add_engine_options(sub, o->engine);
  add_moe_shard_options(sub, o->moe);
  sub->add_option("-p,--prompt", o->prompt, "Prompt tokens for the prefill test (0: skip)")->capture_default_str();
  sub->add_option("-n,--n-gen", o->gen, "Tokens for the decode test (0: skip)")->capture_default_str();
  sub->add_option("-r,--reps", o->reps, "Repetitions (the median is reported)")->capture_default_str();
  sub->add_flag("--json", o->json, "Print one JSON object with prefill_tok_s and decode_tok_s");
  sub->add_flag("!--no-warmup", o->warmup, "Skip the warm-up pass");
  add_spec_options(sub, o->spec);
  sub->add_option("--spec-accept", o->spec_accept,
                  "Benchmarking aid for random-weight models: also measure the proposer forced to these per-token "
                  "acceptance rates (comma list, e.g. 0,0.5,0.9,1), against the target's own greedy tokens")
      ->group("Speculative decoding");
  sub->add_option("--spec-prompt", o->spec_prompt, "Prompt of the speculative decode test")
      ->capture_default_str()
      ->group("Speculative decoding");
  return [o] { return run_bench(*o); };
}

}  // namespace llmesh::cli
