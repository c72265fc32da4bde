#include "engine/t5_relative_position.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {

int T5RelativePositionBucket(int relative_position, bool bidirectional, int num_buckets,
                             int max_distance) {
  int bucket = 0;
  int n = relative_position;
  if (bidirectional) {
    num_buckets /= 2;
    if (n > 0) bucket += num_buckets;
    n = std::abs(n);
  } else {
    n = -std::min(n, 0);
  }
  const int max_exact = num_buckets / 2;
  if (n < max_exact) return bucket + n;
  // HF: max_exact + (log(n.float() / max_exact) / math.log(max_distance /
  // max_exact) * (num_buckets - max_exact)).to(long), in float32.
  const float ratio = static_cast<float>(n) / static_cast<float>(max_exact);
  const float denom = static_cast<float>(
      std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)));
  const float scaled = std::log(ratio) / denom * static_cast<float>(num_buckets - max_exact);
  const int large = std::min(max_exact + static_cast<int>(scaled), num_buckets - 1);
  return bucket + large;
}

absl::StatusOr<T5RelativeBias> T5RelativeBias::Create(absl::Span<const float> embedding,
                                                      int num_buckets, int num_heads,
                                                      int max_distance, bool bidirectional,
                                                      int max_length) {
  if (num_buckets < 2 || num_heads < 1 || max_distance < 1 || max_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("T5 relative bias: bad dimensions (buckets ", num_buckets, ", heads ",
                     num_heads, ", max_distance ", max_distance, ", max_length ", max_length, ")"));
  }
  if (embedding.size() != static_cast<size_t>(num_buckets) * num_heads) {
    return absl::InvalidArgumentError(absl::StrCat("T5 relative bias: ", embedding.size(),
                                                   " values for ", num_buckets, " buckets x ",
                                                   num_heads, " heads"));
  }
  T5RelativeBias t;
  t.max_length_ = max_length;
  t.stride_ = 2 * int64_t{max_length} - 1;
  t.values_.resize(static_cast<size_t>(num_heads) * t.stride_);
  for (int64_t i = 0; i < t.stride_; ++i) {
    // Entry i holds q - k = i - (max_length - 1); HF's relative position is
    // key - query.
    const int q_minus_k = static_cast<int>(i - (max_length - 1));
    const int bucket =
        T5RelativePositionBucket(-q_minus_k, bidirectional, num_buckets, max_distance);
    for (int h = 0; h < num_heads; ++h) {
      t.values_[static_cast<size_t>(h) * t.stride_ + i] =
          embedding[static_cast<size_t>(bucket) * num_heads + h];
    }
  }
  return t;
}

RelativePositionBias T5RelativeBias::view() const {
  RelativePositionBias b;
  if (values_.empty()) return b;
  b.table = values_.data();
  b.head_stride = stride_;
  b.center = max_length_ - 1;
  return b;
}

}  // namespace maskserve::engine
