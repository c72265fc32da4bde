#include "engine/pooling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {

absl::Status Pool(PoolingMode mode, const float* last_hidden, const float* first_layer_hidden,
                  absl::Span<const int32_t> cu_seqlens, int hidden, float* out) {
  if (cu_seqlens.size() < 2 || cu_seqlens[0] != 0) {
    return absl::InvalidArgumentError("Pool: cu_seqlens must hold 0 and one offset per sequence");
  }
  if (hidden <= 0 || last_hidden == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("Pool: null buffer or non-positive hidden size");
  }
  if (mode == PoolingMode::kFirstLastAvg && first_layer_hidden == nullptr) {
    return absl::InvalidArgumentError("Pool: first_last_avg needs the first layer's hidden states");
  }
  const size_t h = static_cast<size_t>(hidden);
  std::vector<double> acc(h);
  for (size_t b = 0; b + 1 < cu_seqlens.size(); ++b) {
    const int begin = cu_seqlens[b], end = cu_seqlens[b + 1];
    if (end <= begin) {
      return absl::InvalidArgumentError(absl::StrCat("Pool: sequence ", b, " is empty"));
    }
    float* o = out + b * h;
    const float* first = last_hidden + static_cast<size_t>(begin) * h;
    switch (mode) {
      case PoolingMode::kCls:
        std::copy(first, first + h, o);
        break;
      case PoolingMode::kLastToken: {
        const float* last = last_hidden + static_cast<size_t>(end - 1) * h;
        std::copy(last, last + h, o);
        break;
      }
      case PoolingMode::kMax:
        std::fill(o, o + h, -std::numeric_limits<float>::infinity());
        for (int t = begin; t < end; ++t) {
          const float* r = last_hidden + static_cast<size_t>(t) * h;
          for (size_t c = 0; c < h; ++c) o[c] = std::max(o[c], r[c]);
        }
        break;
      case PoolingMode::kMean:
      case PoolingMode::kFirstLastAvg: {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int t = begin; t < end; ++t) {
          const float* r = last_hidden + static_cast<size_t>(t) * h;
          if (mode == PoolingMode::kMean) {
            for (size_t c = 0; c < h; ++c) acc[c] += r[c];
          } else {
            const float* f = first_layer_hidden + static_cast<size_t>(t) * h;
            for (size_t c = 0; c < h; ++c) acc[c] += 0.5 * (static_cast<double>(f[c]) + r[c]);
          }
        }
        const double inv = 1.0 / (end - begin);
        for (size_t c = 0; c < h; ++c) o[c] = static_cast<float>(acc[c] * inv);
        break;
      }
    }
  }
  return absl::OkStatus();
}

void L2Normalize(float* v, int rows, int dim) {
  for (int r = 0; r < rows; ++r) {
    float* row = v + static_cast<size_t>(r) * dim;
    double sq = 0;
    for (int c = 0; c < dim; ++c) sq += static_cast<double>(row[c]) * row[c];
    const double inv = 1.0 / std::max(std::sqrt(sq), 1e-12);
    for (int c = 0; c < dim; ++c) row[c] = static_cast<float>(row[c] * inv);
  }
}

}  // namespace maskserve::engine
