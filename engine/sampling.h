// Token choice from processed scores: greedy argmax (torch.argmax tie rule)
// and seeded multinomial sampling. Every sequence owns its TokenSampler, so
// its draws depend only on its seed and its own scores, never on which other
// requests share the batch.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace maskserve::engine {

// Index of the largest score; ties go to the lowest id (torch.argmax). NaN is
// never chosen unless every score is NaN (then 0). Empty input gives -1.
int32_t Argmax(absl::Span<const float> scores);

// log_softmax(scores)[token], accumulated in double: the log-prob of the
// chosen token under the distribution it was drawn from.
float TokenLogProb(absl::Span<const float> scores, int32_t token);

// The n most likely ids with their log-probs, best first (ties: lower id).
std::vector<std::pair<int32_t, float>> TopLogProbs(absl::Span<const float> scores, int n);

class TokenSampler {
 public:
  // Same seed => same sequence of draws for the same scores.
  explicit TokenSampler(uint64_t seed) : rng_(seed) {}

  // Draws an id with probability softmax(scores) (entries at -inf are never
  // drawn). Callers apply temperature / top-k / top-p beforehand
  // (ApplyLogitsWarpers). Consumes exactly one 64-bit draw. Empty input or a
  // row with no finite score gives Argmax(scores).
  int32_t Sample(absl::Span<const float> scores);

  // A uniform double in [0, 1) from the next 64-bit draw (53 bits), portable
  // across standard libraries (unlike std::uniform_real_distribution).
  double NextUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

 private:
  std::mt19937_64 rng_;
};

}  // namespace maskserve::engine
