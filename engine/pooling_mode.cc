#include "engine/pooling_mode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace maskserve::engine {

std::string_view PoolingModeName(PoolingMode mode) {
  switch (mode) {
    case PoolingMode::kCls:
      return "cls";
    case PoolingMode::kMean:
      return "mean";
    case PoolingMode::kFirstLastAvg:
      return "first_last_avg";
    case PoolingMode::kMax:
      return "max";
    case PoolingMode::kLastToken:
      return "last_token";
  }
  return "unknown";
}

absl::StatusOr<PoolingMode> ParsePoolingMode(std::string_view name) {
  for (PoolingMode m : {PoolingMode::kCls, PoolingMode::kMean, PoolingMode::kFirstLastAvg,
                        PoolingMode::kMax, PoolingMode::kLastToken}) {
    if (PoolingModeName(m) == name) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown pooling mode '", std::string(name), "'"));
}

}  // namespace maskserve::engine
