#include "engine/logits_processors.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

absl::Status LogitsProcessorOptions::Validate() const {
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty must be a finite value > 0, got ", repetition_penalty));
  }
  if (no_repeat_ngram_size < 0) return absl::InvalidArgumentError("no_repeat_ngram_size must be >= 0");
  if (min_new_tokens < 0) return absl::InvalidArgumentError("min_new_tokens must be >= 0");
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite value > 0, got ", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError("top_k must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  if (min_tokens_to_keep < 1) return absl::InvalidArgumentError("min_tokens_to_keep must be >= 1");
  return absl::OkStatus();
}

void ApplyRepetitionPenalty(absl::Span<const int32_t> history, float penalty,
                            absl::Span<float> scores) {
  std::vector<int32_t> ids(history.begin(), history.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const int64_t vocab = static_cast<int64_t>(scores.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) continue;
    float& s = scores[id];
    s = s < 0.0f ? s * penalty : s / penalty;
  }
}

std::vector<int32_t> NoRepeatNgramBannedIds(absl::Span<const int32_t> history, int n) {
  std::vector<int32_t> banned;
  const int len = static_cast<int>(history.size());
  // HF: no bans while cur_len + 1 < n.
  if (n <= 0 || len + 1 < n) return banned;
  // The n-gram being completed starts with the last n-1 ids.
  const int prefix_start = len - (n - 1);
  for (int start = 0; start + n <= len; ++start) {
    bool match = true;
    for (int j = 0; j < n - 1 && match; ++j) match = history[start + j] == history[prefix_start + j];
    if (match) banned.push_back(history[start + n - 1]);
  }
  std::sort(banned.begin(), banned.end());
  banned.erase(std::unique(banned.begin(), banned.end()), banned.end());
  return banned;
}

void ApplyNoRepeatNgram(absl::Span<const int32_t> history, int n, absl::Span<float> scores) {
  const int64_t vocab = static_cast<int64_t>(scores.size());
  for (int32_t id : NoRepeatNgramBannedIds(history, n)) {
    if (id >= 0 && id < vocab) scores[id] = kNegInf;
  }
}

void ApplyMinNewTokens(int num_generated, int min_new_tokens, absl::Span<const int32_t> stop_ids,
                       absl::Span<float> scores) {
  if (num_generated >= min_new_tokens) return;
  const int64_t vocab = static_cast<int64_t>(scores.size());
  for (int32_t id : stop_ids) {
    if (id >= 0 && id < vocab) scores[id] = kNegInf;
  }
}

void ApplyTemperature(float temperature, absl::Span<float> scores) {
  for (float& s : scores) s /= temperature;
}

void ApplyTopK(int k, int min_tokens_to_keep, absl::Span<float> scores) {
  const int vocab = static_cast<int>(scores.size());
  if (vocab == 0) return;
  k = std::min(std::max(k, min_tokens_to_keep), vocab);
  std::vector<float> sorted(scores.begin(), scores.end());
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[k - 1];
  for (float& s : scores) {
    if (s < kth) s = kNegInf;
  }
}

void ApplyTopP(float top_p, int min_tokens_to_keep, absl::Span<float> scores) {
  const int vocab = static_cast<int>(scores.size());
  if (vocab == 0) return;
  // Ascending by score; equal scores keep id order.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return scores[a] < scores[b]; });
  const float max_score = scores[order.back()];
  double sum = 0.0;
  for (float s : scores) sum += std::exp(static_cast<double>(s) - max_score);
  // As HF: float32 probabilities and cumulative sum, threshold 1 - top_p.
  const float threshold = 1.0f - top_p;
  const int protected_from = vocab - std::min(min_tokens_to_keep, vocab);
  std::vector<bool> remove(vocab, false);
  float cumulative = 0.0f;
  for (int r = 0; r < vocab; ++r) {
    const int32_t id = order[r];
    cumulative += static_cast<float>(std::exp(static_cast<double>(scores[id]) - max_score) / sum);
    remove[id] = r < protected_from && cumulative <= threshold;
  }
  for (int i = 0; i < vocab; ++i) {
    if (remove[i]) scores[i] = kNegInf;
  }
}

void ApplyLogitsProcessors(const LogitsProcessorOptions& options,
                           absl::Span<const int32_t> history, int num_generated,
                           absl::Span<float> scores) {
  if (options.repetition_penalty != 1.0f) {
    ApplyRepetitionPenalty(history, options.repetition_penalty, scores);
  }
  if (options.no_repeat_ngram_size > 0) {
    ApplyNoRepeatNgram(history, options.no_repeat_ngram_size, scores);
  }
  if (options.min_new_tokens > 0 && !options.stop_token_ids.empty()) {
    ApplyMinNewTokens(num_generated, options.min_new_tokens, options.stop_token_ids, scores);
  }
}

void ApplyLogitsWarpers(const LogitsProcessorOptions& options, absl::Span<float> scores) {
  if (options.temperature != 1.0f) ApplyTemperature(options.temperature, scores);
  if (options.top_k != 0) ApplyTopK(options.top_k, options.min_tokens_to_keep, scores);
  if (options.top_p < 1.0f) ApplyTopP(options.top_p, options.min_tokens_to_keep, scores);
}

void LogSoftmaxInPlace(absl::Span<float> scores) {
  if (scores.empty()) return;
  const float max_score = *std::max_element(scores.begin(), scores.end());
  double sum = 0.0;
  for (float s : scores) sum += std::exp(static_cast<double>(s) - max_score);
  const double log_z = static_cast<double>(max_score) + std::log(sum);
  for (float& s : scores) s = static_cast<float>(static_cast<double>(s) - log_z);
}

void Softmax(absl::Span<const float> scores, absl::Span<float> probs) {
  if (scores.empty()) return;
  const float max_score = *std::max_element(scores.begin(), scores.end());
  double sum = 0.0;
  for (size_t i = 0; i < scores.size(); ++i) {
    const double e = std::exp(static_cast<double>(scores[i]) - max_score);
    probs[i] = static_cast<float>(e);
    sum += e;
  }
  for (float& p : probs) p = static_cast<float>(p / sum);
}

}  // namespace maskserve::engine
