// Threaded, cache-blocked matrix products on (quantized) weights.
//
// 1. Activations are quantized once per call into the calling thread's reusable buffer
//    (F32/F16/BF16 weights read X directly).
// 2. Weight rows are handed to the pool's threads in chunks from a shared counter
//    (ThreadPool::run_dynamic: a worker that does not show up in time is not waited for).
//    Decode (one token): about 4 chunks per thread, each a contiguous stream of rows.
//    Prefill (many tokens): chunks small enough to stay in L2; inside a chunk the loop runs over
//    token tiles, and within each, over row tiles with the type's register-blocked `tile`
//    kernel, so a weight tile is reused across all tokens while a few activation rows stay in L1.
// 3. Packed panels: where the type has a `panel` kernel and there are at least
//    panel_min_tokens tokens, activations are quantized to the panel format instead, chunks are
//    multiples of panel_rows, and each panel call unpacks its rows once into a thread-local
//    buffer (no persistent copy of the weights) and runs every token of the call over them.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/registry.h"
#include "kernels/scratch_buffer.h"

namespace llmesh::kernels {
namespace {

constexpr size_t kAlign = 64;

// Activations of the calling thread's matmul.
thread_local ScratchBuffer t_act;

struct Job {
  const TypeKernels* k;
  int64_t n;  // columns
  const uint8_t* w;
  size_t w_stride;
  int64_t row_end;
  const uint8_t* act;
  size_t act_stride;
  int64_t n_tokens;
  float* y;
  int64_t y_stride;
  bool panel;
  int64_t chunk;
  std::atomic<int64_t> next;
};

void run_rows(const Job& j, int64_t rb, int64_t re) {
  const TypeKernels& k = *j.k;
  if (j.panel) {
    for (int64_t r = rb; r < re; r += k.panel_rows) {
      const int nr = static_cast<int>(std::min<int64_t>(k.panel_rows, re - r));
      k.panel(j.n, j.w + r * j.w_stride, j.w_stride, nr, j.act, j.act_stride, j.n_tokens, j.y + r,
              static_cast<size_t>(j.y_stride));
    }
    return;
  }
  if (!k.tile) {
    for (int64_t t = 0; t < j.n_tokens; ++t) {
      const uint8_t* a = j.act + t * j.act_stride;
      float* y = j.y + t * j.y_stride;
      for (int64_t r = rb; r < re; ++r) y[r] = k.vec_dot(j.n, j.w + r * j.w_stride, a);
    }
    return;
  }
  const int tr = k.tile_rows, tc = k.tile_cols;
  for (int64_t t0 = 0; t0 < j.n_tokens; t0 += tc) {
    const int nc = static_cast<int>(std::min<int64_t>(tc, j.n_tokens - t0));
    const uint8_t* a = j.act + t0 * j.act_stride;
    float* y = j.y + t0 * j.y_stride;
    for (int64_t r = rb; r < re; r += tr) {
      const int nr = static_cast<int>(std::min<int64_t>(tr, re - r));
      k.tile(j.n, j.w + r * j.w_stride, j.w_stride, nr, a, j.act_stride, nc, y + r,
             static_cast<size_t>(j.y_stride));
    }
  }
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

}  // namespace

void matmul_rows(const MatView& W, int64_t row_begin, int64_t row_end, const float* X, int64_t x_stride,
                 int64_t n_tokens, float* Y, int64_t y_stride, ThreadPool& pool) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  if (row_begin < 0 || row_end > W.rows)
    throw std::runtime_error("matmul rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                             ") outside a matrix of " + std::to_string(W.rows) + " rows");
  const TypeKernels* k = type_kernels(W.type, active_isa());
  if (!k) throw std::runtime_error("tensor type " + dtype_name(W.type) + " is not supported by llmesh kernels");
  const int64_t n = W.cols;
  const int nth = pool.size();

  // 1. Activations.
  const bool panel = k->panel && n_tokens >= k->panel_min_tokens;
  const uint8_t* act;
  size_t act_stride;
  if (panel) {
    if (!dtype_row_bytes(k->act, n))
      throw std::runtime_error("matmul: " + std::to_string(n) + " columns is not a whole number of blocks");
    act_stride = round_up(static_cast<int64_t>(k->panel_act_bytes(n)), kAlign);
    uint8_t* buf = t_act.get(act_stride * n_tokens);
    auto quant = k->panel_quantize_act;
    if (nth > 1) {
      std::atomic<int64_t> next_token{0};
      pool.run_dynamic([&](int, int) {
        for (int64_t t; (t = next_token.fetch_add(1, std::memory_order_relaxed)) < n_tokens;)
          quant(X + t * x_stride, buf + t * act_stride, n);
      });
    } else {
      for (int64_t t = 0; t < n_tokens; ++t) quant(X + t * x_stride, buf + t * act_stride, n);
    }
    act = buf;
  } else if (k->act == DType::F32) {
    act = reinterpret_cast<const uint8_t*>(X);
    act_stride = static_cast<size_t>(x_stride) * sizeof(float);
  } else {
    const auto bytes = dtype_row_bytes(k->act, n);
    if (!bytes) throw std::runtime_error("matmul: " + std::to_string(n) + " columns is not a whole number of blocks");
    act_stride = round_up(*bytes, kAlign);
    uint8_t* buf = t_act.get(act_stride * n_tokens);
    if (n_tokens >= 4 && nth > 1) {
      std::atomic<int64_t> next_token{0};
      pool.run_dynamic([&](int, int) {
        for (int64_t t; (t = next_token.fetch_add(1, std::memory_order_relaxed)) < n_tokens;)
          k->quantize_act(X + t * x_stride, buf + t * act_stride, n);
      });
    } else {
      for (int64_t t = 0; t < n_tokens; ++t) k->quantize_act(X + t * x_stride, buf + t * act_stride, n);
    }
    act = buf;
  }

  // 2. Rows in chunks.
  const int64_t rows = row_end - row_begin;
  const int64_t tr = k->tile ? k->tile_rows : 1;
  int64_t chunk;
  if (panel) {
    // each panel call packs its rows once and runs every token over them
    const int64_t pr = k->panel_rows;
    chunk = round_up(std::max<int64_t>(1, rows / (int64_t(nth) * 8)), pr);
  } else if (n_tokens == 1) {
    // (about 4 chunks per thread: decode kernels prefetch one tile past their rows, wasted at a
    // chunk end, so chunks are not made smaller than needed for balance)
    chunk = round_up(std::max<int64_t>(16, rows / (int64_t(nth) * 4)), tr);
  } else {
    const int64_t fit = std::max<int64_t>(tr, (96 * 1024 / std::max<size_t>(W.row_bytes, 1)) / tr * tr);
    const int64_t share = round_up(std::max<int64_t>(1, rows / (int64_t(nth) * 4)), tr);
    chunk = std::max<int64_t>(tr, std::min(fit, share));
  }
  Job job{k, n, W.data, W.row_bytes, row_end, act, act_stride, n_tokens, Y, y_stride, panel, chunk, {row_begin}};
  if (nth == 1 || rows <= chunk) {
    run_rows(job, row_begin, row_end);
    return;
  }
  // Threads share the chunks through job.next, so a worker that is descheduled on a busy
  // machine is simply not waited for (run_dynamic).
  pool.run_dynamic([&job](int, int) {
    for (;;) {
      const int64_t rb = job.next.fetch_add(job.chunk, std::memory_order_relaxed);
      if (rb >= job.row_end) break;
      run_rows(job, rb, std::min(job.row_end, rb + job.chunk));
    }
  });
}

void matmul(const MatView& W, const float* X, int64_t x_stride, int64_t n_tokens, float* Y, int64_t y_stride,
            ThreadPool& pool) {
  matmul_rows(W, 0, W.rows, X, x_stride, n_tokens, Y, y_stride, pool);
}

}  // namespace llmesh::kernels
