// Token sampling: greedy, temperature, top-k, top-p, min-p, and repetition / frequency /
// presence penalties. The same seed and inputs give the same tokens.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace llmesh {

struct SamplingParams {
  float temperature = 0.8f;  // <= 0: greedy
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off (llama.cpp's "repeat penalty" on recent tokens)
  int repeat_last_n = 64;       // window for all three penalties (-1: whole history)
  float frequency_penalty = 0.0f;  // OpenAI-style, per occurrence
  float presence_penalty = 0.0f;   // OpenAI-style, once per token seen
  uint64_t seed = 0xC0FFEE;

  // Empty when valid, else what is wrong ("top_p must be in (0, 1]").
  std::string validate() const;
};

struct TokenProb {
  int32_t id;
  float p;
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int n_vocab);

  // Picks the next token from raw logits (n_vocab values) given the tokens seen so far
  // (call accept() for each token that enters the context, prompt included).
  int32_t sample(const float* logits);
  // The filtered, renormalised distribution sample() draws from (sorted by probability).
  // Greedy gives a single token with p = 1.
  std::vector<TokenProb> distribution(const float* logits);
  void accept(int32_t token);
  void reset();
  const SamplingParams& params() const { return p_; }
  std::mt19937_64& rng() { return rng_; }

 private:
  void apply_penalties(std::vector<float>& logits) const;

  SamplingParams p_;
  int n_vocab_;
  std::vector<int32_t> history_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
};

// Index of the largest logit (ties: lowest id).
int32_t argmax(const float* logits, int n);

}  // namespace llmesh
