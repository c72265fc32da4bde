// Attention for decode steps: ONE query row per sequence (or none) against
// that sequence's keys/values, read in place through a KvSource (the paged
// KV cache), with FusedAttention's contract (options, masks, GQA grouping,
// strides, zeros for a row with no allowed key).
//
// Why a separate kernel: FusedAttention tiles queries in blocks of 32 rows
// (16 SIMD lanes per score vector), which is what prefill needs but wastes
// >90% of its score and softmax work on a single query; in a 16-sequence
// decode step of a GPT-2-small that was about a quarter of the step. Here
// each (sequence, KV head) computes its scores with one dot product per key
// for every query head of the group, a vectorised softmax, then P·V — about
// the minimum work. Models use it when every sequence of a step has at most
// one query row and FusedAttention otherwise.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/attention.h"
#include "engine/attention_mask.h"

namespace maskserve::engine {

// Whether DecodeAttention accepts these masks (every q_len is 0 or 1).
bool IsDecodeStep(absl::Span<const AttentionMask> masks);

// out[row_b, h * head_dim + c] for the query row of every sequence b whose
// mask has q_len 1, as FusedAttention computes it. InvalidArgument when a
// mask has q_len > 1, or on the argument errors FusedAttention reports.
// Parallel over (sequence, KV head) with OpenMP.
absl::Status DecodeAttention(const AttentionOptions& options, const float* q, int64_t q_stride,
                             absl::Span<const int32_t> cu_seqlens_q, const KvSource& kv,
                             absl::Span<const AttentionMask> masks, float* out, int64_t out_stride);

}  // namespace maskserve::engine
