// BERT-whitening (Su Jianlin, "BERT-whitening" and "当BERT-whitening引入超参数"):
// sentence vectors x [d] are mapped to
//
//   x~ = (x - beta * mu) * U * Lambda^(-gamma / 2),   first k columns kept,
//
// where mu is the mean and Sigma = U Lambda U^T the covariance of a sample of
// sentence vectors (eigenvalues descending). beta = gamma = 1 is classic
// whitening (zero mean, identity covariance on the fitted data); gamma = 0 is
// a pure rotation (PCA), beta = 0 keeps the mean. k <= d truncates to the
// top-variance directions.
//
// Fitting streams: WhiteningAccumulator keeps count, mean and the co-moment
// matrix in double (Chan et al.'s pairwise update, which stays accurate when
// the mean is large compared to the spread, as it is for BERT vectors) and
// never stores the vectors, so memory is O(d^2) however many sentences are
// fed. Accumulators merge, so workers can fit shards in parallel.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace maskserve::engine {

// Largest dimension a whitening profile may have (hidden sizes are far
// smaller; this bounds what a corrupt or hostile file can make us allocate).
inline constexpr int kMaxWhiteningDim = 1 << 16;

// Eigenvalues below kEigenvalueFloor * (largest eigenvalue) are raised to that
// floor before Lambda^(-gamma/2). With fewer samples than dimensions (n <= d,
// common when fitting on a few hundred sentences) the covariance has rank
// n - 1 and its null-space eigenvalues are rounding noise (around 1e-16 of the
// largest, possibly negative); without the floor they would give inf/NaN or
// arbitrarily large scales. 1e-12 keeps every scale finite (at most 1e6 times
// the top direction's) while leaving all directions whose variance is
// numerically meaningful untouched. Directions at the floor carry no signal:
// choose k <= n - 1 when fitting on few samples.
inline constexpr double kEigenvalueFloor = 1e-12;

// Streaming mean / covariance of d-dimensional vectors, in double.
// Not thread-safe; use one per thread and Merge.
class WhiteningAccumulator {
 public:
  // dim must be in [1, kMaxWhiteningDim] (checked in Add / Fit).
  explicit WhiteningAccumulator(int dim);

  // Adds n row-major vectors of dimension d (rows is [n, d]). INVALID_ARGUMENT
  // when d != dim() or a value is not finite (the batch is then not added).
  absl::Status Add(const float* rows, int n, int d);

  // Adds everything `other` has seen, as if its vectors had been added here.
  // INVALID_ARGUMENT on a dimension mismatch.
  absl::Status Merge(const WhiteningAccumulator& other);

  int dim() const { return dim_; }
  int64_t count() const { return count_; }

  // Mean of the vectors seen, [dim] (zeros when count() == 0).
  const std::vector<double>& mean() const { return mean_; }

  // Sample covariance (co-moment / (count - 1), as numpy.cov), row-major
  // [dim * dim], symmetric. FAILED_PRECONDITION with fewer than 2 vectors.
  absl::StatusOr<std::vector<double>> Covariance() const;

 private:
  int dim_;
  int64_t count_ = 0;
  std::vector<double> mean_;
  // Sum over vectors of (x - mean)(x - mean)^T; column-major [dim * dim],
  // only the lower triangle is maintained.
  std::vector<double> comoment_;
};

// A fitted profile's statistics. The transform for given (k, beta, gamma) is
// derived from these, so one fit serves any hyper-parameters.
struct WhiteningParams {
  // Input dimension d.
  int dim = 0;
  // Vectors the statistics came from.
  int64_t num_samples = 0;
  // mu, [dim].
  std::vector<double> mean;
  // Lambda, [dim], descending (non-increasing).
  std::vector<double> eigenvalues;
  // U, row-major [dim * dim]: eigenvectors[r * dim + c] = U(r, c); column c is
  // the eigenvector of eigenvalues[c].
  std::vector<double> eigenvectors;
};

// Eigendecomposition of the accumulator's covariance. Eigenvalues are sorted
// descending and floored at kEigenvalueFloor * max (so never negative); each
// eigenvector's sign is fixed so its largest-magnitude component is positive,
// which makes fits reproducible. FAILED_PRECONDITION with fewer than 2 samples
// or an all-zero covariance (all vectors identical).
absl::StatusOr<WhiteningParams> Fit(const WhiteningAccumulator& accumulator);

// For parameters from outside (imports): dim in [1, kMaxWhiteningDim], array
// sizes, finite values, eigenvalues descending with a positive maximum and,
// when orthonormal_tolerance > 0, max |U^T U - I| <= orthonormal_tolerance.
// INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateWhiteningParams(const WhiteningParams& params,
                                     double orthonormal_tolerance = 1e-3);

// The affine map x -> x * W - b for one (params, k, beta, gamma), with
//   W = U[:, :k] * diag(max(Lambda[:k], floor)^(-gamma/2))   [d, k]
//   b = beta * mu * W                                        [k]
// computed in double and stored as float. Immutable and thread-safe.
class WhiteningTransform {
 public:
  // INVALID_ARGUMENT naming the field unless 1 <= k <= params.dim and beta,
  // gamma are finite and in [0, 1]; params are checked as by
  // ValidateWhiteningParams without the (costly) orthonormality check.
  static absl::StatusOr<WhiteningTransform> Create(const WhiteningParams& params, int k,
                                                   float beta, float gamma);

  // out[i] = x[i] * W - b for the n row-major vectors x ([n, input_dim()]);
  // out is [n, output_dim()] and must not alias x. Each output row is
  // computed in the same order whatever n is, so a vector's result does not
  // depend on what it was batched with.
  void Apply(const float* x, int n, float* out) const;

  int input_dim() const { return dim_; }
  int output_dim() const { return k_; }
  float beta() const { return beta_; }
  float gamma() const { return gamma_; }
  // W, row-major [input_dim * output_dim].
  const std::vector<float>& weights() const { return weights_; }
  // b, [output_dim].
  const std::vector<float>& bias() const { return bias_; }

 private:
  WhiteningTransform() = default;

  int dim_ = 0;
  int k_ = 0;
  float beta_ = 1;
  float gamma_ = 1;
  std::vector<float> weights_;
  std::vector<float> bias_;
};

}  // namespace maskserve::engine
