// llmesh run -m MODEL.gguf -p PROMPT: generate text on this machine, streamed to stdout.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/spec_options.h"
#include "sampling/sampler.h"
#include "scheduler/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace llmesh::cli {
namespace {

struct RunOptions {
  EngineOptions engine;
  std::string prompt, prompt_file;
  int n_predict = 256;
  SamplingParams sampling;
  int64_t seed = -1;
  bool ignore_eos = false, special = false, json = false, no_echo = false;
  SpecCliOptions spec;
};

using Clock = std::chrono::steady_clock;

int run_generate(RunOptions& o) {
  if (!o.prompt_file.empty()) {
    std::ifstream in(o.prompt_file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read prompt file " + o.prompt_file);
    std::stringstream ss;
    ss << in.rdbuf();
    o.prompt = ss.str();
  }
  o.sampling.seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : std::random_device{}();
  if (auto err = o.sampling.validate(); !err.empty()) throw std::invalid_argument(err);

  LoadedEngine e = load_engine(o.engine);
  const ModelConfig& cfg = e.model->config();
  auto tok = Tokenizer::from_gguf(e.model->file());
  std::vector<int32_t> ids = tok->encode(o.prompt, /*add_special=*/true, /*parse_special=*/true);
  if (ids.empty()) {
    if (tok->bos() < 0) throw std::invalid_argument("the prompt is empty and the model has no BOS token");
    ids.push_back(tok->bos());
  }
  const int n_ctx = e.cache->n_ctx();
  if (static_cast<int>(ids.size()) >= n_ctx)
    throw std::invalid_argument(fmt::format("the prompt has {} tokens but the context holds {} (raise --ctx)",
                                            ids.size(), n_ctx));
  int n_predict = o.n_predict < 0 ? n_ctx - static_cast<int>(ids.size())
                                  : std::min(o.n_predict, n_ctx - static_cast<int>(ids.size()));

  // One request through the scheduler: the same path the server takes, speculation included.
  o.spec.fetch_cache = o.engine.fetch_cache;
  SpecSetup spec = make_spec(o.spec, *e.model, e.pool.get(), o.engine.threads, 1, n_ctx);
  LocalBatchModel batch_model(*e.forward);
  SchedulerOptions so;
  so.n_parallel = 1;
  so.max_queue = 0;
  so.step_tokens = o.engine.batch;
  so.draft = spec.source.get();
  so.window = spec.window;

  GenerationRequest req;
  req.prompt = ids;
  req.sampling = o.sampling;
  req.max_tokens = n_predict;
  if (!o.ignore_eos)
    for (int32_t id = 0; id < cfg.n_vocab; ++id)
      if (tok->is_eog(id)) req.stop_tokens.push_back(id);

  // Prints as tokens come (the scheduler thread calls on_token) and hands the result back.
  struct RunSink : GenerationSink {
    StreamDecoder out;
    bool json, strip_space;
    std::vector<int32_t> generated;
    std::string text;
    std::mutex mu;
    std::condition_variable cv;
    std::optional<GenerationResult> result;
    RunSink(const Tokenizer& t, bool special, bool json, bool strip) : out(t, special), json(json), strip_space(strip) {}
    bool on_token(const TokenEvent& ev) override {
      generated.push_back(ev.token);
      std::string piece = out.push(ev.token);
      // With no prompt, the first word's SentencePiece space prefix has nothing to separate.
      if (text.empty() && strip_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
      text += piece;
      if (!json && !piece.empty()) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
      return true;
    }
    void on_done(const GenerationResult& r) override {
      std::lock_guard lk(mu);
      result = r;
      cv.notify_all();
    }
  };
  auto sink = std::make_shared<RunSink>(*tok, o.special, o.json, o.prompt.empty());
  if (!o.json && !o.no_echo) {
    std::fputs(o.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  GenerationResult res;
  res.finish = FinishReason::Length;
  SchedulerStats st;
  if (n_predict > 0) {
    Scheduler scheduler(batch_model, so);
    scheduler.submit(req, sink);
    std::unique_lock lk(sink->mu);
    sink->cv.wait(lk, [&] { return sink->result.has_value(); });
    res = *sink->result;
    st = scheduler.stats();
  }
  if (res.finish == FinishReason::Error) throw std::runtime_error("generation failed: " + res.error);
  const std::vector<int32_t>& generated = sink->generated;
  std::string rest = sink->out.flush();
  std::string text = sink->text + rest;
  const std::string stop_reason = res.finish == FinishReason::Stop ? "eos" : "length";
  // Prefill: admission to the first token; decode: from there to the last (the first token's
  // sampling is counted with decode, as before).
  const bool any = res.completion_tokens > 0;
  double prefill_s = any ? std::chrono::duration<double>(res.first_token - res.started).count() : 0;
  double decode_s = any ? std::chrono::duration<double>(res.finished - res.first_token).count() : 0;
  double prefill_tps = ids.size() / std::max(prefill_s, 1e-9);
  // The first token comes with the prompt; the rest took decode_s.
  double decode_tps = generated.size() > 1 ? (generated.size() - 1) / std::max(decode_s, 1e-9) : 0;

  if (o.json) {
    nlohmann::json j;
    j["model"] = o.engine.model;
    j["prompt"] = o.prompt;
    j["text"] = text;
    j["prompt_tokens"] = ids.size();
    j["generated_tokens"] = generated.size();
    j["tokens"] = generated;
    j["stop_reason"] = stop_reason;
    j["seed"] = o.sampling.seed;
    j["threads"] = e.pool->size();
    j["load_s"] = e.load_seconds;
    j["prefill_tok_s"] = prefill_tps;
    j["decode_tok_s"] = decode_tps;
    if (spec.source) {
      j["speculative"] = {{"proposer", spec.source->name()},
                          {"draft_max", spec.window.draft_max},
                          {"adaptive", spec.window.adaptive},
                          {"windows", st.spec_windows},
                          {"drafted", st.spec_drafted},
                          {"accepted", st.spec_accepted},
                          {"acceptance", st.spec_drafted ? double(st.spec_accepted) / st.spec_drafted : 0.0},
                          {"tokens_per_verification",
                           st.spec_windows ? double(st.spec_tokens) / st.spec_windows : 0.0},
                          {"forward_steps", st.steps},
                          {"window_mean", st.spec_window_mean},
                          {"cost_model",
                           {{"step_base_s", st.spec_step_base_s},
                            {"step_token_s", st.spec_step_token_s},
                            {"draft_step_s", st.spec_draft_step_s},
                            {"realised_spec_token_s", st.spec_token_s},
                            {"realised_plain_token_s", st.plain_token_s}}}};
    }
    std::puts(j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputs("\n", stdout);
    std::fprintf(stderr,
                 "\n[llmesh] load %.2f s | prompt %zu tokens, %.1f tok/s | generated %zu tokens, %.1f tok/s | "
                 "%s | seed %llu | %d threads, %s kernels\n",
                 e.load_seconds, ids.size(), prefill_tps, generated.size(), decode_tps, stop_reason.c_str(),
                 static_cast<unsigned long long>(o.sampling.seed), e.pool->size(),
                 kernels::isa_name(kernels::active_isa()));
    if (spec.source && st.spec_drafted > 0)
      std::fprintf(stderr, "[llmesh] speculative: %s | %llu drafted, %llu accepted (%.0f%%) | %.2f tokens per verification\n",
                   spec.description.c_str(), static_cast<unsigned long long>(st.spec_drafted),
                   static_cast<unsigned long long>(st.spec_accepted), 100.0 * st.spec_accepted / st.spec_drafted,
                   double(st.spec_tokens) / std::max<uint64_t>(1, st.spec_windows));
  }
  return 0;
}

}  // namespace

Runner add_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  auto* sub = app.add_subcommand("run", "Generate text from a prompt on this machine (streams to stdout)");
  add_engine_options(sub, o->engine);
  auto* p = sub->add_option("-p,--prompt", o->prompt, "Prompt text");
  sub->add_option("-f,--file", o->prompt_file, "Read the prompt from a file")->excludes(p);
  sub->add_option("-n,--n-predict", o->n_predict, "Tokens to generate (-1: until the context is full)")
      ->capture_default_str();
  auto& s = o->sampling;
  sub->add_option("--temp", s.temperature, "Temperature (0: greedy)")->capture_default_str();
  sub->add_option("--top-k", s.top_k, "Top-k (0: off)")->capture_default_str();
  sub->add_option("--top-p", s.top_p, "Top-p (1: off)")->capture_default_str();
  sub->add_option("--min-p", s.min_p, "Min-p (0: off)")->capture_default_str();
  sub->add_option("--repeat-penalty", s.repeat_penalty, "Repetition penalty (1: off)")->capture_default_str();
  sub->add_option("--repeat-last-n", s.repeat_last_n, "Tokens the penalties look back at (-1: all)")
      ->capture_default_str();
  sub->add_option("--frequency-penalty", s.frequency_penalty, "Frequency penalty")->capture_default_str();
  sub->add_option("--presence-penalty", s.presence_penalty, "Presence penalty")->capture_default_str();
  sub->add_option("--seed", o->seed, "Random seed (-1: random)")->capture_default_str();
  sub->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-generation tokens");
  sub->add_flag("--special", o->special, "Print special tokens");
  sub->add_flag("--no-echo", o->no_echo, "Do not print the prompt before the answer");
  sub->add_flag("--json", o->json, "Print one JSON object (text, token ids, timings) at the end");
  add_spec_options(sub, o->spec);
  return [o] { return run_generate(*o); };
}

}  // namespace llmesh::cli
