// Architectures without a real model in ../shared (qwen2, qwen3 with an odd head size,
// qwen3moe, qwen2moe with a shared expert, llama with partial and linearly scaled RoPE) are
// built here as tiny random F32 GGUFs and checked against a naive forward pass written in this
// file straight from the math: one token at a time, plain loops, double accumulators.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>

#include <gtest/gtest.h>

#include "gguf/gguf_writer.h"
#include "model/forward.h"

namespace llmesh {
namespace {

struct Shape {
  std::string arch;
  int n_embd = 32, n_layer = 2, n_head = 4, n_head_kv = 2, head_dim = 8, n_ff = 48, n_vocab = 64;
  int rope_dims = 8;
  float rope_base = 10000.0f, rope_scale = 1.0f;  // rope.scaling.factor (linear)
  bool neox = false, qk_norm = false, bias = false, tied = false;
  int n_expert = 0, n_expert_used = 0, n_ff_expert = 0, n_ff_shared = 0;
  bool norm_topk = true;
  bool rope_freqs = false;  // Llama 3.1 rope_freqs.weight
};

using Weights = std::map<std::string, std::vector<float>>;

// Writes the model and returns its weights for the reference.
Weights write_model(const Shape& s, const std::string& path) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  Weights w;
  GgufWriter g;
  const std::string p = s.arch + ".";
  g.set_string("general.architecture", s.arch);
  g.set_u32(p + "block_count", s.n_layer);
  g.set_u32(p + "embedding_length", s.n_embd);
  g.set_u32(p + "feed_forward_length", s.n_ff);
  g.set_u32(p + "attention.head_count", s.n_head);
  g.set_u32(p + "attention.head_count_kv", s.n_head_kv);
  g.set_u32(p + "attention.key_length", s.head_dim);
  g.set_u32(p + "attention.value_length", s.head_dim);
  g.set_u32(p + "rope.dimension_count", s.rope_dims);
  g.set_f32(p + "rope.freq_base", s.rope_base);
  g.set_f32(p + "attention.layer_norm_rms_epsilon", 1e-6f);
  g.set_u32(p + "context_length", 256);
  if (s.rope_scale != 1.0f) {
    g.set_string(p + "rope.scaling.type", "linear");
    g.set_f32(p + "rope.scaling.factor", s.rope_scale);
  }
  if (s.n_expert) {
    g.set_u32(p + "expert_count", s.n_expert);
    g.set_u32(p + "expert_used_count", s.n_expert_used);
    g.set_u32(p + "expert_feed_forward_length", s.n_ff_expert);
    if (s.n_ff_shared) g.set_u32(p + "expert_shared_feed_forward_length", s.n_ff_shared);
  }
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool norm = false) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float>& v = w[name];
    v.resize(n);
    for (auto& x : v) x = norm ? 1.0f + 0.2f * nd(rng) : nd(rng);
  };
  const int q = s.n_head * s.head_dim, kv = s.n_head_kv * s.head_dim;
  add("token_embd.weight", {s.n_embd, s.n_vocab});
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", {s.n_embd}, true);
    add(b + "attn_q.weight", {s.n_embd, q});
    add(b + "attn_k.weight", {s.n_embd, kv});
    add(b + "attn_v.weight", {s.n_embd, kv});
    add(b + "attn_output.weight", {q, s.n_embd});
    if (s.bias) {
      add(b + "attn_q.bias", {q});
      add(b + "attn_k.bias", {kv});
      add(b + "attn_v.bias", {kv});
    }
    if (s.qk_norm) {
      add(b + "attn_q_norm.weight", {s.head_dim}, true);
      add(b + "attn_k_norm.weight", {s.head_dim}, true);
    }
    add(b + "ffn_norm.weight", {s.n_embd}, true);
    if (s.n_expert) {
      add(b + "ffn_gate_inp.weight", {s.n_embd, s.n_expert});
      add(b + "ffn_gate_exps.weight", {s.n_embd, s.n_ff_expert, s.n_expert});
      add(b + "ffn_up_exps.weight", {s.n_embd, s.n_ff_expert, s.n_expert});
      add(b + "ffn_down_exps.weight", {s.n_ff_expert, s.n_embd, s.n_expert});
      if (s.n_ff_shared) {
        add(b + "ffn_gate_shexp.weight", {s.n_embd, s.n_ff_shared});
        add(b + "ffn_up_shexp.weight", {s.n_embd, s.n_ff_shared});
        add(b + "ffn_down_shexp.weight", {s.n_ff_shared, s.n_embd});
        add(b + "ffn_gate_inp_shexp.weight", {s.n_embd, 1});
      }
    } else {
      add(b + "ffn_gate.weight", {s.n_embd, s.n_ff});
      add(b + "ffn_up.weight", {s.n_embd, s.n_ff});
      add(b + "ffn_down.weight", {s.n_ff, s.n_embd});
    }
  }
  add("output_norm.weight", {s.n_embd}, true);
  if (s.rope_freqs) {
    add("rope_freqs.weight", {s.rope_dims / 2}, true);
    for (auto& f : w["rope_freqs.weight"]) f = 1.0f + std::fabs(f) * 3.0f;
  }
  if (!s.tied) add("output.weight", {s.n_embd, s.n_vocab});
  // Shapes again, for the writer (same order as above).
  for (auto& [name, v] : w) {
    std::vector<int64_t> shape;
    auto dims = [&](std::vector<int64_t> d) { shape = d; };
    auto ends = [&](const char* suf) { return name.size() >= strlen(suf) && name.compare(name.size() - strlen(suf), strlen(suf), suf) == 0; };
    if (name == "token_embd.weight" || name == "output.weight") dims({s.n_embd, s.n_vocab});
    else if (name == "rope_freqs.weight") dims({s.rope_dims / 2});
    else if (ends("attn_q.weight")) dims({s.n_embd, q});
    else if (ends("attn_k.weight") || ends("attn_v.weight")) dims({s.n_embd, kv});
    else if (ends("attn_output.weight")) dims({q, s.n_embd});
    else if (ends("attn_q.bias")) dims({q});
    else if (ends("attn_k.bias") || ends("attn_v.bias")) dims({kv});
    else if (ends("_norm.weight") && (ends("attn_q_norm.weight") || ends("attn_k_norm.weight"))) dims({s.head_dim});
    else if (ends("norm.weight")) dims({s.n_embd});
    else if (ends("ffn_gate_inp.weight")) dims({s.n_embd, s.n_expert});
    else if (ends("ffn_gate_exps.weight") || ends("ffn_up_exps.weight")) dims({s.n_embd, s.n_ff_expert, s.n_expert});
    else if (ends("ffn_down_exps.weight")) dims({s.n_ff_expert, s.n_embd, s.n_expert});
    else if (ends("ffn_gate_shexp.weight") || ends("ffn_up_shexp.weight")) dims({s.n_embd, s.n_ff_shared});
    else if (ends("ffn_down_shexp.weight")) dims({s.n_ff_shared, s.n_embd});
    else if (ends("ffn_gate_inp_shexp.weight")) dims({s.n_embd, 1});
    else if (ends("ffn_gate.weight") || ends("ffn_up.weight")) dims({s.n_embd, s.n_ff});
    else if (ends("ffn_down.weight")) dims({s.n_ff, s.n_embd});
    else ADD_FAILURE() << "no shape for " << name;
    g.add_tensor(name, DType::F32, shape, v.data(), v.size() * sizeof(float));
  }
  g.write(path);
  return w;
}

// ---- the naive reference ------------------------------------------------------------------
using Vec = std::vector<double>;

Vec matvec(const std::vector<float>& W, const Vec& x, int rows, size_t offset = 0) {
  const size_t cols = x.size();
  Vec y(rows, 0.0);
  for (int r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) y[r] += W[offset + r * cols + c] * x[c];
  return y;
}
Vec rmsnorm(const Vec& x, const std::vector<float>& w, size_t off = 0, size_t n = 0) {
  n = n ? n : x.size();
  Vec y(x);
  for (size_t base = 0; base < x.size(); base += n) {
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += x[base + i] * x[base + i];
    double s = 1.0 / std::sqrt(ss / n + 1e-6);
    for (size_t i = 0; i < n; ++i) y[base + i] = x[base + i] * s * w[off + i];
  }
  return y;
}
double silu(double v) { return v / (1.0 + std::exp(-v)); }

struct Reference {
  const Shape& s;
  Weights& w;
  std::vector<std::vector<Vec>> K, V;  // [layer][pos]
  Reference(const Shape& sh, Weights& wt) : s(sh), w(wt), K(sh.n_layer), V(sh.n_layer) {}

  void rope(Vec& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < s.rope_dims / 2; ++i) {
        double th = pos / s.rope_scale * std::pow(double(s.rope_base), -2.0 * i / s.rope_dims);
        if (s.rope_freqs) th /= w["rope_freqs.weight"][i];
        int a = h * s.head_dim + (s.neox ? i : 2 * i);
        int b = h * s.head_dim + (s.neox ? i + s.rope_dims / 2 : 2 * i + 1);
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * std::cos(th) - x1 * std::sin(th);
        v[b] = x0 * std::sin(th) + x1 * std::cos(th);
      }
  }
  Vec ffn(const std::string& g, const std::string& u, const std::string& d, const Vec& x, int ff,
          size_t goff = 0, size_t doff = 0) {
    Vec a = matvec(w[g], x, ff, goff), b = matvec(w[u], x, ff, goff), h(ff);
    for (int i = 0; i < ff; ++i) h[i] = silu(a[i]) * b[i];
    return matvec(w[d], h, s.n_embd, doff);
  }
  Vec step(int tok, int pos) {
    const int q = s.n_head * s.head_dim, kv = s.n_head_kv * s.head_dim, E = s.n_embd;
    Vec x(w["token_embd.weight"].begin() + tok * E, w["token_embd.weight"].begin() + (tok + 1) * E);
    for (int l = 0; l < s.n_layer; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      Vec xb = rmsnorm(x, w[b + "attn_norm.weight"]);
      Vec Q = matvec(w[b + "attn_q.weight"], xb, q), Kt = matvec(w[b + "attn_k.weight"], xb, kv),
          Vt = matvec(w[b + "attn_v.weight"], xb, kv);
      if (s.bias) {
        for (int i = 0; i < q; ++i) Q[i] += w[b + "attn_q.bias"][i];
        for (int i = 0; i < kv; ++i) Kt[i] += w[b + "attn_k.bias"][i], Vt[i] += w[b + "attn_v.bias"][i];
      }
      if (s.qk_norm) {
        Q = rmsnorm(Q, w[b + "attn_q_norm.weight"], 0, s.head_dim);
        Kt = rmsnorm(Kt, w[b + "attn_k_norm.weight"], 0, s.head_dim);
      }
      rope(Q, s.n_head, pos);
      rope(Kt, s.n_head_kv, pos);
      K[l].push_back(Kt);
      V[l].push_back(Vt);
      Vec att(q, 0.0);
      for (int h = 0; h < s.n_head; ++h) {
        int kh = h / (s.n_head / s.n_head_kv);
        std::vector<double> sc(pos + 1);
        double mx = -1e300;
        for (int p = 0; p <= pos; ++p) {
          double d = 0;
          for (int i = 0; i < s.head_dim; ++i) d += Q[h * s.head_dim + i] * K[l][p][kh * s.head_dim + i];
          sc[p] = d / std::sqrt(double(s.head_dim));
          mx = std::max(mx, sc[p]);
        }
        double sum = 0;
        for (auto& v : sc) sum += (v = std::exp(v - mx));
        for (int p = 0; p <= pos; ++p)
          for (int i = 0; i < s.head_dim; ++i) att[h * s.head_dim + i] += sc[p] / sum * V[l][p][kh * s.head_dim + i];
      }
      Vec o = matvec(w[b + "attn_output.weight"], att, E);
      for (int i = 0; i < E; ++i) x[i] += o[i];
      xb = rmsnorm(x, w[b + "ffn_norm.weight"]);
      Vec y(E, 0.0);
      if (s.n_expert) {
        Vec logits = matvec(w[b + "ffn_gate_inp.weight"], xb, s.n_expert);
        double mx2 = *std::max_element(logits.begin(), logits.end()), sum = 0;
        for (auto& v : logits) sum += (v = std::exp(v - mx2));
        for (auto& v : logits) v /= sum;
        std::vector<int> order(s.n_expert);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return logits[a] > logits[c]; });
        double tot = 0;
        for (int j = 0; j < s.n_expert_used; ++j) tot += logits[order[j]];
        for (int j = 0; j < s.n_expert_used; ++j) {
          int e = order[j];
          Vec f = ffn(b + "ffn_gate_exps.weight", b + "ffn_up_exps.weight", b + "ffn_down_exps.weight", xb,
                      s.n_ff_expert, size_t(e) * s.n_ff_expert * E, size_t(e) * E * s.n_ff_expert);
          double wgt = s.norm_topk ? logits[e] / tot : logits[e];
          for (int i = 0; i < E; ++i) y[i] += wgt * f[i];
        }
        if (s.n_ff_shared) {
          Vec f = ffn(b + "ffn_gate_shexp.weight", b + "ffn_up_shexp.weight", b + "ffn_down_shexp.weight", xb,
                      s.n_ff_shared);
          double gate = 1.0 / (1.0 + std::exp(-matvec(w[b + "ffn_gate_inp_shexp.weight"], xb, 1)[0]));
          for (int i = 0; i < E; ++i) y[i] += gate * f[i];
        }
      } else {
        y = ffn(b + "ffn_gate.weight", b + "ffn_up.weight", b + "ffn_down.weight", xb, s.n_ff);
      }
      for (int i = 0; i < E; ++i) x[i] += y[i];
    }
    x = rmsnorm(x, w["output_norm.weight"]);
    return matvec(s.tied ? w["token_embd.weight"] : w["output.weight"], x, s.n_vocab);
  }
};

// A file per test and process: CTest runs the tests of this binary in parallel processes, and
// several of them build a model of the same architecture.
std::string model_file(const std::string& arch) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "/arch_" + arch + "_" + (info ? info->name() : "x") + "_" +
         std::to_string(::getpid()) + ".gguf";
}

void check_against_reference(const Shape& s) {
  const std::string path = model_file(s.arch);
  Weights w = write_model(s, path);
  auto model = Model::load(path);
  EXPECT_EQ(model->config().arch_name, s.arch);
  KvCacheOptions kv;
  kv.n_ctx = 32;
  kv.type = DType::F32;
  KvCache cache(model->config(), 0, s.n_layer, kv);
  ThreadPool pool(2);
  Forward fwd(*model, cache, pool);
  const std::vector<int> toks = {3, 17, 42, 5, 63, 0, 29, 11};
  Batch b;
  for (size_t i = 0; i < toks.size(); ++i) b.add(toks[i], static_cast<int>(i), 0, true);
  auto logits = fwd.run(b);  // all positions in one batch, logits for each
  Reference ref(s, w);
  for (size_t t = 0; t < toks.size(); ++t) {
    Vec want = ref.step(toks[t], static_cast<int>(t));
    for (int i = 0; i < s.n_vocab; ++i)
      ASSERT_NEAR(logits[t * s.n_vocab + i], want[i], 2e-3 * (1 + std::fabs(want[i])))
          << s.arch << " position " << t << " logit " << i;
  }
  std::filesystem::remove(path);
}

TEST(ArchReference, Qwen2BiasesAndNeoxRope) {
  Shape s;
  s.arch = "qwen2";
  s.neox = true;
  s.bias = true;
  check_against_reference(s);
}

TEST(ArchReference, Qwen3QkNormOddHeadSizeTied) {
  Shape s;
  s.arch = "qwen3";
  s.neox = true;
  s.qk_norm = true;
  s.head_dim = 16;  // n_head * head_dim (64) != n_embd (32), as in Qwen3
  s.rope_dims = 16;
  s.tied = true;
  s.rope_base = 1000000.0f;
  check_against_reference(s);
}

TEST(ArchReference, Qwen3Moe) {
  Shape s;
  s.arch = "qwen3moe";
  s.neox = true;
  s.qk_norm = true;
  s.n_expert = 8;
  s.n_expert_used = 3;
  s.n_ff_expert = 24;
  check_against_reference(s);
}

TEST(ArchReference, Qwen2MoeSharedExpert) {
  Shape s;
  s.arch = "qwen2moe";
  s.neox = true;
  s.bias = true;
  s.n_expert = 4;
  s.n_expert_used = 2;
  s.n_ff_expert = 16;
  s.n_ff_shared = 40;
  s.norm_topk = false;
  check_against_reference(s);
}

TEST(ArchReference, LlamaPartialAndScaledRope) {
  Shape s;
  s.arch = "llama";
  s.rope_dims = 4;  // only half of each head rotates
  s.rope_scale = 4.0f;
  s.n_head_kv = 1;  // multi-query attention
  check_against_reference(s);
}

TEST(ArchReference, Llama3RopeFrequencyFactors) {
  Shape s;
  s.arch = "llama";
  s.rope_freqs = true;
  s.rope_base = 500000.0f;
  check_against_reference(s);
}

TEST(ArchReference, UnsupportedArchitectureIsNamed) {
  Shape s;
  s.arch = "gpt2";
  const std::string path = model_file("gpt2");
  write_model(s, path);
  try {
    Model::load(path);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("architecture 'gpt2' is not supported"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace llmesh
