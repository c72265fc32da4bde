#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace maskserve::engine {

int32_t Argmax(absl::Span<const float> scores) {
  if (scores.empty()) return -1;
  int32_t best = -1;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) continue;
    if (best < 0 || scores[i] > scores[best]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

namespace {

// max and log(sum(exp(s - max))) over the finite part of scores.
std::pair<double, double> LogNormalizer(absl::Span<const float> scores) {
  double max_score = -std::numeric_limits<double>::infinity();
  for (float s : scores) max_score = std::max(max_score, static_cast<double>(s));
  double sum = 0.0;
  for (float s : scores) sum += std::exp(static_cast<double>(s) - max_score);
  return {max_score, std::log(sum)};
}

}  // namespace

float TokenLogProb(absl::Span<const float> scores, int32_t token) {
  if (token < 0 || token >= static_cast<int32_t>(scores.size())) {
    return -std::numeric_limits<float>::infinity();
  }
  const auto [max_score, log_sum] = LogNormalizer(scores);
  return static_cast<float>(static_cast<double>(scores[token]) - max_score - log_sum);
}

std::vector<std::pair<int32_t, float>> TopLogProbs(absl::Span<const float> scores, int n) {
  const int vocab = static_cast<int>(scores.size());
  n = std::max(0, std::min(n, vocab));
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  const auto [max_score, log_sum] = LogNormalizer(scores);
  std::vector<std::pair<int32_t, float>> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    out.emplace_back(ids[i],
                     static_cast<float>(static_cast<double>(scores[ids[i]]) - max_score - log_sum));
  }
  return out;
}

int32_t TokenSampler::Sample(absl::Span<const float> scores) {
  const double u = NextUniform();
  if (scores.empty()) return -1;
  double max_score = -std::numeric_limits<double>::infinity();
  for (float s : scores) {
    if (!std::isnan(s)) max_score = std::max(max_score, static_cast<double>(s));
  }
  if (!std::isfinite(max_score)) return Argmax(scores);
  double total = 0.0;
  for (float s : scores) {
    if (!std::isnan(s)) total += std::exp(static_cast<double>(s) - max_score);
  }
  // Inverse CDF; the last id with non-zero mass absorbs rounding.
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_positive = -1;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) continue;
    const double p = std::exp(static_cast<double>(scores[i]) - max_score);
    if (p <= 0.0) continue;
    cumulative += p;
    last_positive = static_cast<int32_t>(i);
    if (target < cumulative) return last_positive;
  }
  return last_positive;
}

}  // namespace maskserve::engine
