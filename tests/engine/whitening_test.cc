// BERT-whitening math: streaming statistics against a two-pass reference,
// eigendecomposition properties and what each hyper-parameter does.
// References are plain double loops (no Eigen here: the engine compiles
// Eigen with AVX-512 and tests with AVX2, mixing them would break the ODR).
#include "engine/whitening.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace maskserve::engine {
namespace {

using Matrix = std::vector<double>;  // row-major

struct Moments {
  std::vector<double> mean;
  Matrix cov;  // n - 1 normalised
};

template <typename T>
Moments TwoPass(const std::vector<T>& x, int n, int d) {
  Moments m;
  m.mean.assign(d, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) m.mean[j] += x[i * d + j];
  for (double& v : m.mean) v /= n;
  m.cov.assign(static_cast<size_t>(d) * d, 0.0);
  for (int i = 0; i < n; ++i)
    for (int a = 0; a < d; ++a)
      for (int b = 0; b < d; ++b)
        m.cov[a * d + b] += (x[i * d + a] - m.mean[a]) * (x[i * d + b] - m.mean[b]);
  for (double& v : m.cov) v /= (n - 1);
  return m;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Random orthogonal matrix (Gram-Schmidt on Gaussian rows).
Matrix RandomOrthogonal(int d, std::mt19937_64& rng) {
  std::normal_distribution<double> g;
  Matrix q(static_cast<size_t>(d) * d);
  for (double& v : q) v = g(rng);
  for (int i = 0; i < d; ++i) {
    for (int pass = 0; pass < 2; ++pass) {
      for (int j = 0; j < i; ++j) {
        double dot = 0;
        for (int c = 0; c < d; ++c) dot += q[i * d + c] * q[j * d + c];
        for (int c = 0; c < d; ++c) q[i * d + c] -= dot * q[j * d + c];
      }
    }
    double norm = 0;
    for (int c = 0; c < d; ++c) norm += q[i * d + c] * q[i * d + c];
    norm = std::sqrt(norm);
    for (int c = 0; c < d; ++c) q[i * d + c] /= norm;
  }
  return q;
}

// x = z * diag(stddev) * Q + m with z standard normal: covariance
// Q^T diag(stddev^2) Q, principal directions the rows of Q.
struct Data {
  int n, d;
  std::vector<float> x;
  Matrix q;
  std::vector<double> stddev;
};

Data MakeData(int n, int d, uint64_t seed, std::vector<double> stddev = {}) {
  std::mt19937_64 rng(seed);
  Data data{n, d, {}, RandomOrthogonal(d, rng), std::move(stddev)};
  if (data.stddev.empty()) {
    std::uniform_real_distribution<double> u(0.5, 2.0);
    for (int i = 0; i < d; ++i) data.stddev.push_back(u(rng));
  }
  std::normal_distribution<double> g;
  std::vector<double> m(d);
  for (double& v : m) v = g(rng);
  data.x.resize(static_cast<size_t>(n) * d);
  std::vector<double> z(d);
  for (int i = 0; i < n; ++i) {
    for (int a = 0; a < d; ++a) z[a] = g(rng) * data.stddev[a];
    for (int c = 0; c < d; ++c) {
      double v = m[c];
      for (int a = 0; a < d; ++a) v += z[a] * data.q[a * d + c];
      data.x[i * d + c] = static_cast<float>(v);
    }
  }
  return data;
}

WhiteningAccumulator Accumulate(const Data& data) {
  WhiteningAccumulator acc(data.d);
  EXPECT_TRUE(acc.Add(data.x.data(), data.n, data.d).ok());
  return acc;
}

std::vector<float> ApplyAll(const WhiteningTransform& t, const std::vector<float>& x, int n) {
  std::vector<float> out(static_cast<size_t>(n) * t.output_dim());
  t.Apply(x.data(), n, out.data());
  return out;
}

WhiteningParams FitOrDie(const Data& data) {
  auto params = Fit(Accumulate(data));
  EXPECT_TRUE(params.ok()) << params.status();
  return *params;
}

WhiteningTransform MakeTransform(const WhiteningParams& p, int k, float beta, float gamma) {
  auto t = WhiteningTransform::Create(p, k, beta, gamma);
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

TEST(WhiteningAccumulatorTest, BatchesMatchTwoPassReference) {
  const Data data = MakeData(1500, 24, 1);
  WhiteningAccumulator acc(24);
  // Uneven batches, one larger than the internal 256-row chunk.
  int pos = 0;
  for (int batch : {1, 7, 300, 2, 690, 500}) {
    ASSERT_TRUE(acc.Add(data.x.data() + pos * 24, batch, 24).ok());
    pos += batch;
  }
  ASSERT_EQ(pos, data.n);
  ASSERT_EQ(acc.count(), data.n);
  const Moments ref = TwoPass(data.x, data.n, data.d);
  auto cov = acc.Covariance();
  ASSERT_TRUE(cov.ok()) << cov.status();
  // 1e-10 relative to the largest entry: both are double computations of the
  // same float inputs; they differ only in summation order.
  EXPECT_LE(MaxAbsDiff(acc.mean(), ref.mean), 1e-10 * MaxAbs(ref.mean));
  EXPECT_LE(MaxAbsDiff(*cov, ref.cov), 1e-10 * MaxAbs(ref.cov));
}

TEST(WhiteningAccumulatorTest, LargeMeanStaysAccurate) {
  // BERT vectors have a mean far larger than their spread; a naive
  // sum-of-squares accumulator loses the covariance to cancellation here.
  Data data = MakeData(800, 8, 2);
  for (float& v : data.x) v += 1000.0f;
  WhiteningAccumulator acc(8);
  for (int i = 0; i < data.n; i += 100) ASSERT_TRUE(acc.Add(data.x.data() + i * 8, 100, 8).ok());
  const Moments ref = TwoPass(data.x, data.n, data.d);
  auto cov = acc.Covariance();
  ASSERT_TRUE(cov.ok());
  EXPECT_LE(MaxAbsDiff(*cov, ref.cov), 1e-10 * MaxAbs(ref.cov));
}

TEST(WhiteningAccumulatorTest, MergeEqualsSingleAccumulator) {
  const Data data = MakeData(1000, 16, 3);
  WhiteningAccumulator single = Accumulate(data);
  WhiteningAccumulator a(16), b(16), c(16), empty(16);
  ASSERT_TRUE(a.Add(data.x.data(), 1, 16).ok());
  ASSERT_TRUE(b.Add(data.x.data() + 16, 599, 16).ok());
  ASSERT_TRUE(c.Add(data.x.data() + 600 * 16, 400, 16).ok());
  WhiteningAccumulator merged(16);
  ASSERT_TRUE(merged.Merge(empty).ok());
  ASSERT_TRUE(merged.Merge(a).ok());
  ASSERT_TRUE(merged.Merge(empty).ok());
  ASSERT_TRUE(merged.Merge(b).ok());
  ASSERT_TRUE(merged.Merge(c).ok());
  EXPECT_EQ(merged.count(), single.count());
  auto cov_s = single.Covariance();
  auto cov_m = merged.Covariance();
  ASSERT_TRUE(cov_s.ok() && cov_m.ok());
  EXPECT_LE(MaxAbsDiff(merged.mean(), single.mean()), 1e-12 * MaxAbs(single.mean()));
  EXPECT_LE(MaxAbsDiff(*cov_m, *cov_s), 1e-12 * MaxAbs(*cov_s));

  WhiteningAccumulator other_dim(8);
  absl::Status s = merged.Merge(other_dim);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("dimension"), std::string::npos) << s;
}

TEST(WhiteningFitTest, EigendecompositionIsOrthonormalAndReconstructs) {
  const Data data = MakeData(1200, 20, 4);
  const WhiteningParams p = FitOrDie(data);
  const int d = 20;
  ASSERT_EQ(p.dim, d);
  EXPECT_EQ(p.num_samples, 1200);
  for (int i = 1; i < d; ++i) EXPECT_GE(p.eigenvalues[i - 1], p.eigenvalues[i]);
  // U^T U = I.
  double ortho = 0;
  for (int a = 0; a < d; ++a)
    for (int b = 0; b < d; ++b) {
      double dot = 0;
      for (int r = 0; r < d; ++r) dot += p.eigenvectors[r * d + a] * p.eigenvectors[r * d + b];
      ortho = std::max(ortho, std::abs(dot - (a == b ? 1.0 : 0.0)));
    }
  EXPECT_LE(ortho, 1e-9);
  // U Lambda U^T = Sigma.
  const Moments ref = TwoPass(data.x, data.n, d);
  Matrix recon(static_cast<size_t>(d) * d, 0.0);
  for (int a = 0; a < d; ++a)
    for (int b = 0; b < d; ++b)
      for (int c = 0; c < d; ++c)
        recon[a * d + b] += p.eigenvectors[a * d + c] * p.eigenvalues[c] * p.eigenvectors[b * d + c];
  EXPECT_LE(MaxAbsDiff(recon, ref.cov), 1e-9 * MaxAbs(ref.cov));
  // Sign convention: largest-magnitude component of each eigenvector positive.
  for (int c = 0; c < d; ++c) {
    double best = 0;
    for (int r = 0; r < d; ++r) {
      if (std::abs(p.eigenvectors[r * d + c]) > std::abs(best)) best = p.eigenvectors[r * d + c];
    }
    EXPECT_GT(best, 0) << "column " << c;
  }
}

TEST(WhiteningFitTest, FullWhiteningGivesZeroMeanIdentityCovariance) {
  const Data data = MakeData(2000, 16, 5);
  const WhiteningParams p = FitOrDie(data);
  const int d = 16;
  // The math in double: (x - mu) U Lambda^(-1/2) has identity covariance to
  // rounding (1e-9).
  std::vector<double> exact(static_cast<size_t>(data.n) * d, 0.0);
  for (int i = 0; i < data.n; ++i)
    for (int c = 0; c < d; ++c) {
      double v = 0;
      for (int r = 0; r < d; ++r) v += (data.x[i * d + r] - p.mean[r]) * p.eigenvectors[r * d + c];
      exact[i * d + c] = v / std::sqrt(p.eigenvalues[c]);
    }
  Moments m = TwoPass(exact, data.n, d);
  EXPECT_LE(MaxAbs(m.mean), 1e-9);
  for (int a = 0; a < d; ++a) m.cov[a * d + a] -= 1.0;
  EXPECT_LE(MaxAbs(m.cov), 1e-9);

  // The float transform: W and b are float32 and x * W is summed in float,
  // so agreement is limited by float rounding of W, b and the sums
  // (~1e-7 relative each, growing with d and |mu W|): 1e-6.
  const WhiteningTransform t = MakeTransform(p, d, 1.0f, 1.0f);
  m = TwoPass(ApplyAll(t, data.x, data.n), data.n, d);
  EXPECT_LE(MaxAbs(m.mean), 1e-6);
  for (int a = 0; a < d; ++a) m.cov[a * d + a] -= 1.0;
  EXPECT_LE(MaxAbs(m.cov), 1e-6);
}

TEST(WhiteningTransformTest, BetaZeroKeepsTheMean) {
  const Data data = MakeData(1000, 12, 6);
  const WhiteningParams p = FitOrDie(data);
  const WhiteningTransform t = MakeTransform(p, 12, 0.0f, 1.0f);
  for (float b : t.bias()) EXPECT_EQ(b, 0.0f);
  const Moments m = TwoPass(ApplyAll(t, data.x, data.n), data.n, 12);
  // Output mean = mu * W (not zero), covariance still identity.
  for (int c = 0; c < 12; ++c) {
    double expect = 0;
    for (int r = 0; r < 12; ++r) expect += p.mean[r] * t.weights()[r * 12 + c];
    EXPECT_NEAR(m.mean[c], expect, 1e-5 * std::max(1.0, std::abs(expect))) << c;
  }
  EXPECT_GT(MaxAbs(m.mean), 0.1);  // the data's mean is far from zero
  for (int a = 0; a < 12; ++a) EXPECT_NEAR(m.cov[a * 12 + a], 1.0, 1e-5);
}

TEST(WhiteningTransformTest, GammaZeroIsARotation) {
  const Data data = MakeData(300, 10, 7);
  const WhiteningParams p = FitOrDie(data);
  const int d = 10;
  // beta = 1: ||x~|| = ||x - mu||; beta = 0: ||x~|| = ||x||; distances kept.
  for (float beta : {0.0f, 1.0f}) {
    const WhiteningTransform t = MakeTransform(p, d, beta, 0.0f);
    const std::vector<float> y = ApplyAll(t, data.x, data.n);
    for (int i = 0; i < data.n; ++i) {
      double nx = 0, ny = 0, dx = 0, dy = 0;
      const int j = (i + 1) % data.n;
      for (int c = 0; c < d; ++c) {
        const double xc = data.x[i * d + c] - beta * p.mean[c];
        nx += xc * xc;
        ny += static_cast<double>(y[i * d + c]) * y[i * d + c];
        const double ddx = data.x[i * d + c] - data.x[j * d + c];
        const double ddy = static_cast<double>(y[i * d + c]) - y[j * d + c];
        dx += ddx * ddx;
        dy += ddy * ddy;
      }
      // Float32 rounding of W and the sums: 1e-5 relative.
      EXPECT_NEAR(std::sqrt(ny), std::sqrt(nx), 1e-5 * std::max(1.0, std::sqrt(nx))) << i;
      EXPECT_NEAR(std::sqrt(dy), std::sqrt(dx), 1e-5 * std::max(1.0, std::sqrt(dx))) << i;
    }
  }
}

TEST(WhiteningTransformTest, TruncationKeepsTopVarianceDirections) {
  // Three dominant directions (rows 0..2 of Q), the rest small.
  std::vector<double> stddev = {10, 6, 4};
  stddev.resize(16, 0.5);
  const Data data = MakeData(3000, 16, 8, stddev);
  const WhiteningParams p = FitOrDie(data);
  const int d = 16, k = 3;
  // The first k eigenvectors span the rows 0..2 of Q: each of those rows
  // projects onto span(U[:, :3]) with norm ~1 (sampling noise ~1e-2).
  for (int a = 0; a < k; ++a) {
    double proj = 0;
    for (int c = 0; c < k; ++c) {
      double dot = 0;
      for (int r = 0; r < d; ++r) dot += data.q[a * d + r] * p.eigenvectors[r * d + c];
      proj += dot * dot;
    }
    EXPECT_GT(proj, 0.999) << "direction " << a;
  }
  // gamma = 0: output variances are the top-k eigenvalues, descending.
  const WhiteningTransform rot = MakeTransform(p, k, 1.0f, 0.0f);
  EXPECT_EQ(rot.output_dim(), k);
  const Moments m = TwoPass(ApplyAll(rot, data.x, data.n), data.n, k);
  for (int c = 0; c < k; ++c) {
    EXPECT_NEAR(m.cov[c * k + c], p.eigenvalues[c], 1e-5 * p.eigenvalues[c]);
    EXPECT_NEAR(m.cov[c * k + c], stddev[c] * stddev[c], 0.1 * stddev[c] * stddev[c]);
  }
  // Truncated output = the first k columns of the full output, bit for bit.
  const WhiteningTransform full = MakeTransform(p, d, 0.7f, 0.5f);
  const WhiteningTransform trunc = MakeTransform(p, k, 0.7f, 0.5f);
  const std::vector<float> yf = ApplyAll(full, data.x, 50);
  const std::vector<float> yt = ApplyAll(trunc, data.x, 50);
  for (int i = 0; i < 50; ++i)
    for (int c = 0; c < k; ++c) ASSERT_EQ(yt[i * k + c], yf[i * d + c]) << i << "," << c;
}

TEST(WhiteningTransformTest, ResultDoesNotDependOnBatching) {
  const Data data = MakeData(37, 24, 9);
  const WhiteningParams p = FitOrDie(data);
  const WhiteningTransform t = MakeTransform(p, 20, 1.0f, 1.0f);
  const std::vector<float> batched = ApplyAll(t, data.x, data.n);
  std::vector<float> one(20);
  for (int i = 0; i < data.n; ++i) {
    t.Apply(data.x.data() + i * 24, 1, one.data());
    for (int c = 0; c < 20; ++c) ASSERT_EQ(one[c], batched[i * 20 + c]);
  }
}

TEST(WhiteningFitTest, FewerSamplesThanDimensions) {
  const int n = 10, d = 32;
  const Data data = MakeData(n, d, 10);
  const WhiteningParams p = FitOrDie(data);
  const double top = p.eigenvalues[0];
  for (int c = 0; c < d; ++c) {
    ASSERT_TRUE(std::isfinite(p.eigenvalues[c]));
    EXPECT_GE(p.eigenvalues[c], kEigenvalueFloor * top) << c;
  }
  // Rank n - 1: the rest is at (or within rounding of) the floor.
  EXPECT_GT(p.eigenvalues[n - 2], 1e-3 * top);
  for (int c = n - 1; c < d; ++c) EXPECT_LE(p.eigenvalues[c], 1e-10 * top) << c;
  // Full transform stays finite on fitted and unseen data.
  const WhiteningTransform full = MakeTransform(p, d, 1.0f, 1.0f);
  const Data unseen = MakeData(5, d, 11);
  for (const std::vector<float>* x : {&data.x, &unseen.x}) {
    const int rows = static_cast<int>(x->size()) / d;
    for (float v : ApplyAll(full, *x, rows)) ASSERT_TRUE(std::isfinite(v));
  }
  // Keeping the n - 1 meaningful directions whitens the fitted data.
  const WhiteningTransform t = MakeTransform(p, n - 1, 1.0f, 1.0f);
  Moments m = TwoPass(ApplyAll(t, data.x, n), n, n - 1);
  EXPECT_LE(MaxAbs(m.mean), 1e-5);
  for (int a = 0; a < n - 1; ++a) m.cov[a * (n - 1) + a] -= 1.0;
  EXPECT_LE(MaxAbs(m.cov), 1e-5);
}

TEST(WhiteningFitTest, ErrorsNameTheProblem) {
  WhiteningAccumulator acc(4);
  const float row[4] = {1, 2, 3, 4};
  auto p = Fit(acc);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(acc.Add(row, 1, 4).ok());
  p = Fit(acc);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(p.status().message().find("at least 2 samples, got 1"), std::string::npos)
      << p.status();

  // Identical vectors: zero covariance.
  ASSERT_TRUE(acc.Add(row, 1, 4).ok());
  p = Fit(acc);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(p.status().message().find("zero"), std::string::npos) << p.status();

  absl::Status s = acc.Add(row, 1, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("dimension 3"), std::string::npos) << s;
  const float bad[4] = {1, std::numeric_limits<float>::quiet_NaN(), 3, 4};
  s = acc.Add(bad, 1, 4);
  EXPECT_NE(s.message().find("component 1 is not finite"), std::string::npos) << s;
  EXPECT_EQ(acc.count(), 2);  // the bad batch was not added

  WhiteningAccumulator zero_dim(0);
  s = zero_dim.Add(row, 1, 0);
  EXPECT_NE(s.message().find("dim must be in"), std::string::npos) << s;
}

TEST(WhiteningTransformTest, InvalidHyperParametersNameTheField) {
  const Data data = MakeData(300, 256, 12);
  const WhiteningParams p = FitOrDie(data);
  auto t = WhiteningTransform::Create(p, 300, 1.0f, 1.0f);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), "k must be in [1, 256], got 300");
  t = WhiteningTransform::Create(p, 0, 1.0f, 1.0f);
  EXPECT_EQ(t.status().message(), "k must be in [1, 256], got 0");
  t = WhiteningTransform::Create(p, 8, 1.5f, 1.0f);
  EXPECT_EQ(t.status().message(), "beta must be a finite number in [0, 1], got 1.5");
  t = WhiteningTransform::Create(p, 8, 1.0f, -0.5f);
  EXPECT_EQ(t.status().message(), "gamma must be a finite number in [0, 1], got -0.5");
  t = WhiteningTransform::Create(p, 8, 1.0f, std::numeric_limits<float>::quiet_NaN());
  EXPECT_NE(t.status().message().find("gamma"), std::string::npos) << t.status();
  EXPECT_TRUE(WhiteningTransform::Create(p, 256, 0.0f, 0.0f).ok());
}

TEST(WhiteningParamsTest, ValidationNamesTheField) {
  const WhiteningParams good = FitOrDie(MakeData(100, 6, 13));
  EXPECT_TRUE(ValidateWhiteningParams(good).ok());

  WhiteningParams p = good;
  p.mean.pop_back();
  EXPECT_EQ(ValidateWhiteningParams(p).message(), "mean has 5 entries, expected dim = 6");
  p = good;
  p.eigenvectors.push_back(0);
  EXPECT_EQ(ValidateWhiteningParams(p).message(),
            "eigenvectors has 37 entries, expected dim*dim = 36");
  p = good;
  p.eigenvalues[3] = std::numeric_limits<double>::infinity();
  EXPECT_EQ(ValidateWhiteningParams(p).message(), "eigenvalues[3] is not finite");
  p = good;
  std::reverse(p.eigenvalues.begin(), p.eigenvalues.end());
  EXPECT_NE(ValidateWhiteningParams(p).message().find("must be descending"), std::string::npos);
  p = good;
  for (double& v : p.eigenvalues) v = 0;
  EXPECT_NE(ValidateWhiteningParams(p).message().find("positive maximum"), std::string::npos);
  p = good;
  p.eigenvectors[0] += 0.1;
  EXPECT_NE(ValidateWhiteningParams(p).message().find("not orthonormal"), std::string::npos);
  EXPECT_TRUE(ValidateWhiteningParams(p, /*orthonormal_tolerance=*/0).ok());
  p = good;
  p.dim = 0;
  EXPECT_EQ(ValidateWhiteningParams(p).message(), "dim must be in [1, 65536], got 0");
}

}  // namespace
}  // namespace maskserve::engine
