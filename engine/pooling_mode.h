// How per-token hidden states become one sentence vector. Shared by the
// encoder (which computes the pooled vector), the whitening code (profiles are
// fitted per pooling) and the model config (sentence-transformers default).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace maskserve::engine {

enum class PoolingMode {
  kCls,           // last_hidden_state[0]
  kMean,          // masked mean over real tokens, specials included
  kFirstLastAvg,  // masked mean of (hidden_states[1] + hidden_states[-1]) / 2
  kMax,           // element-wise max over real tokens
  kLastToken,     // last_hidden_state[len - 1]
};

// Lower-case name used in logs, files and JSON: "cls", "mean",
// "first_last_avg", "max", "last_token".
std::string_view PoolingModeName(PoolingMode mode);

// Inverse of PoolingModeName.
absl::StatusOr<PoolingMode> ParsePoolingMode(std::string_view name);

}  // namespace maskserve::engine
