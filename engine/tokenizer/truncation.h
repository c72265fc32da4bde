// HF `truncate_sequences` (transformers 4.31) as pure arithmetic on sequence
// lengths, so every tokenizer truncates identically whatever it stores per
// token.
#pragma once

#include <cstdint>

#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

// How many tokens to drop from each end of each sequence.
struct TruncationPlan {
  int32_t a_front = 0;  // removed from the start of sequence A
  int32_t a_back = 0;   // removed from the end of sequence A
  int32_t b_front = 0;  // removed from the start of sequence B
  int32_t b_back = 0;   // removed from the end of sequence B
  bool truncated() const { return a_front + a_back + b_front + b_back > 0; }
};

// `len_b` < 0 means no second sequence. `num_special` is what
// add_special_tokens adds (0 when not adding). Mirrors HF exactly, including
// its failure modes: when the chosen sequence is too short to absorb the cut
// (only_first/only_second, or longest_first on a single text), HF logs an
// error and returns the sequence untruncated, and so does this.
TruncationPlan PlanTruncation(int32_t len_a, int32_t len_b, int32_t num_special,
                              const TruncationOptions& options);

}  // namespace maskserve::engine
