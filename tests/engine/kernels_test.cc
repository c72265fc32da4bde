// Norms, activations and bf16 conversion against scalar double references.
// Tolerances: activations 1e-6 relative where |f(x)| is not tiny (stated per
// test), norms 1e-5 relative to the output magnitude (float accumulation over
// the row), bf16 conversion bit-exact.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/kernels/activations.h"
#include "engine/kernels/bf16.h"
#include "engine/kernels/norms.h"
#include "gtest/gtest.h"

namespace maskserve::engine::kernels {
namespace {

double GeluErfRef(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double GeluTanhRef(double x) {
  const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return x / (1.0 + std::exp(-2.0 * u));  // == 0.5 x (1 + tanh u), no cancellation
}
double SiluRef(double x) { return x / (1.0 + std::exp(-x)); }

// Dense grid over [lo, hi] plus an odd length to exercise the masked tail.
std::vector<float> Grid(float lo, float hi, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(n - 1);
  return v;
}

template <typename Fn, typename Ref>
void CheckActivation(Fn fn, Ref ref, float lo, float hi, double rel_tol, double abs_floor) {
  std::vector<float> x = Grid(lo, hi, 100003);  // > kParallelMin: threaded path too
  std::vector<float> y = x;
  fn(y.data(), y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = ref(static_cast<double>(x[i]));
    const double err = std::abs(y[i] - want);
    if (err > rel_tol * std::abs(want) + abs_floor) {
      ADD_FAILURE() << "x=" << x[i] << " got " << y[i] << " want " << want;
      return;
    }
    if (std::abs(want) > 1e-30) worst = std::max(worst, err / std::abs(want));
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", worst);
  ::testing::Test::RecordProperty("worst_rel", buf);
  // Short buffers take the single-threaded path with a masked tail.
  std::vector<float> s = {lo, 0.5f * (lo + hi), hi};
  fn(s.data(), s.size());
  EXPECT_NEAR(s[2], ref(hi), rel_tol * std::abs(ref(hi)) + abs_floor);
}

TEST(ActivationsTest, GeluErf) {
  // 1e-6 relative all the way into the negative tail (|gelu| ~ 1e-18 at
  // x = -9): erfc is evaluated directly, never 1 + erf. Measured worst 3e-7.
  CheckActivation(GeluErf, GeluErfRef, -9.0f, 12.0f, 1e-6, 1e-37);
  std::vector<float> big = {-30.0f, -200.0f, 200.0f, 0.0f};
  GeluErf(big.data(), big.size());
  EXPECT_EQ(big[0], 0.0f);
  EXPECT_EQ(big[1], 0.0f);
  EXPECT_EQ(big[2], 200.0f);
  EXPECT_EQ(big[3], 0.0f);
}

TEST(ActivationsTest, GeluTanh) {
  // 1e-6 relative for x >= -3 (|gelu| >= 4e-3). Below, the float rounding of
  // the sigmoid argument v = 1.6 (x + 0.044715 x^3) (|v| up to 60) costs
  // ~|v| ulp of relative error in sigmoid(v): measured worst 1e-5 down to
  // x = -9 (|gelu| ~ 1e-25), where a float 1 + tanh would already be 0.
  CheckActivation(GeluTanh, GeluTanhRef, -3.0f, 12.0f, 1e-6, 1e-37);
  CheckActivation(GeluTanh, GeluTanhRef, -9.0f, -3.0f, 3e-5, 1e-37);
}

TEST(ActivationsTest, Silu) { CheckActivation(Silu, SiluRef, -20.0f, 20.0f, 1e-6, 1e-37); }

TEST(ActivationsTest, Relu) {
  CheckActivation(Relu, [](double x) { return x > 0 ? x : 0.0; }, -3.0f, 3.0f, 0.0, 0.0);
}

TEST(ActivationsTest, SwiGluAndFused) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-8, 8);
  const int rows = 5, inner = 37;
  std::vector<float> gate_up(rows * 2 * inner);
  for (auto& v : gate_up) v = d(rng);
  std::vector<float> fused(rows * inner);
  SwiGluFused(gate_up.data(), rows, inner, fused.data());
  for (int r = 0; r < rows; ++r) {
    const float* g = gate_up.data() + r * 2 * inner;
    std::vector<float> out(inner);
    SwiGlu(g, g + inner, out.data(), inner);
    for (int i = 0; i < inner; ++i) {
      const double want = SiluRef(g[i]) * g[inner + i];
      EXPECT_NEAR(out[i], want, 1e-6 * std::abs(want) + 1e-30);
      EXPECT_EQ(fused[r * inner + i], out[i]);
    }
  }
}

void LayerNormRef(const float* x, const float* res, const float* g, const float* b, float eps, int cols,
                  std::vector<double>* out) {
  std::vector<double> v(cols);
  double mean = 0;
  for (int i = 0; i < cols; ++i) mean += v[i] = static_cast<double>(x[i]) + (res ? res[i] : 0.0);
  mean /= cols;
  double var = 0;
  for (int i = 0; i < cols; ++i) var += (v[i] - mean) * (v[i] - mean);
  var /= cols;
  out->resize(cols);
  for (int i = 0; i < cols; ++i) (*out)[i] = (v[i] - mean) / std::sqrt(var + eps) * g[i] + b[i];
}

TEST(NormsTest, LayerNormWithAndWithoutResidual) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> d(-3, 3);
  for (int cols : {1, 15, 16, 17, 768, 1001}) {
    for (int rows : {1, 3, 64}) {
      std::vector<float> x(rows * cols), res(rows * cols), g(cols), b(cols);
      for (auto* v : {&x, &res, &g, &b})
        for (auto& f : *v) f = d(rng) + 0.5f;  // offset: mean subtraction matters
      for (bool fused : {false, true}) {
        std::vector<float> out(rows * cols);
        LayerNorm(x.data(), fused ? res.data() : nullptr, g.data(), b.data(), 1e-12f, rows, cols, out.data());
        // In place on the residual buffer gives the same bits.
        std::vector<float> inplace = fused ? res : x;
        LayerNorm(fused ? x.data() : inplace.data(), fused ? inplace.data() : nullptr, g.data(), b.data(),
                  1e-12f, rows, cols, inplace.data());
        EXPECT_EQ(inplace, out);
        for (int r = 0; r < rows; ++r) {
          std::vector<double> want;
          LayerNormRef(&x[r * cols], fused ? &res[r * cols] : nullptr, g.data(), b.data(), 1e-12f, cols, &want);
          for (int i = 0; i < cols; ++i) {
            // cols == 1: variance 0, output is beta; eps 1e-12 keeps it finite.
            ASSERT_NEAR(out[r * cols + i], want[i], 1e-5 * (std::abs(want[i]) + std::abs(g[i]) + 1.0))
                << "cols=" << cols << " r=" << r << " i=" << i << " fused=" << fused;
          }
        }
      }
    }
  }
}

TEST(NormsTest, RmsNorm) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-3, 3);
  for (int cols : {1, 16, 33, 512, 4096}) {
    const int rows = 7;
    std::vector<float> x(rows * cols), w(cols), out(rows * cols);
    for (auto& f : x) f = d(rng);
    for (auto& f : w) f = d(rng);
    RmsNorm(x.data(), w.data(), 1e-6f, rows, cols, out.data());
    for (int r = 0; r < rows; ++r) {
      double ms = 0;
      for (int i = 0; i < cols; ++i) ms += static_cast<double>(x[r * cols + i]) * x[r * cols + i];
      const double inv = 1.0 / std::sqrt(ms / cols + 1e-6);
      for (int i = 0; i < cols; ++i) {
        const double want = x[r * cols + i] * inv * w[i];
        ASSERT_NEAR(out[r * cols + i], want, 1e-5 * (std::abs(want) + 1e-3)) << cols << " " << r << " " << i;
      }
    }
    std::vector<float> inplace = x;
    RmsNorm(inplace.data(), w.data(), 1e-6f, rows, cols, inplace.data());
    EXPECT_EQ(inplace, out);
  }
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(Bf16Test, ScalarRoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);
  // 1.0078125 + 2^-8 is halfway with an odd lower neighbour: rounds up.
  EXPECT_EQ(FloatToBf16(1.01171875f), 0x3f82);
  EXPECT_EQ(FloatToBf16(1.0f + 1.0f / 256 + 1.0f / 65536), 0x3f81);  // above half: up
  EXPECT_EQ(FloatToBf16(-2.5f), 0xc020);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(FloatToBf16(1e-40f), 0x0000);    // denormal flushed
  EXPECT_EQ(FloatToBf16(-1e-40f), 0x8000);
  EXPECT_EQ(Bits(Bf16ToFloat(0x3f81)), 0x3f810000u);
  // Largest finite float rounds up to infinity, as RNE demands.
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);
}

TEST(Bf16Test, VectorMatchesScalar) {
  std::mt19937 rng(4);
  std::vector<float> v;
  for (int i = 0; i < 10000; ++i) {
    uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) f = 1.5f;  // NaN payloads may differ; checked above
    v.push_back(f);
  }
  for (size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{31}, size_t{47}, v.size()}) {
    std::vector<uint16_t> out(n + 1, 0xabcd);
    FloatToBf16(v.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], FloatToBf16(v[i])) << i << " " << v[i];
    EXPECT_EQ(out[n], 0xabcd);  // no write past the end
    std::vector<float> back(n);
    Bf16ToFloat(out.data(), back.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(Bits(back[i]), static_cast<uint32_t>(out[i]) << 16);
  }
}

}  // namespace
}  // namespace maskserve::engine::kernels
