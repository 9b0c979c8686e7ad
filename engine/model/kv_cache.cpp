#include "model/kv_cache.h"

#include <fmt/format.h>

namespace llmesh {

KvCache::KvCache(const ModelConfig& cfg, int first_layer, int last_layer, const KvCacheOptions& opt)
    : first_(first_layer), n_layers_(last_layer - first_layer), n_ctx_(opt.n_ctx),
      n_seq_(opt.n_seq), kv_dim_(cfg.kv_dim()), type_(opt.type) {
  if (type_ != DType::F16 && type_ != DType::F32)
    throw std::runtime_error("KV cache type must be F16 or F32, not " + dtype_name(type_));
  if (n_ctx_ <= 0 || n_seq_ <= 0 || n_layers_ < 0)
    throw std::runtime_error(fmt::format("invalid KV cache size: {} positions x {} sequences x {} layers",
                                         n_ctx_, n_seq_, n_layers_));
  row_bytes_ = static_cast<size_t>(kv_dim_) * (type_ == DType::F16 ? 2 : 4);
  bytes_ = 2 * row_bytes_ * n_layers_ * static_cast<size_t>(n_ctx_) * n_seq_;
  // new[] without value-initialisation: pages are committed only when first written.
  data_.reset(new uint8_t[bytes_]);
  len_.assign(n_seq_, 0);
}

void* KvCache::row(int kv, int layer, int seq, int pos) {
  size_t l = static_cast<size_t>(layer - first_);
  size_t idx = ((static_cast<size_t>(seq) * n_layers_ + l) * 2 + kv) * n_ctx_ + pos;
  return data_.get() + idx * row_bytes_;
}

void KvCache::truncate(int seq, int n) {
  if (seq < 0 || seq >= n_seq_) throw std::out_of_range(fmt::format("KV cache has no sequence {}", seq));
  if (n < 0 || n > len_[seq])
    throw std::out_of_range(fmt::format("cannot roll sequence {} back to {}: it holds {} positions",
                                        seq, n, len_[seq]));
  len_[seq] = n;
}

void KvCache::check_room(int seq, int pos) const {
  if (seq < 0 || seq >= n_seq_) throw std::out_of_range(fmt::format("KV cache has no sequence {}", seq));
  if (pos < 0 || pos >= n_ctx_)
    throw KvCacheFull(fmt::format("context full: sequence {} needs position {} but the KV cache holds "
                                  "{} positions per sequence (raise --ctx)", seq, pos, n_ctx_));
}

void KvCache::set_length(int seq, int n) {
  if (seq < 0 || seq >= n_seq_ || n < 0 || n > n_ctx_)
    throw std::out_of_range(fmt::format("invalid KV length {} for sequence {}", n, seq));
  len_[seq] = n;
}

}  // namespace llmesh
