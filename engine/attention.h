// Scaled dot-product attention over packed variable-length sequences, fused
// and blockwise (flash-attention style): scores are produced one (query block
// x key block) tile at a time and folded into a running softmax, so memory is
// O(L * head_dim) per head and no L x L score or mask matrix ever exists.
// Tiles the AttentionMask classifies as empty are skipped, full ones run
// without a mask, and only partial ones test elements; LOCAL masks therefore
// cost O(L * window).
//
// Layout: Q and the output are packed rows [total_tokens, num_heads *
// head_dim] with an arbitrary row stride (so Q can be a slice of a fused QKV
// buffer). Keys/values are reached through KvSource one contiguous run at a
// time, so a paged KV cache plugs in without touching the kernel.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/attention_mask.h"

namespace maskserve::engine {

// Tile shape: query rows x keys per tile. Exposed so tests can bound the
// number of tiles a mask costs.
inline constexpr int kAttentionBlockQ = 32;
inline constexpr int kAttentionBlockK = 64;

// An additive score bias that depends only on the query head and on the
// distance between the query's and the key's positions (T5's bucketed
// relative position bias): score(h, q, k) += table[h * head_stride + center
// + q - k], where q is the query's absolute position (mask q_offset + row)
// and k the key's. Added after the scale, before the mask. The caller
// guarantees every index lies in the table for q in [q_offset, q_offset +
// q_len) and k in [0, k_len) of every sequence (e.g. a table over q - k in
// [-(max_len - 1), max_len - 1]).
struct RelativePositionBias {
  const float* table = nullptr;  // [num_heads][head_stride]; null = no bias
  int64_t head_stride = 0;       // floats between two heads' rows
  int64_t center = 0;            // index of q - k == 0 within a head's row
};

struct AttentionOptions {
  int num_heads = 0;     // query heads
  int num_kv_heads = 0;  // key/value heads; divides num_heads (GQA / MQA)
  int head_dim = 0;      // width of one head, independent of the hidden size
  float scale = 0.0f;    // score multiplier; 0 means 1/sqrt(head_dim)
  // > 0: per sequence, scale *= log(k_len) / log(log_n_train_length) (the
  // "attention scale log n" length extrapolation trick); 0 = off.
  int log_n_train_length = 0;
  // Additive relative-position bias (T5); none by default.
  RelativePositionBias bias;
};

// Tile counts, summed over heads and sequences.
struct AttentionStats {
  int64_t blocks_full = 0;     // tiles computed without a mask
  int64_t blocks_partial = 0;  // tiles computed with a per-element mask
  int64_t blocks_empty = 0;    // tiles inside KeyRange classified empty, skipped
  int64_t blocks_dense = 0;    // tiles a dense (unmasked) kernel would compute

  int64_t blocks_computed() const { return blocks_full + blocks_partial; }
};

// A contiguous run of keys of one sequence and one KV head: key r of the run
// (r < count) is k[r * k_stride + c], value is v[r * v_stride + c], c <
// head_dim.
struct KvRun {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t k_stride = 0;
  int64_t v_stride = 0;
  int count = 0;
};

// Where keys/values live. Implementations must be safe to call concurrently.
class KvSource {
 public:
  virtual ~KvSource() = default;
  // Number of keys of sequence `seq` (must equal that sequence's mask k_len).
  virtual int NumKeys(int seq) const = 0;
  // Keys key, key+1, ... of sequence `seq`, KV head `kv_head`: a run of 1 to
  // max_count keys (fewer when the run ends, e.g. at a page boundary).
  virtual KvRun Fetch(int seq, int kv_head, int key, int max_count) const = 0;
};

// K and V packed like Q: rows [total_keys, num_kv_heads * head_dim] with row
// strides, sequence b owning rows cu_seqlens_k[b] .. cu_seqlens_k[b+1]-1.
// Holds pointers only; the buffers and cu_seqlens_k must outlive it.
class ContiguousKv final : public KvSource {
 public:
  ContiguousKv(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
               absl::Span<const int32_t> cu_seqlens_k, int head_dim);
  int NumKeys(int seq) const override;
  KvRun Fetch(int seq, int kv_head, int key, int max_count) const override;

 private:
  const float* k_;
  int64_t k_stride_;
  const float* v_;
  int64_t v_stride_;
  absl::Span<const int32_t> cu_seqlens_k_;
  int head_dim_;
};

// out[t, h*head_dim + c] = sum_j softmax_j(scale * q_t,h . k_j,g + bias + mask) v_j,g,c
// with g = h / (num_heads / num_kv_heads), over the keys of t's sequence.
// Sequence b owns query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 and uses
// masks[b] (whose q_len must match and whose k_len must equal kv.NumKeys(b)).
// Masked pairs contribute exactly 0; a row with no allowed key gets zeros.
// FP32, parallel over (sequence, head, query block) with OpenMP. stats, when
// given, is overwritten.
absl::Status FusedAttention(const AttentionOptions& options, const float* q, int64_t q_stride,
                            absl::Span<const int32_t> cu_seqlens_q, const KvSource& kv,
                            absl::Span<const AttentionMask> masks, float* out, int64_t out_stride,
                            AttentionStats* stats = nullptr);

// Same, with K/V packed contiguously per sequence (see ContiguousKv).
absl::Status FusedAttention(const AttentionOptions& options, const float* q, int64_t q_stride,
                            const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                            absl::Span<const int32_t> cu_seqlens_q,
                            absl::Span<const int32_t> cu_seqlens_k,
                            absl::Span<const AttentionMask> masks, float* out, int64_t out_stride,
                            AttentionStats* stats = nullptr);

// Reference for tests: the same contract computed the obvious way, one row at
// a time with explicit scores, in double precision.
absl::Status NaiveAttention(const AttentionOptions& options, const float* q, int64_t q_stride,
                            const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                            absl::Span<const int32_t> cu_seqlens_q,
                            absl::Span<const int32_t> cu_seqlens_k,
                            absl::Span<const AttentionMask> masks, float* out, int64_t out_stride);

// The scale applied to sequence scores for k_len keys under options.
float EffectiveAttentionScale(const AttentionOptions& options, int k_len);

}  // namespace maskserve::engine
