// Logits processors and warpers with the semantics of HuggingFace
// transformers v4.31 (the golden reference), applied in place to one row of
// scores [vocab]. "history" is what HF calls input_ids for that row: prompt +
// generated ids for decoder-only models, decoder ids (start token +
// generated) for encoder-decoder models.
//
// Where HF applies them:
//   greedy / sampling: processors on the raw logits (then, for sampling, the
//                      warpers), then argmax / softmax + multinomial;
//   beam search:       log-softmax first, then the processors on those
//                      log-probs (no renormalisation after banning).
// ApplyLogitsProcessors runs the processors in HF's order (repetition penalty,
// no-repeat n-gram, min new tokens); ApplyLogitsWarpers runs the warpers in
// HF's order (temperature, top-k, top-p).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace maskserve::engine {

struct LogitsProcessorOptions {
  float repetition_penalty = 1.0f;  // CTRL penalty on ids in history; 1 = off, must be > 0
  int no_repeat_ngram_size = 0;     // ban ids completing an n-gram seen in history; 0 = off
  int min_new_tokens = 0;           // ban stop_token_ids while fewer ids were generated
  std::vector<int32_t> stop_token_ids;  // EOS (and other stop ids) banned by min_new_tokens
  float temperature = 1.0f;         // sampling: logits / temperature; 1 = off, must be > 0
  int top_k = 0;                    // sampling: keep the k best (ties at the k-th kept); 0 = off
  float top_p = 1.0f;               // sampling: nucleus mass in (0, 1]; 1 = off
  int min_tokens_to_keep = 1;       // top-k / top-p never keep fewer (HF: 1; beam sampling 2)

  // Messages name the field, e.g. "top_p must be in (0, 1]".
  absl::Status Validate() const;
};

// CTRL repetition penalty (HF RepetitionPenaltyLogitsProcessor): for every
// distinct id in history, score/penalty if score > 0 else score*penalty (so 0
// stays 0). Ids outside [0, vocab) are ignored.
void ApplyRepetitionPenalty(absl::Span<const int32_t> history, float penalty,
                            absl::Span<float> scores);

// HF NoRepeatNGramLogitsProcessor: every id that would complete an n-gram
// already present in history (counting the n-gram that ends at the last id)
// gets -inf. Nothing is banned while history has fewer than n-1 ids.
void ApplyNoRepeatNgram(absl::Span<const int32_t> history, int n, absl::Span<float> scores);

// Ids banned by no_repeat_ngram_size = n after history (sorted, unique).
std::vector<int32_t> NoRepeatNgramBannedIds(absl::Span<const int32_t> history, int n);

// HF MinNewTokensLengthLogitsProcessor: -inf on stop_ids while
// num_generated < min_new_tokens.
void ApplyMinNewTokens(int num_generated, int min_new_tokens, absl::Span<const int32_t> stop_ids,
                       absl::Span<float> scores);

// HF TemperatureLogitsWarper: scores / temperature.
void ApplyTemperature(float temperature, absl::Span<float> scores);

// HF TopKLogitsWarper: k' = min(max(k, min_tokens_to_keep), vocab); every
// score below the k'-th largest becomes -inf (ties with it survive).
void ApplyTopK(int k, int min_tokens_to_keep, absl::Span<float> scores);

// HF TopPLogitsWarper: sort ascending, cumulative softmax mass; ids whose
// cumulative mass (from the smallest) is <= 1 - top_p become -inf, except the
// min_tokens_to_keep best, which always survive.
void ApplyTopP(float top_p, int min_tokens_to_keep, absl::Span<float> scores);

// Repetition penalty, no-repeat n-gram, min new tokens (HF order), each only
// when enabled. num_generated = ids generated so far (for min_new_tokens).
void ApplyLogitsProcessors(const LogitsProcessorOptions& options,
                           absl::Span<const int32_t> history, int num_generated,
                           absl::Span<float> scores);

// Temperature, top-k, top-p (HF order), each only when enabled.
void ApplyLogitsWarpers(const LogitsProcessorOptions& options, absl::Span<float> scores);

// log_softmax in place, accumulated in double (-inf entries stay -inf; an
// all -inf row becomes NaN, as in torch).
void LogSoftmaxInPlace(absl::Span<float> scores);

// softmax of scores into probs (same size), accumulated in double.
void Softmax(absl::Span<const float> scores, absl::Span<float> probs);

}  // namespace maskserve::engine
