#include "engine/tokenizer/truncation.h"

#include <algorithm>

namespace maskserve::engine {
namespace {

void Remove(int32_t n, TruncationOptions::Side side, int32_t* front, int32_t* back) {
  if (side == TruncationOptions::Side::kLeft) {
    *front += n;
  } else {
    *back += n;
  }
}

}  // namespace

TruncationPlan PlanTruncation(int32_t len_a, int32_t len_b, int32_t num_special,
                              const TruncationOptions& options) {
  TruncationPlan plan;
  const bool pair = len_b >= 0;
  const int64_t total = int64_t{len_a} + (pair ? len_b : 0) + num_special;
  if (options.max_length <= 0 || total <= options.max_length) return plan;
  const int32_t n = static_cast<int32_t>(total - options.max_length);
  using Strategy = TruncationOptions::Strategy;
  if (options.strategy == Strategy::kOnlyFirst ||
      (options.strategy == Strategy::kLongestFirst && !pair)) {
    if (len_a > n) Remove(n, options.side, &plan.a_front, &plan.a_back);
  } else if (options.strategy == Strategy::kLongestFirst) {
    // HF removes one token at a time from the longer sequence, B on ties.
    int32_t a = len_a, b = len_b, cut_a = 0, cut_b = 0;
    for (int32_t i = 0; i < n; ++i) {
      if (a > b) {
        --a, ++cut_a;
      } else if (b > 0) {
        --b, ++cut_b;
      }
    }
    Remove(cut_a, options.side, &plan.a_front, &plan.a_back);
    Remove(cut_b, options.side, &plan.b_front, &plan.b_back);
  } else if (options.strategy == Strategy::kOnlySecond && pair) {
    if (len_b > n) Remove(n, options.side, &plan.b_front, &plan.b_back);
  }
  return plan;
}

}  // namespace maskserve::engine
