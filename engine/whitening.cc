#include "engine/whitening.h"

// The server sizes its worker and OpenMP thread counts from a CPU budget;
// fitting runs on one of those workers and must not start its own team.
#define EIGEN_DONT_PARALLELIZE
// GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512
// intrinsics (the `__m512d __Y = __Y;` idiom) when Eigen's packet transpose
// is inlined; nothing in this file is affected.
// (clang, which builds this file for the fuzzers, has no such warning.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace maskserve::engine {
namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows converted to double per rank update: bounds the temporary to
// kChunkRows * dim doubles whatever batch the caller passes.
constexpr int kChunkRows = 256;

bool ValidDim(int dim) { return dim >= 1 && dim <= kMaxWhiteningDim; }

absl::Status DimError(int dim) {
  return absl::InvalidArgumentError(
      absl::StrCat("dim must be in [1, ", kMaxWhiteningDim, "], got ", dim));
}

// Chan et al.: folds a group with n_b vectors, mean `mean_b` and co-moment
// already added into `comoment`, into the running (count, mean).
void CombineMeans(int64_t n_a, int64_t n_b, const Eigen::VectorXd& mean_b, double* mean,
                  double* comoment, int d) {
  Eigen::Map<Eigen::VectorXd> mean_a(mean, d);
  Eigen::Map<Eigen::MatrixXd> m2(comoment, d, d);
  const double n = static_cast<double>(n_a + n_b);
  const Eigen::VectorXd delta = mean_b - mean_a;
  if (n_a > 0) {
    m2.selfadjointView<Eigen::Lower>().rankUpdate(delta, static_cast<double>(n_a) *
                                                             static_cast<double>(n_b) / n);
  }
  mean_a += delta * (static_cast<double>(n_b) / n);
}

absl::Status CheckFinite(const std::vector<double>& v, const char* field) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] is not finite"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckUnitInterval(float v, const char* field) {
  if (!std::isfinite(v) || v < 0 || v > 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s must be a finite number in [0, 1], got %g", field, v));
  }
  return absl::OkStatus();
}

}  // namespace

WhiteningAccumulator::WhiteningAccumulator(int dim) : dim_(dim) {
  if (ValidDim(dim)) {
    mean_.assign(static_cast<size_t>(dim), 0.0);
    comoment_.assign(static_cast<size_t>(dim) * static_cast<size_t>(dim), 0.0);
  }
}

absl::Status WhiteningAccumulator::Add(const float* rows, int n, int d) {
  if (!ValidDim(dim_)) return DimError(dim_);
  if (d != dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("vectors have dimension ", d, ", the accumulator ", dim_));
  }
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("n must be >= 0, got ", n));
  if (n == 0) return absl::OkStatus();
  if (rows == nullptr) return absl::InvalidArgumentError("rows is null");
  // One NaN would poison every statistic; refuse the batch before touching
  // the state so the caller can skip it and go on.
  const size_t total = static_cast<size_t>(n) * static_cast<size_t>(d);
  for (size_t i = 0; i < total; ++i) {
    if (!std::isfinite(rows[i])) {
      return absl::InvalidArgumentError(absl::StrCat("vector ", i / static_cast<size_t>(d),
                                                     ", component ", i % static_cast<size_t>(d),
                                                     " is not finite"));
    }
  }
  Eigen::Map<Eigen::MatrixXd> m2(comoment_.data(), d, d);
  for (int start = 0; start < n; start += kChunkRows) {
    const int m = std::min(kChunkRows, n - start);
    RowMajorD chunk =
        Eigen::Map<const RowMajorF>(rows + static_cast<size_t>(start) * d, m, d).cast<double>();
    const Eigen::VectorXd chunk_mean = chunk.colwise().mean().transpose();
    chunk.rowwise() -= chunk_mean.transpose();
    // Co-moment of the chunk about its own mean (no cancellation), then the
    // between-group term.
    m2.selfadjointView<Eigen::Lower>().rankUpdate(chunk.transpose());
    CombineMeans(count_, m, chunk_mean, mean_.data(), comoment_.data(), d);
    count_ += m;
  }
  return absl::OkStatus();
}

absl::Status WhiteningAccumulator::Merge(const WhiteningAccumulator& other) {
  if (other.dim_ != dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot merge accumulators of dimension ", other.dim_, " and ", dim_));
  }
  if (other.count_ == 0) return absl::OkStatus();
  if (count_ == 0) {
    count_ = other.count_;
    mean_ = other.mean_;
    comoment_ = other.comoment_;
    return absl::OkStatus();
  }
  const int d = dim_;
  Eigen::Map<Eigen::MatrixXd> m2(comoment_.data(), d, d);
  m2.triangularView<Eigen::Lower>() +=
      Eigen::Map<const Eigen::MatrixXd>(other.comoment_.data(), d, d);
  CombineMeans(count_, other.count_, Eigen::Map<const Eigen::VectorXd>(other.mean_.data(), d),
               mean_.data(), comoment_.data(), d);
  count_ += other.count_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> WhiteningAccumulator::Covariance() const {
  if (count_ < 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("whitening needs at least 2 samples, got ", count_));
  }
  const size_t d = static_cast<size_t>(dim_);
  const double inv = 1.0 / static_cast<double>(count_ - 1);
  std::vector<double> cov(d * d);
  for (size_t c = 0; c < d; ++c) {
    for (size_t r = c; r < d; ++r) {
      const double v = comoment_[c * d + r] * inv;
      cov[r * d + c] = v;
      cov[c * d + r] = v;
    }
  }
  return cov;
}

absl::StatusOr<WhiteningParams> Fit(const WhiteningAccumulator& accumulator) {
  if (!ValidDim(accumulator.dim())) return DimError(accumulator.dim());
  auto cov = accumulator.Covariance();
  if (!cov.ok()) return cov.status();
  const int d = accumulator.dim();
  const Eigen::MatrixXd sigma = Eigen::Map<const Eigen::MatrixXd>(cov->data(), d, d);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(sigma, Eigen::ComputeEigenvectors);
  if (solver.info() != Eigen::Success) {
    return absl::InternalError("eigendecomposition of the covariance did not converge");
  }
  const Eigen::VectorXd& values = solver.eigenvalues();  // ascending
  const Eigen::MatrixXd& vectors = solver.eigenvectors();
  const double top = values(d - 1);
  if (!(top > 0)) {
    return absl::FailedPreconditionError(
        "the covariance is zero (all vectors identical): nothing to whiten");
  }
  const double floor = kEigenvalueFloor * top;
  WhiteningParams params;
  params.dim = d;
  params.num_samples = accumulator.count();
  params.mean = accumulator.mean();
  params.eigenvalues.resize(static_cast<size_t>(d));
  params.eigenvectors.resize(static_cast<size_t>(d) * static_cast<size_t>(d));
  for (int c = 0; c < d; ++c) {
    const int src = d - 1 - c;
    params.eigenvalues[static_cast<size_t>(c)] = std::max(values(src), floor);
    Eigen::Index pivot = 0;
    vectors.col(src).cwiseAbs().maxCoeff(&pivot);
    const double sign = vectors(pivot, src) < 0 ? -1.0 : 1.0;
    for (int r = 0; r < d; ++r) {
      params.eigenvectors[static_cast<size_t>(r) * d + c] = sign * vectors(r, src);
    }
  }
  return params;
}

absl::Status ValidateWhiteningParams(const WhiteningParams& params,
                                     double orthonormal_tolerance) {
  const int d = params.dim;
  if (!ValidDim(d)) return DimError(d);
  const size_t ud = static_cast<size_t>(d);
  const auto size_error = [](const char* field, size_t got, const char* want, size_t n) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " has ", got, " entries, expected ", want, " = ", n));
  };
  if (params.mean.size() != ud) return size_error("mean", params.mean.size(), "dim", ud);
  if (params.eigenvalues.size() != ud) {
    return size_error("eigenvalues", params.eigenvalues.size(), "dim", ud);
  }
  if (params.eigenvectors.size() != ud * ud) {
    return size_error("eigenvectors", params.eigenvectors.size(), "dim*dim", ud * ud);
  }
  if (params.num_samples < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_samples must be >= 0, got ", params.num_samples));
  }
  if (auto s = CheckFinite(params.mean, "mean"); !s.ok()) return s;
  if (auto s = CheckFinite(params.eigenvalues, "eigenvalues"); !s.ok()) return s;
  if (auto s = CheckFinite(params.eigenvectors, "eigenvectors"); !s.ok()) return s;
  for (size_t i = 1; i < ud; ++i) {
    if (params.eigenvalues[i] > params.eigenvalues[i - 1]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "eigenvalues must be descending, but eigenvalues[%d] = %g > eigenvalues[%d] = %g", i,
          params.eigenvalues[i], i - 1, params.eigenvalues[i - 1]));
    }
  }
  if (!(params.eigenvalues[0] > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "eigenvalues must have a positive maximum, got eigenvalues[0] = %g",
        params.eigenvalues[0]));
  }
  if (orthonormal_tolerance > 0) {
    const Eigen::Map<const RowMajorD> u(params.eigenvectors.data(), d, d);
    const Eigen::MatrixXd gram = u.transpose() * u;
    const double err = (gram - Eigen::MatrixXd::Identity(d, d)).cwiseAbs().maxCoeff();
    if (!(err <= orthonormal_tolerance)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "eigenvectors are not orthonormal: max |U^T U - I| = %g > %g", err,
          orthonormal_tolerance));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<WhiteningTransform> WhiteningTransform::Create(const WhiteningParams& params,
                                                              int k, float beta, float gamma) {
  if (auto s = ValidateWhiteningParams(params, /*orthonormal_tolerance=*/0); !s.ok()) return s;
  const int d = params.dim;
  if (k < 1 || k > d) {
    return absl::InvalidArgumentError(absl::StrCat("k must be in [1, ", d, "], got ", k));
  }
  if (auto s = CheckUnitInterval(beta, "beta"); !s.ok()) return s;
  if (auto s = CheckUnitInterval(gamma, "gamma"); !s.ok()) return s;

  WhiteningTransform t;
  t.dim_ = d;
  t.k_ = k;
  t.beta_ = beta;
  t.gamma_ = gamma;
  const size_t uk = static_cast<size_t>(k);
  const double floor = kEigenvalueFloor * params.eigenvalues[0];
  std::vector<double> scale(uk);
  for (size_t c = 0; c < uk; ++c) {
    scale[c] = std::pow(std::max(params.eigenvalues[c], floor), -0.5 * static_cast<double>(gamma));
  }
  t.weights_.resize(static_cast<size_t>(d) * uk);
  std::vector<double> bias(uk, 0.0);
  for (int r = 0; r < d; ++r) {
    const double mu = static_cast<double>(beta) * params.mean[static_cast<size_t>(r)];
    for (size_t c = 0; c < uk; ++c) {
      const double w = params.eigenvectors[static_cast<size_t>(r) * d + c] * scale[c];
      t.weights_[static_cast<size_t>(r) * uk + c] = static_cast<float>(w);
      bias[c] += mu * w;
    }
  }
  t.bias_.assign(bias.begin(), bias.end());
  return t;
}

void WhiteningTransform::Apply(const float* x, int n, float* out) const {
  // Rows are processed in small blocks so each row of W is read once per
  // block while the block's outputs stay in L1; the sum for every output runs
  // over r = 0..d-1 in order, independent of n and of the block a row is in.
  constexpr int kBlockRows = 8;
  const int d = dim_;
  const size_t k = static_cast<size_t>(k_);
  for (int i0 = 0; i0 < n; i0 += kBlockRows) {
    const int m = std::min(kBlockRows, n - i0);
    float* block = out + static_cast<size_t>(i0) * k;
    std::fill(block, block + static_cast<size_t>(m) * k, 0.0f);
    for (int r = 0; r < d; ++r) {
      const float* __restrict w = weights_.data() + static_cast<size_t>(r) * k;
      for (int i = 0; i < m; ++i) {
        const float xv = x[static_cast<size_t>(i0 + i) * d + r];
        float* __restrict o = block + static_cast<size_t>(i) * k;
        for (size_t c = 0; c < k; ++c) o[c] += xv * w[c];
      }
    }
    for (int i = 0; i < m; ++i) {
      float* __restrict o = block + static_cast<size_t>(i) * k;
      for (size_t c = 0; c < k; ++c) o[c] -= bias_[c];
    }
  }
}

}  // namespace maskserve::engine
