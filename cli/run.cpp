// llmesh run -m MODEL.gguf -p PROMPT: generate text on this machine, streamed to stdout.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "sampling/sampler.h"
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
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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

  Sampler sampler(o.sampling, cfg.n_vocab);
  for (int32_t id : ids) sampler.accept(id);
  StreamDecoder out(*tok, o.special);
  if (!o.json && !o.no_echo) {
    std::fputs(o.prompt.c_str(), stdout);
    std::fflush(stdout);
  }

  // Prompt: in chunks of --batch tokens; logits only for the last one.
  auto t_prefill = Clock::now();
  std::span<const float> logits;
  Batch batch;
  for (size_t i = 0; i < ids.size(); i += o.engine.batch) {
    batch.clear();
    size_t end = std::min(ids.size(), i + o.engine.batch);
    for (size_t j = i; j < end; ++j) batch.add(ids[j], static_cast<int>(j), 0, j + 1 == ids.size());
    logits = e.forward->run(batch);
  }
  double prefill_s = seconds_since(t_prefill);

  auto t_decode = Clock::now();
  std::vector<int32_t> generated;
  std::string text, stop_reason = "length";
  int pos = static_cast<int>(ids.size());
  for (int i = 0; i < n_predict; ++i) {
    int32_t next = sampler.sample(logits.data());
    if (tok->is_eog(next) && !o.ignore_eos) {
      stop_reason = "eos";
      break;
    }
    generated.push_back(next);
    sampler.accept(next);
    std::string piece = out.push(next);
    // With no prompt, the first word's SentencePiece space prefix has nothing to separate.
    if (text.empty() && o.prompt.empty() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    text += piece;
    if (!o.json && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    if (i + 1 == n_predict) break;
    batch.clear();
    batch.add(next, pos++, 0, true);
    logits = e.forward->run(batch);
  }
  std::string rest = out.flush();
  text += rest;
  double decode_s = seconds_since(t_decode);
  double prefill_tps = ids.size() / std::max(prefill_s, 1e-9);
  double decode_tps = generated.size() / std::max(decode_s, 1e-9);

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
  return [o] { return run_generate(*o); };
}

}  // namespace llmesh::cli
