// T5's bucketed relative position bias: HF transformers 4.31
// T5Attention._relative_position_bucket and compute_bias, turned into the
// per-head additive table FusedAttention / DecodeAttention take
// (AttentionOptions::bias).
//
// T5 has no absolute positions. Layer 0 of each stack learns one scalar per
// (bucket, head) (relative_attention_bias [num_buckets, num_heads]); every
// layer of the stack adds bias[bucket(key - query), head] to its scores.
// Buckets are exact for small distances and log-spaced up to max_distance
// (the log in float32, truncated, as HF computes it); the encoder's are
// bidirectional (half the buckets for keys after the query), the decoder's
// unidirectional (keys after the query never occur under its causal mask).
//
// Why a table over q - k and not a bucket lookup per score: the bias of a
// (query, key) pair depends only on q - k, so one row per head over every
// distance the model can see (a few thousand floats) lets the attention
// kernels read 16 query rows' biases as one vector load.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/attention.h"

namespace maskserve::engine {

// HF _relative_position_bucket(relative_position = key - query, ...).
int T5RelativePositionBucket(int relative_position, bool bidirectional, int num_buckets,
                             int max_distance);

// The bias of one stack, laid out for AttentionOptions::bias.
class T5RelativeBias {
 public:
  // embedding: relative_attention_bias.weight, [num_buckets, num_heads]
  // row-major. The table covers q - k in [-(max_length - 1), max_length - 1].
  // InvalidArgument on size mismatches or non-positive dimensions.
  static absl::StatusOr<T5RelativeBias> Create(absl::Span<const float> embedding, int num_buckets,
                                               int num_heads, int max_distance, bool bidirectional,
                                               int max_length);
  T5RelativeBias() = default;

  // The table as attention takes it (null table when default-constructed).
  RelativePositionBias view() const;
  int max_length() const { return max_length_; }
  // Bias of head h for a query at position q and a key at position k.
  float At(int h, int q, int k) const {
    return values_[static_cast<size_t>(h) * stride_ + (max_length_ - 1) + q - k];
  }

 private:
  std::vector<float> values_;  // [num_heads][2 * max_length - 1]
  int64_t stride_ = 0;
  int max_length_ = 0;
};

}  // namespace maskserve::engine
