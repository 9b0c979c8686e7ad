// llmesh_serve_inprocess: the serving workload of bench/serve_bench.py run straight on the
// scheduler, without HTTP: N concurrent requests, each a distinct prompt, greedy, with EOS
// banned so every request generates exactly max_tokens. Prints one JSON line per
// concurrency level with time to first token and aggregate tokens per second, so the HTTP
// path's overhead can be measured against it.
//   llmesh_serve_inprocess -m MODEL.gguf --concurrency 1,4,16 --max-tokens 64 [-t THREADS]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <sstream>

#include "cli/engine_options.h"
#include "scheduler/scheduler.h"
#include "tokenizer/tokenizer.h"

using namespace llmesh;
using Clock = std::chrono::steady_clock;

namespace {

struct Sink : GenerationSink {
  Clock::time_point start, first;
  int tokens = 0;
  bool done = false;
  std::mutex* mu;
  std::condition_variable* cv;
  int* remaining;
  bool on_token(const TokenEvent&) override {
    if (tokens++ == 0) first = Clock::now();
    return true;
  }
  void on_done(const GenerationResult&) override {
    std::lock_guard<std::mutex> l(*mu);
    done = true;
    --*remaining;
    cv->notify_all();
  }
};

}  // namespace

// The prompt text of request i (serve_bench.py sends the same).
std::string bench_prompt(int i) {
  std::ostringstream s;
  s << "Request " << i << ": once upon a time, in a small village by the sea, there lived an old "
       "fisherman who told stories to the children every evening about";
  return s.str();
}

int main(int argc, char** argv) {
  CLI::App app{"Scheduler throughput without HTTP (companion of bench/serve_bench.py)"};
  cli::EngineOptions eo;
  cli::add_engine_options(&app, eo);
  std::string levels = "1,4,16";
  int max_tokens = 64, reps = 1;
  app.add_option("--concurrency", levels, "Comma-separated concurrency levels");
  app.add_option("--max-tokens", max_tokens, "Tokens generated per request");
  app.add_option("--reps", reps, "Runs per level");
  CLI11_PARSE(app, argc, argv);
  std::vector<int> cs;
  for (std::stringstream ss(levels); ss.good();) {
    std::string x;
    std::getline(ss, x, ',');
    if (!x.empty()) cs.push_back(std::stoi(x));
  }
  const int max_c = *std::max_element(cs.begin(), cs.end());
  cli::LoadedEngine e = cli::load_engine(eo, max_c);
  auto tok = Tokenizer::from_gguf(e.model->file());
  LocalBatchModel bm(*e.forward);
  SchedulerOptions so;
  so.n_parallel = max_c;
  so.max_queue = 0;
  so.step_tokens = eo.batch;
  so.prefix_reuse = false;  // every run starts cold, like distinct HTTP conversations
  Scheduler sched(bm, so);
  int serial = 0;
  for (int c : cs) {
    for (int rep = 0; rep < reps; rep++) {
      std::mutex mu;
      std::condition_variable cv;
      int remaining = c;
      std::vector<std::shared_ptr<Sink>> sinks;
      auto t0 = Clock::now();
      for (int i = 0; i < c; i++) {
        GenerationRequest r;
        r.prompt = tok->encode(bench_prompt(serial++), true, true);
        r.sampling.temperature = 0;
        r.max_tokens = max_tokens;
        if (tok->eos() >= 0) r.logit_bias.emplace_back(tok->eos(), -100.0f);
        auto s = std::make_shared<Sink>();
        s->mu = &mu;
        s->cv = &cv;
        s->remaining = &remaining;
        s->start = Clock::now();
        sinks.push_back(s);
        sched.submit(std::move(r), s);
      }
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return remaining == 0; });
      }
      double wall = std::chrono::duration<double>(Clock::now() - t0).count();
      std::vector<double> ttft;
      int total = 0;
      for (auto& s : sinks) {
        ttft.push_back(std::chrono::duration<double, std::milli>(s->first - s->start).count());
        total += s->tokens;
      }
      std::sort(ttft.begin(), ttft.end());
      nlohmann::json j = {{"concurrency", c}, {"tokens", total}, {"wall_s", wall},
                          {"agg_tok_s", total / wall}, {"ttft_ms_median", ttft[ttft.size() / 2]},
                          {"ttft_ms_max", ttft.back()}};
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
