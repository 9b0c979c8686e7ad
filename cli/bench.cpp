// llmesh bench -m MODEL.gguf: prefill and decode speed, measured the way llama-bench does
// (pp: one batch of P prompt tokens on an empty cache; tg: N tokens generated one at a time
// from an empty cache). Reports medians over the repetitions.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "kernels/kernels.h"
#include "sampling/sampler.h"

namespace llmesh::cli {
namespace {

struct BenchOptions {
  EngineOptions engine;
  int prompt = 128, gen = 128, reps = 3;
  bool json = false, warmup = true;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int run_bench(BenchOptions& o) {
  if (o.prompt < 0 || o.gen < 0 || o.reps < 1) throw std::invalid_argument("-p, -n must be >= 0 and -r >= 1");
  if (o.engine.ctx <= 0) o.engine.ctx = std::max(o.prompt, o.gen) + 1;
  LoadedEngine e = load_engine(o.engine);
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
  sub->add_option("-p,--prompt", o->prompt, "Prompt tokens for the prefill test (0: skip)")->capture_default_str();
  sub->add_option("-n,--n-gen", o->gen, "Tokens for the decode test (0: skip)")->capture_default_str();
  sub->add_option("-r,--reps", o->reps, "Repetitions (the median is reported)")->capture_default_str();
  sub->add_flag("--json", o->json, "Print one JSON object with prefill_tok_s and decode_tok_s");
  sub->add_flag("!--no-warmup", o->warmup, "Skip the warm-up pass");
  return [o] { return run_bench(*o); };
}

}  // namespace llmesh::cli
