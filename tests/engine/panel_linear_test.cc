// PanelLinear against a double-precision reference and against oneDNN
// (MatmulCache) over the shapes that matter: every row count of the
// register tiles (1..6 and their remainders up to 20 and a long prefill),
// column counts that leave a partial last panel, odd K, both weight
// layouts, with and without bias, overwrite and accumulate.
#include "engine/panel_linear.h"

#include <cmath>
#include <random>
#include <vector>

#include "engine/onednn/matmul_cache.h"
#include "engine/onednn/packed_weight.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(PanelLinearTest, MatchesReferenceOverShapes) {
  std::mt19937 rng(3);
  struct Shape {
    int k, n;
  };
  for (const Shape& sh : {Shape{1, 1}, Shape{7, 5}, Shape{37, 21}, Shape{64, 16}, Shape{33, 70},
                          Shape{128, 129}, Shape{200, 67}}) {
    const int K = sh.k, N = sh.n;
    const std::vector<float> w_out_in = Random(static_cast<size_t>(N) * K, rng);
    std::vector<float> w_in_out(w_out_in.size());
    for (int n = 0; n < N; ++n) {
      for (int k = 0; k < K; ++k)
        w_in_out[static_cast<size_t>(k) * N + n] = w_out_in[static_cast<size_t>(n) * K + k];
    }
    const std::vector<float> bias = Random(N, rng);
    for (bool with_bias : {false, true}) {
      for (WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
        absl::StatusOr<PanelLinear> p =
            PanelLinear::Create(layout == WeightLayout::kOutIn ? w_out_in : w_in_out, K, N,
                                with_bias ? bias : std::vector<float>{}, layout);
        ASSERT_TRUE(p.ok()) << p.status();
        EXPECT_EQ(p->in_features(), K);
        EXPECT_EQ(p->out_features(), N);
        EXPECT_EQ(p->has_bias(), with_bias);
        for (int M : {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 16, 20, 77}) {
          const std::vector<float> x = Random(static_cast<size_t>(M) * K, rng);
          const std::vector<float> y0 = Random(static_cast<size_t>(M) * N, rng);
          for (bool acc : {false, true}) {
            std::vector<float> y = y0;
            p->Run(x.data(), M, y.data(), acc);
            double worst = 0;
            for (int m = 0; m < M; ++m) {
              for (int n = 0; n < N; ++n) {
                double r = with_bias ? bias[n] : 0.0;
                for (int k = 0; k < K; ++k) {
                  r += double{x[static_cast<size_t>(m) * K + k]} *
                       w_out_in[static_cast<size_t>(n) * K + k];
                }
                if (acc) r += y0[static_cast<size_t>(m) * N + n];
                worst = std::max(worst, std::abs(r - y[static_cast<size_t>(m) * N + n]));
              }
            }
            EXPECT_LE(worst, 1e-5 * std::sqrt(K))
                << "K=" << K << " N=" << N << " M=" << M << " bias=" << with_bias << " acc=" << acc;
          }
        }
      }
    }
  }
}

TEST(PanelLinearTest, AgreesWithOneDnnAndRejectsBadShapes) {
  std::mt19937 rng(4);
  const int K = 96, N = 300;
  const std::vector<float> w = Random(static_cast<size_t>(K) * N, rng), b = Random(N, rng);
  absl::StatusOr<PanelLinear> p = PanelLinear::Create(w, K, N, b);
  absl::StatusOr<PackedLinear> q = PackedLinear::Create(w, K, N, b, MatmulDType::kF32);
  ASSERT_TRUE(p.ok() && q.ok());
  for (int M : {1, 9, 40}) {
    const std::vector<float> x = Random(static_cast<size_t>(M) * K, rng);
    std::vector<float> a(static_cast<size_t>(M) * N), c(a.size());
    p->Run(x.data(), M, a.data(), false);
    ASSERT_TRUE(MatmulCache::Global().Linear(x.data(), M, *q, c.data(), PostOp{.bias = true}).ok());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], c[i], 1e-4) << i;
  }
  p->Run(nullptr, 0, nullptr, false);  // no-op
  EXPECT_GE(p->bytes(), static_cast<size_t>(K) * N * sizeof(float));
  EXPECT_FALSE(PanelLinear().valid());
  EXPECT_EQ(PanelLinear::Create(w, K, N + 1, b).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PanelLinear::Create(w, K, N, std::vector<float>(3)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PanelLinear::Create({}, 0, 4, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace maskserve::engine
