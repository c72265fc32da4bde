// Turning per-token hidden states of a packed batch into one vector per
// sequence, with the exact definitions of the golden files (HF /
// sentence-transformers / BERT-whitening conventions). Sequences are packed
// without padding, so "masked" means "over the sequence's own rows".
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/pooling_mode.h"

namespace maskserve::engine {

// out[b] for every sequence b (rows cu_seqlens[b] .. cu_seqlens[b+1]-1 of
// the [total_tokens, hidden] inputs), out is [num_seqs, hidden]:
//   kCls          last_hidden[first row]
//   kMean         mean of last_hidden over the sequence (specials included)
//   kFirstLastAvg mean over the sequence of (first_layer_hidden + last_hidden) / 2
//   kMax          element-wise max of last_hidden over the sequence
//   kLastToken    last_hidden[last row]
// Sums are accumulated in double. first_layer_hidden (HF hidden_states[1])
// may be null except for kFirstLastAvg. InvalidArgument on empty sequences,
// malformed cu_seqlens or a missing first layer.
absl::Status Pool(PoolingMode mode, const float* last_hidden, const float* first_layer_hidden,
                  absl::Span<const int32_t> cu_seqlens, int hidden, float* out);

// Each of the `rows` rows of `v` ([rows, dim]) becomes v / max(||v||_2, 1e-12),
// as torch.nn.functional.normalize (and sentence-transformers' Normalize).
void L2Normalize(float* v, int rows, int dim);

}  // namespace maskserve::engine
