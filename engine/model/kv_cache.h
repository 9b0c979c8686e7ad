// Per-sequence key/value cache for a layer range. Each sequence slot holds up to n_ctx
// positions; memory is reserved up front (bounded) and touched only as it fills. Rollback to
// any earlier position is O(1): the length is cut and later entries are overwritten.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "model/config.h"
#include "tensor/dtype.h"

namespace llmesh {

class KvCacheFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct KvCacheOptions {
  int n_ctx = 2048;         // positions per sequence
  int n_seq = 1;            // sequence slots
  DType type = DType::F16;  // F16 (default) or F32
};

class KvCache {
 public:
  KvCache(const ModelConfig& cfg, int first_layer, int last_layer, const KvCacheOptions& opt);

  int n_ctx() const { return n_ctx_; }
  int n_seq() const { return n_seq_; }
  DType type() const { return type_; }
  size_t bytes() const { return bytes_; }

  // Number of positions held for a sequence.
  int length(int seq) const { return len_.at(seq); }
  // Keeps positions [0, n) of `seq` (rollback); n must be <= length(seq).
  void truncate(int seq, int n);
  void clear(int seq) { truncate(seq, 0); }
  // Checks that positions up to `pos` fit; throws KvCacheFull with a clear message.
  void check_room(int seq, int pos) const;
  // Marks positions [0, n) as filled (after the forward pass wrote them).
  void set_length(int seq, int n);

  // Row of kv_dim elements for (layer, seq, pos); element type is type().
  void* key(int layer, int seq, int pos) { return row(0, layer, seq, pos); }
  void* value(int layer, int seq, int pos) { return row(1, layer, seq, pos); }
  const void* key(int layer, int seq, int pos) const { return const_cast<KvCache*>(this)->row(0, layer, seq, pos); }
  const void* value(int layer, int seq, int pos) const { return const_cast<KvCache*>(this)->row(1, layer, seq, pos); }
  size_t row_bytes() const { return row_bytes_; }
  int kv_dim() const { return kv_dim_; }

 private:
  void* row(int kv, int layer, int seq, int pos);

  int first_, n_layers_, n_ctx_, n_seq_, kv_dim_;
  DType type_;
  size_t row_bytes_ = 0, bytes_ = 0;
  std::unique_ptr<uint8_t[]> data_;
  std::vector<int> len_;
};

}  // namespace llmesh
