// A named whitening profile as the server keeps it: metadata, the fitted
// statistics and the transform for the profile's own (k, beta, gamma),
// precomputed once so every Embed request only runs the small GEMM.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/pooling_mode.h"
#include "engine/whitening.h"

namespace maskserve::server {

// What identifies and configures a profile (dim and num_samples live in the
// params).
struct WhiteningProfileInfo {
  // Model the profile belongs to ([A-Za-z0-9_.-]{1,64}).
  std::string model;
  // Profile name ([A-Za-z0-9_.-]{1,64}).
  std::string name;
  // Pooling the statistics were collected with; Embed must use the same.
  engine::PoolingMode pooling = engine::PoolingMode::kFirstLastAvg;
  // Output dimensions, 1..dim.
  int k = 0;
  // Mean-shift weight in [0, 1].
  float beta = 1;
  // Variance-scaling exponent in [0, 1].
  float gamma = 1;
  // Creation time, Unix seconds (0 in Create = now).
  int64_t created_unix_s = 0;
};

// True for [A-Za-z0-9_.-]{1,64} other than "." and "..": such names are safe
// as single path components.
bool IsValidWhiteningName(absl::string_view name);

// INVALID_ARGUMENT "<what> name '<name>' is invalid: ..." unless valid.
absl::Status ValidateWhiteningName(absl::string_view name, absl::string_view what);

class StoredProfile {
 public:
  // Validates names and params (sizes, finite values, descending eigenvalues;
  // not orthonormality, which the JSON import checks), rounds the params to
  // float32 (what the profile file stores, so a profile reloaded from disk is
  // bit-identical to the one that was stored) and builds the transform.
  // INVALID_ARGUMENT naming the field on bad input.
  static absl::StatusOr<std::shared_ptr<const StoredProfile>> Create(
      WhiteningProfileInfo info, engine::WhiteningParams params);

  const WhiteningProfileInfo& info() const { return info_; }
  const std::string& model() const { return info_.model; }
  const std::string& name() const { return info_.name; }
  int dim() const { return params_.dim; }
  int64_t num_samples() const { return params_.num_samples; }
  // Statistics, float32-exact.
  const engine::WhiteningParams& params() const { return params_; }
  // x -> (x - beta mu) U[:, :k] Lambda[:k]^(-gamma/2).
  const engine::WhiteningTransform& transform() const { return transform_; }

 private:
  StoredProfile(WhiteningProfileInfo info, engine::WhiteningParams params,
                engine::WhiteningTransform transform)
      : info_(std::move(info)), params_(std::move(params)), transform_(std::move(transform)) {}

  WhiteningProfileInfo info_;
  engine::WhiteningParams params_;
  engine::WhiteningTransform transform_;
};

}  // namespace maskserve::server
