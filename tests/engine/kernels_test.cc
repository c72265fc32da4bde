// Norms, activations and bf16 conversion against scalar double references,
// on every kernel ISA this CPU runs (tests named .../avx2 and .../avx512; see
// isa_param.h). Tolerances: activations 1e-6 relative where |f(x)| is not
// tiny (stated per test), norms 1e-5 relative to the output magnitude (float
// accumulation over the row), bf16 conversion bit-exact on every path.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include "engine/kernels/activations.h"
#include "engine/kernels/bf16.h"
#include "engine/kernels/cpu_features.h"
#include "engine/kernels/norms.h"
#include "gtest/gtest.h"
#include "tests/engine/isa_param.h"

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

class ActivationsTest : public maskserve::testing::IsaTest {};
class NormsTest : public maskserve::testing::IsaTest {};
class Bf16VectorTest : public maskserve::testing::IsaTest {};

TEST_P(ActivationsTest, GeluErf) {
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

TEST_P(ActivationsTest, GeluTanh) {
  // 1e-6 relative for x >= -3 (|gelu| >= 4e-3). Below, the float rounding of
  // the sigmoid argument v = 1.6 (x + 0.044715 x^3) (|v| up to 60) costs
  // ~|v| ulp of relative error in sigmoid(v): measured worst 1e-5 down to
  // x = -9 (|gelu| ~ 1e-25), where a float 1 + tanh would already be 0.
  CheckActivation(GeluTanh, GeluTanhRef, -3.0f, 12.0f, 1e-6, 1e-37);
  CheckActivation(GeluTanh, GeluTanhRef, -9.0f, -3.0f, 3e-5, 1e-37);
}

TEST_P(ActivationsTest, Silu) { CheckActivation(Silu, SiluRef, -20.0f, 20.0f, 1e-6, 1e-37); }

TEST_P(ActivationsTest, Relu) {
  CheckActivation(Relu, [](double x) { return x > 0 ? x : 0.0; }, -3.0f, 3.0f, 0.0, 0.0);
}

TEST_P(ActivationsTest, SwiGluAndFused) {
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

TEST_P(NormsTest, LayerNormWithAndWithoutResidual) {
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

TEST_P(NormsTest, RmsNorm) {
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

TEST_P(Bf16VectorTest, VectorMatchesScalar) {
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


// Every length around the 16-lane steps: the masked tail computes the same
// as the full vectors and writes nothing past n.
TEST_P(ActivationsTest, EveryTailLength) {
  struct Fn {
    const char* name;
    void (*fn)(float*, size_t);
    double (*ref)(double);
  };
  const Fn fns[] = {{"gelu_erf", GeluErf, GeluErfRef},
                    {"gelu_tanh", GeluTanh, GeluTanhRef},
                    {"silu", Silu, SiluRef},
                    {"relu", Relu, [](double x) { return x > 0 ? x : 0.0; }},
                    {"exp", Exp, [](double x) { return std::exp(x); }}};
  for (const Fn& f : fns) {
    for (size_t n = 0; n <= 40; ++n) {
      std::vector<float> x(n + 1);
      for (size_t i = 0; i < n; ++i) x[i] = -3.0f + 0.37f * static_cast<float>(i % 17);
      x[n] = 12345.0f;
      std::vector<float> y = x;
      f.fn(y.data(), n);
      for (size_t i = 0; i < n; ++i) {
        const double want = f.ref(x[i]);
        ASSERT_NEAR(y[i], want, 1e-6 * std::abs(want) + 1e-37) << f.name << " n=" << n << " i=" << i;
      }
      ASSERT_EQ(y[n], 12345.0f) << f.name << " wrote past n=" << n;
    }
  }
  for (size_t n = 0; n <= 40; ++n) {
    std::vector<float> g(n), u(n), out(n + 1, 777.0f);
    for (size_t i = 0; i < n; ++i) {
      g[i] = -2.0f + 0.3f * static_cast<float>(i);
      u[i] = 0.5f + 0.1f * static_cast<float>(i);
    }
    SwiGlu(g.data(), u.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) {
      const double want = SiluRef(g[i]) * u[i];
      ASSERT_NEAR(out[i], want, 1e-6 * std::abs(want) + 1e-30) << n << " " << i;
    }
    ASSERT_EQ(out[n], 777.0f) << n;
  }
}

// The vector exp: ~1e-7 relative where the result is a normal float,
// saturation to exactly 0 and +inf at the ends of the float range, and
// correctly placed subnormals in between.
TEST_P(ActivationsTest, ExpMatchesStdExpAndSaturates) {
  std::vector<float> x = Grid(-87.0f, 88.7f, 20011);
  std::vector<float> y = x;
  Exp(y.data(), y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    const double rel = std::abs(y[i] - want) / want;
    worst = std::max(worst, rel);
    ASSERT_LE(rel, 3e-7) << "exp(" << x[i] << ") = " << y[i] << " want " << want;
  }
  std::cout << "exp worst relative error " << worst << "\n";
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> ends = {-inf, -1e30f, -1000.0f, -105.0f, -104.0f, 88.73f,
                             89.0f, 100.0f, 1e30f,    inf,     0.0f,    -0.0f};
  Exp(ends.data(), ends.size());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Bits(ends[i]), 0u) << i;  // +0 exactly
  for (int i = 5; i < 10; ++i) EXPECT_EQ(ends[i], inf) << i;
  EXPECT_EQ(ends[10], 1.0f);
  EXPECT_EQ(ends[11], 1.0f);
  // Subnormal results: within one subnormal step of the true value.
  std::vector<float> sub = Grid(-103.9f, -87.5f, 997);
  std::vector<float> got = sub;
  Exp(got.data(), got.size());
  for (size_t i = 0; i < sub.size(); ++i) {
    const double want = std::exp(static_cast<double>(sub[i]));
    ASSERT_LE(std::abs(got[i] - want), 1e-6 * want + std::numeric_limits<float>::denorm_min())
        << "exp(" << sub[i] << ")";
  }
}

TEST_P(NormsTest, EveryTailLength) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> d(-2, 2);
  for (int cols = 1; cols <= 40; ++cols) {
    const int rows = 2;
    std::vector<float> x(rows * cols + 1), res(rows * cols), g(cols), b(cols);
    for (auto* v : {&x, &res, &g, &b})
      for (auto& f : *v) f = d(rng);
    std::vector<float> out(rows * cols + 1, 999.0f), rms(rows * cols + 1, 999.0f);
    LayerNorm(x.data(), res.data(), g.data(), b.data(), 1e-6f, rows, cols, out.data());
    RmsNorm(x.data(), g.data(), 1e-6f, rows, cols, rms.data());
    ASSERT_EQ(out[rows * cols], 999.0f) << cols;
    ASSERT_EQ(rms[rows * cols], 999.0f) << cols;
    for (int r = 0; r < rows; ++r) {
      std::vector<double> want;
      LayerNormRef(&x[r * cols], &res[r * cols], g.data(), b.data(), 1e-6f, cols, &want);
      double ms = 0;
      for (int i = 0; i < cols; ++i) ms += double{x[r * cols + i]} * x[r * cols + i];
      const double inv = 1.0 / std::sqrt(ms / cols + 1e-6);
      for (int i = 0; i < cols; ++i) {
        ASSERT_NEAR(out[r * cols + i], want[i], 1e-5 * (std::abs(want[i]) + std::abs(g[i]) + 1.0))
            << cols << " " << r << " " << i;
        const double w = x[r * cols + i] * inv * g[i];
        ASSERT_NEAR(rms[r * cols + i], w, 1e-5 * (std::abs(w) + 1e-3)) << cols << " " << r << " " << i;
      }
    }
  }
}

// Special values and random bit patterns, NaNs included: what every path
// must give bit for bit (the scalar FloatToBf16 is the definition).
std::vector<float> Bf16TestValues() {
  std::vector<uint32_t> bits = {
      0x00000000u, 0x80000000u,                            // +-0
      0x00000001u, 0x80000001u, 0x007fffffu, 0x807fffffu,  // subnormals: to signed zero
      0x00800000u, 0x80800000u, 0x00808000u, 0x00818000u,  // smallest normals, ties
      0x7f7fffffu, 0xff7fffffu, 0x7f7f7fffu, 0x7f7f8000u,  // largest: to inf, tie at the top
      0x7f800000u, 0xff800000u,                            // +-inf
      0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,  // quiet / signalling NaNs
      0x7fbfffffu, 0x7f80ffffu, 0x7fff0000u, 0xffffffffu,  // NaN payloads
      0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f817fffu,  // ties to even / just off
      0x3f800000u, 0xc0200000u, 0x3f7fffffu, 0x40490fdbu};
  std::mt19937 rng(7);
  for (int i = 0; i < 4000; ++i) bits.push_back(rng());
  std::vector<float> v;
  for (uint32_t u : bits) {
    float f;
    std::memcpy(&f, &u, 4);
    v.push_back(f);
  }
  return v;
}

TEST(Bf16Test, EveryPathGivesTheScalarBits) {
  const std::vector<float> v = Bf16TestValues();
  int paths = 0;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    for (bool hardware : {false, true}) {
      const std::string path = std::string(IsaName(isa)) + (hardware ? " avx512bf16" : " software");
      for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{15}, size_t{16}, size_t{17},
                       size_t{31}, size_t{32}, size_t{33}, size_t{47}, v.size()}) {
        std::vector<uint16_t> out(n + 1, 0xabcd);
        if (!FloatToBf16Via(isa, hardware, v.data(), out.data(), n)) break;
        if (n == v.size()) ++paths;
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(out[i], FloatToBf16(v[i]))
              << path << " n=" << n << " i=" << i << " bits " << std::hex << Bits(v[i]);
        }
        ASSERT_EQ(out[n], 0xabcd) << path << " wrote past n=" << n;
      }
    }
  }
  std::cout << paths << " bf16 conversion paths checked on " << CpuFeatureSummary() << "\n";
  EXPECT_GE(paths, 1);
  if (!GetCpuFeatures().avx512bf16) {
    std::cout << "(no AVX512-BF16 here: the hardware path is checked on CPUs that have it)\n";
  }
}

TEST_P(Bf16VectorTest, EveryTailLength) {
  const std::vector<float> v = Bf16TestValues();
  for (size_t n = 0; n <= 40; ++n) {
    std::vector<uint16_t> h(n + 1, 0x5555);
    FloatToBf16(v.data(), h.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(h[i], FloatToBf16(v[i])) << n << " " << i;
    ASSERT_EQ(h[n], 0x5555) << n;
    std::vector<float> back(n + 1, -3.0f);
    Bf16ToFloat(h.data(), back.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(Bits(back[i]), static_cast<uint32_t>(h[i]) << 16);
    ASSERT_EQ(back[n], -3.0f) << n;
  }
}

MASKSERVE_INSTANTIATE_ISA_TESTS(ActivationsTest);
MASKSERVE_INSTANTIATE_ISA_TESTS(NormsTest);
MASKSERVE_INSTANTIATE_ISA_TESTS(Bf16VectorTest);

// AVX2 and AVX-512 kernels on the same inputs: the same operations in the
// same order, so they agree to the last bit in practice; the bound leaves
// room for the compiler contracting a multiply-add differently per ISA.
TEST(KernelsCrossIsaTest, Avx2AndAvx512Agree) {
  if (!IsaSupported(Isa::kAvx512)) {
    GTEST_SKIP() << "this CPU has no AVX-512 (" << CpuFeatureSummary()
                 << "): the AVX-512 kernels are not exercised here";
  }
  const Isa saved = ActiveIsa();
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> d(-8, 8);
  std::vector<float> x(100003), g(777), b(777);
  for (auto* v : {&x, &g, &b})
    for (auto& f : *v) f = d(rng);
  auto run = [&](Isa isa) {
    EXPECT_TRUE(SetActiveIsa(isa).ok());
    std::vector<float> out;
    for (void (*fn)(float*, size_t) : {GeluErf, GeluTanh, Silu, Relu, Exp}) {
      std::vector<float> y = x;
      fn(y.data(), y.size());
      out.insert(out.end(), y.begin(), y.end());
    }
    std::vector<float> ln(x.size() / 777 * 777);
    LayerNorm(x.data(), nullptr, g.data(), b.data(), 1e-12f, static_cast<int>(x.size() / 777), 777,
              ln.data());
    out.insert(out.end(), ln.begin(), ln.end());
    std::vector<uint16_t> h(x.size());
    FloatToBf16(x.data(), h.data(), x.size());
    for (uint16_t u : h) out.push_back(static_cast<float>(u));
    return out;
  };
  const std::vector<float> a = run(Isa::kAvx2);
  const std::vector<float> z = run(Isa::kAvx512);
  ASSERT_TRUE(SetActiveIsa(saved).ok());
  ASSERT_EQ(a.size(), z.size());
  size_t identical = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    identical += Bits(a[i]) == Bits(z[i]);
    ASSERT_NEAR(a[i], z[i], 1e-6 * std::abs(a[i]) + 1e-30) << i;
  }
  std::cout << identical << " of " << a.size() << " outputs bit-identical\n";
}

TEST(CpuFeaturesTest, ChoosesTheWidestIsaUnlessTheEnvironmentSaysAvx2) {
  CpuFeatures wide;
  wide.avx2 = wide.fma = wide.f16c = wide.avx512 = true;
  CpuFeatures narrow = wide;
  narrow.avx512 = false;
  EXPECT_EQ(ChooseIsa(wide, nullptr), Isa::kAvx512);
  EXPECT_EQ(ChooseIsa(wide, "auto"), Isa::kAvx512);
  EXPECT_EQ(ChooseIsa(wide, "avx512"), Isa::kAvx512);
  EXPECT_EQ(ChooseIsa(wide, "avx2"), Isa::kAvx2);
  EXPECT_EQ(ChooseIsa(narrow, nullptr), Isa::kAvx2);
  EXPECT_EQ(ChooseIsa(narrow, "avx512"), Isa::kAvx2);  // cannot honour it
}

TEST(CpuFeaturesTest, ReportsWhatThisCpuRuns) {
  // The engine's baseline; a CPU without it would not get this far.
  EXPECT_TRUE(CheckCpuSupported().ok()) << CheckCpuSupported();
  const std::vector<Isa> isas = SupportedIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kAvx2);
  EXPECT_TRUE(IsaSupported(ActiveIsa()));
  const std::string summary = CpuFeatureSummary();
  EXPECT_EQ(summary.rfind(IsaName(ActiveIsa()), 0), 0u) << summary;
  std::cout << "kernels: " << summary << "\n";
  const Isa saved = ActiveIsa();
  if (!IsaSupported(Isa::kAvx512)) {
    const absl::Status s = SetActiveIsa(Isa::kAvx512);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(ActiveIsa(), saved);
  }
  ASSERT_TRUE(SetActiveIsa(Isa::kAvx2).ok());
  EXPECT_EQ(CpuFeatureSummary().rfind("avx2", 0), 0u);
  EXPECT_FALSE(UseHardwareBf16());
  ASSERT_TRUE(SetActiveIsa(saved).ok());
}

TEST(CpuFeaturesTest, Avx512KernelsExercised) {
  if (!IsaSupported(Isa::kAvx512)) {
    GTEST_SKIP() << "this CPU has no AVX-512 (" << CpuFeatureSummary()
                 << "): only the AVX2 kernels run here; the .../avx512 tests run on AVX-512 CPUs";
  }
  EXPECT_EQ(SupportedIsas().size(), 2u);
}

}  // namespace
}  // namespace maskserve::engine::kernels
