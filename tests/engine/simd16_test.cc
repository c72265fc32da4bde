// The 16-lane vocabulary of engine/kernels/simd16.h, operation by operation,
// on every backend this CPU runs: AVX2 (two __m256) everywhere, AVX-512 where
// the CPU has it, each against scalar references (bit-exact), and the two
// backends against each other. Masked loads/stores are checked against a
// guard page: a lane past the count that touched memory would fault.
#include "engine/kernels/simd16.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/kernels/cpu_features.h"
#include "gtest/gtest.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
namespace maskserve::engine::kernels::avx512 {
namespace ops_test {
#include "tests/engine/simd16_ops.inc"
}  // namespace ops_test
}  // namespace maskserve::engine::kernels::avx512
#pragma GCC pop_options

namespace maskserve::engine::kernels::avx2 {
namespace ops_test {
#include "tests/engine/simd16_ops.inc"
}  // namespace ops_test
}  // namespace maskserve::engine::kernels::avx2

namespace maskserve::engine::kernels {
namespace {

constexpr int kLaneOps = avx2::ops_test::kNumLaneOps;
constexpr int kIntOps = avx2::ops_test::kNumIntOps;

struct Ops {
  uint32_t (*tail_mask_bits)(int);
  void (*load_first)(const float*, int, float*);
  void (*store_first)(const float*, int, float*);
  void (*copy_u16)(const uint16_t*, int, uint16_t*);
  void (*widen_u16)(const uint16_t*, int, float*);
  void (*scalef)(const float*, const float*, float*, size_t);
  void (*round)(const float*, float*, size_t);
  void (*reduce)(const float*, float*, float*);
  void (*lane_ops)(const float*, const float*, const float*, float*);
  void (*int_ops)(const float*, const float*, float*);
};

#define MASKSERVE_OPS(ns)                                                               \
  Ops {                                                                                 \
    ns::ops_test::TailMaskBits, ns::ops_test::LoadFirst, ns::ops_test::StoreFirst,      \
        ns::ops_test::CopyU16, ns::ops_test::WidenU16, ns::ops_test::ScalefArray,       \
        ns::ops_test::RoundArray, ns::ops_test::Reduce, ns::ops_test::LaneOps,          \
        ns::ops_test::IntOps                                                            \
  }
const Ops kOps[kNumIsas] = {MASKSERVE_OPS(avx2), MASKSERVE_OPS(avx512)};
#undef MASKSERVE_OPS

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Same bits, or both NaN.
bool SameFloat(float a, float b) {
  return Bits(a) == Bits(b) || (std::isnan(a) && std::isnan(b));
}

// Two pages, the second inaccessible: End<T>() is the first byte that faults.
class GuardedPage {
 public:
  GuardedPage() {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<char*>(p);
    EXPECT_EQ(mprotect(base_ + page_, page_, PROT_NONE), 0);
  }
  ~GuardedPage() { munmap(base_, 2 * page_); }
  template <typename T>
  T* End() {
    return reinterpret_cast<T*>(base_ + page_);
  }

 private:
  size_t page_ = 0;
  char* base_ = nullptr;
};

class Simd16Test : public ::testing::TestWithParam<Isa> {
 protected:
  const Ops& ops() const { return kOps[static_cast<int>(GetParam())]; }
};

TEST_P(Simd16Test, TailMaskHasExactlyTheFirstNLanes) {
  for (int n = 0; n <= 16; ++n) EXPECT_EQ(ops().tail_mask_bits(n), (1u << n) - 1u) << n;
}

TEST_P(Simd16Test, MaskedLoadsAndStoresTouchOnlyTheirLanes) {
  GuardedPage in, out;
  for (int n = 0; n <= 16; ++n) {
    SCOPED_TRACE("n = " + std::to_string(n));
    // The n lanes end right at the guard page.
    float* src = in.End<float>() - n;
    for (int i = 0; i < n; ++i) src[i] = 1.5f + static_cast<float>(i);
    float got[16];
    std::fill(got, got + 16, -7.0f);
    ops().load_first(src, n, got);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(got[i], i < n ? src[i] : 0.0f) << i;

    float* dst = out.End<float>() - n;
    float v[16];
    for (int i = 0; i < 16; ++i) v[i] = 100.0f + static_cast<float>(i);
    ops().store_first(v, n, dst);
    for (int i = 0; i < n; ++i) EXPECT_EQ(dst[i], v[i]) << i;
    // Within a page: lanes past n keep what was there.
    float mid[32];
    std::fill(mid, mid + 32, -1.0f);
    ops().store_first(v, n, mid + 8);
    for (int i = 0; i < 32; ++i) {
      const bool written = i >= 8 && i < 8 + n;
      EXPECT_EQ(mid[i], written ? v[i - 8] : -1.0f) << i;
    }

    uint16_t* hs = in.End<uint16_t>() - n;
    for (int i = 0; i < n; ++i) hs[i] = static_cast<uint16_t>(0xfff0 + i);
    uint16_t* hd = out.End<uint16_t>() - n;
    ops().copy_u16(hs, n, hd);
    for (int i = 0; i < n; ++i) EXPECT_EQ(hd[i], hs[i]) << i;
    float widened[16];
    ops().widen_u16(hs, n, widened);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(Bits(widened[i]), i < n ? hs[i] : 0u) << i;
  }
}

// x values for which the AVX2 Scalef promises VSCALEFPS's bits (simd16.h).
std::vector<float> ScalefInputs(std::mt19937& rng) {
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 1.5f, 0.75f, 1.9999999f, 0.5f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(), std::ldexp(1.0f, -102),
                           std::ldexp(1.0f, 102), -std::ldexp(1.75f, 101), 3.0e-30f, 1.0e30f};
  std::uniform_real_distribution<float> poly(0.5f, 2.0f);  // what the exps scale
  std::uniform_real_distribution<float> expo(-102.0f, 101.0f);
  for (int i = 0; i < 200; ++i) xs.push_back(poly(rng));
  for (int i = 0; i < 200; ++i) {
    xs.push_back((rng() & 1 ? -1.0f : 1.0f) * std::ldexp(poly(rng), static_cast<int>(expo(rng))));
  }
  return xs;
}

TEST_P(Simd16Test, ScalefMatchesLdexpAndSaturates) {
  std::mt19937 rng(1);
  const std::vector<float> xs = ScalefInputs(rng);
  std::vector<float> ns;
  for (int k = -400; k <= 400; k += 1) ns.push_back(static_cast<float>(k));
  for (float f : {2.5f, -2.5f, 0.99f, -0.01f, -252.5f, 254.5f, 1e9f, -1e9f}) ns.push_back(f);
  std::vector<float> x, n;
  for (float a : xs) {
    for (float b : ns) {
      x.push_back(a);
      n.push_back(b);
    }
  }
  while (x.size() % 16 != 0) {
    x.push_back(1.0f);
    n.push_back(0.0f);
  }
  std::vector<float> got(x.size());
  ops().scalef(x.data(), n.data(), got.data(), x.size());
  int bad = 0;
  for (size_t i = 0; i < x.size() && bad < 10; ++i) {
    const double e = std::floor(static_cast<double>(n[i]));
    const int k = static_cast<int>(std::max(-1000.0, std::min(1000.0, e)));
    const float want = std::ldexp(x[i], k);  // exact, one rounding, saturating
    if (!SameFloat(got[i], want)) {
      ++bad;
      ADD_FAILURE() << "Scalef(" << x[i] << ", " << n[i] << ") = " << got[i] << " want " << want;
    }
  }
  // Saturation and the subnormal edge, spelled out.
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    float x, n, want;
  };
  const Case cases[] = {{1.5f, 128, inf},
                        {0.75f, 128, std::ldexp(1.5f, 127)},
                        {-1.0f, 1000, -inf},
                        {1.0f, -149, std::numeric_limits<float>::denorm_min()},
                        {1.0f, -150, 0.0f},  // exactly half the smallest subnormal: to even
                        {1.5f, -150, std::numeric_limits<float>::denorm_min()},
                        {1.0f, -1000, 0.0f},
                        {-1.0f, -1000, -0.0f},
                        {1.25f, -126, std::ldexp(1.25f, -126)}};
  float cx[16], cn[16], cg[16];
  for (int i = 0; i < 16; ++i) {
    const Case& c = cases[i % (sizeof(cases) / sizeof(cases[0]))];
    cx[i] = c.x;
    cn[i] = c.n;
  }
  ops().scalef(cx, cn, cg, 16);
  for (int i = 0; i < 16; ++i) {
    const Case& c = cases[i % (sizeof(cases) / sizeof(cases[0]))];
    EXPECT_EQ(Bits(cg[i]), Bits(c.want)) << "Scalef(" << c.x << ", " << c.n << ")";
  }
}

TEST_P(Simd16Test, RoundNearestTiesToEven) {
  float x[32] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 0.49999997f, 1e9f, -3.7f, 3.2f,
                 8388607.5f, -8388608.0f, 0.0f, -0.0f, 126.5f, -150.5f};
  for (int i = 16; i < 32; ++i) x[i] = static_cast<float>(i - 24) * 0.75f;
  float got[32];
  ops().round(x, got, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(Bits(got[i]), Bits(std::nearbyint(x[i]))) << x[i];
}

TEST_P(Simd16Test, ReductionsPairLanesInTheDocumentedOrder) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    float x[16];
    // Magnitudes 2^-20 .. 2^20: the sum depends on the order of additions.
    for (float& f : x) f = std::ldexp(mant(rng), static_cast<int>(rng() % 41) - 20);
    float s8[8], s4[4];
    for (int i = 0; i < 8; ++i) s8[i] = x[i + 8] + x[i];
    for (int i = 0; i < 4; ++i) s4[i] = s8[i + 4] + s8[i];
    const float want = (s4[0] + s4[2]) + (s4[1] + s4[3]);
    float sum, max;
    ops().reduce(x, &sum, &max);
    ASSERT_EQ(Bits(sum), Bits(want)) << trial;
    ASSERT_EQ(max, *std::max_element(x, x + 16));
  }
}

TEST_P(Simd16Test, LaneOperationsMatchScalar) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-4.0f, 4.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int trial = 0; trial < 100; ++trial) {
    float a[16], b[16], c[16], out[16 * kLaneOps];
    for (int i = 0; i < 16; ++i) {
      a[i] = d(rng);
      b[i] = (rng() % 5 == 0) ? a[i] : d(rng);
      c[i] = d(rng);
    }
    if (trial % 4 == 1) a[rng() % 16] = nan;
    if (trial % 4 == 2) b[rng() % 16] = nan;
    if (trial % 4 == 3) a[rng() % 16] = b[rng() % 16] = -0.0f;
    ops().lane_ops(a, b, c, out);
    for (int i = 0; i < 16; ++i) {
      const float want[kLaneOps] = {
          a[i] + b[i],
          a[i] - b[i],
          a[i] * b[i],
          a[i] / b[i],
          std::fma(a[i], b[i], c[i]),
          std::fma(-a[i], b[i], c[i]),
          std::fma(a[i], b[i], -c[i]),
          a[i] < b[i] ? a[i] : b[i],  // MINPS: the second operand unless a < b
          a[i] > b[i] ? a[i] : b[i],
          std::fabs(a[i]),
          a[i] < b[i] ? 1.0f : 0.0f,
          a[i] <= b[i] ? 1.0f : 0.0f,
          a[i] > b[i] ? 1.0f : 0.0f,
          a[i] >= b[i] ? 1.0f : 0.0f,
          a[i] == b[i] ? 1.0f : 0.0f,
          ((a[i] < b[i] && b[i] < c[i]) || a[i] != a[i]) ? a[i] : c[i],
      };
      for (int k = 0; k < kLaneOps; ++k) {
        ASSERT_TRUE(SameFloat(out[16 * k + i], want[k]))
            << "op " << k << " lane " << i << ": a=" << a[i] << " b=" << b[i] << " c=" << c[i]
            << " got " << out[16 * k + i] << " want " << want[k];
      }
    }
  }
}

TEST_P(Simd16Test, IntegerLaneOperationsMatchScalar) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 100; ++trial) {
    uint32_t u[16], v[16];
    float fu[16], fv[16], out[16 * kIntOps];
    for (int i = 0; i < 16; ++i) {
      u[i] = rng();
      v[i] = (rng() % 4 == 0) ? u[i] : rng();
      fu[i] = FromBits(u[i]);
      fv[i] = FromBits(v[i]);
    }
    ops().int_ops(fu, fv, out);
    for (int i = 0; i < 16; ++i) {
      const uint32_t want[kIntOps] = {u[i] >> 16, u[i] << 16,      u[i] & v[i],
                                      u[i] | v[i], u[i] + v[i], u[i] == v[i] ? u[i] : 7u};
      for (int k = 0; k < kIntOps; ++k) ASSERT_EQ(Bits(out[16 * k + i]), want[k]) << k << " " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, Simd16Test, ::testing::ValuesIn(SupportedIsas()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

// Everything above, once more, AVX2 against AVX-512 bit for bit.
TEST(Simd16CrossIsaTest, BackendsAgreeBitForBit) {
  if (!IsaSupported(Isa::kAvx512)) {
    GTEST_SKIP() << "this CPU has no AVX-512 (" << CpuFeatureSummary()
                 << "): only the AVX2 backend is exercised here";
  }
  const Ops& x = kOps[static_cast<int>(Isa::kAvx2)];
  const Ops& y = kOps[static_cast<int>(Isa::kAvx512)];
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-100.0f, 100.0f);
  for (int trial = 0; trial < 200; ++trial) {
    float a[16], b[16], c[16];
    for (int i = 0; i < 16; ++i) {
      a[i] = d(rng);
      b[i] = trial % 3 == 0 ? FromBits(rng()) : d(rng);
      c[i] = d(rng);
    }
    float ox[16 * kLaneOps], oy[16 * kLaneOps];
    x.lane_ops(a, b, c, ox);
    y.lane_ops(a, b, c, oy);
    for (int i = 0; i < 16 * kLaneOps; ++i) ASSERT_TRUE(SameFloat(ox[i], oy[i])) << i;
    float ix[16 * kIntOps], iy[16 * kIntOps];
    x.int_ops(a, b, ix);
    y.int_ops(a, b, iy);
    for (int i = 0; i < 16 * kIntOps; ++i) ASSERT_EQ(Bits(ix[i]), Bits(iy[i])) << i;
    float sx, mx, sy, my;
    x.reduce(a, &sx, &mx);
    y.reduce(a, &sy, &my);
    ASSERT_EQ(Bits(sx), Bits(sy));
    ASSERT_EQ(Bits(mx), Bits(my));
    float rx[16], ry[16], n[16];
    for (int i = 0; i < 16; ++i) n[i] = std::floor(d(rng) * 3.0f);
    x.scalef(a, n, rx, 16);
    y.scalef(a, n, ry, 16);
    for (int i = 0; i < 16; ++i) ASSERT_TRUE(SameFloat(rx[i], ry[i])) << a[i] << " " << n[i];
  }
}

}  // namespace
}  // namespace maskserve::engine::kernels
