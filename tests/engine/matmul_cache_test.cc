// MatmulCache::Linear against a double-precision reference. Tolerances:
// FP32 1e-5 relative to the row's reference magnitude (sum |x||w| + |b|), the
// scale at which float accumulation error lives. BF16 is compared against a
// reference built from bf16-rounded x and W, so only float accumulation error
// remains; 1e-4 of the same scale is far above that but below the error of
// truncating instead of rounding the activations (~2e-3 / sqrt(K)).
#include "engine/onednn/matmul_cache.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/kernels/bf16.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/packed_weight.h"
#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

double ActRef(FusedActivation a, double v) {
  switch (a) {
    case FusedActivation::kNone: return v;
    case FusedActivation::kGeluErf: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case FusedActivation::kGeluTanh:
      return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    case FusedActivation::kRelu: return v > 0 ? v : 0.0;
    case FusedActivation::kSilu: return v / (1.0 + std::exp(-v));
  }
  return v;
}

std::vector<float> RandomVec(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& f : v) f = d(rng);
  return v;
}

struct Case {
  int M, K, N;
};

// y_ref = post(x W^T + b) (+ y0); weight is [N, K] (kOutIn). Also returns the
// per-element magnitude scale used for the tolerance.
void Reference(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
               const std::vector<float>& y0, int M, int K, int N, PostOp post,
               std::vector<double>* ref, std::vector<double>* scale) {
  ref->assign(static_cast<size_t>(M) * N, 0.0);
  scale->assign(static_cast<size_t>(M) * N, 0.0);
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      double acc = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        acc += static_cast<double>(x[m * K + k]) * w[n * K + k];
        mag += std::abs(static_cast<double>(x[m * K + k]) * w[n * K + k]);
      }
      if (post.bias) {
        acc += b[n];
        mag += std::abs(b[n]);
      }
      double v = ActRef(post.activation, acc);
      if (post.accumulate) {
        v += y0[m * N + n];
        mag += std::abs(y0[m * N + n]);
      }
      (*ref)[m * N + n] = v;
      (*scale)[m * N + n] = mag + 1e-6;
    }
  }
}

void CheckLinear(MatmulCache& cache, const Case& c, MatmulDType dtype, PostOp post, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x = RandomVec(static_cast<size_t>(c.M) * c.K, rng);
  std::vector<float> w = RandomVec(static_cast<size_t>(c.N) * c.K, rng, 0.2f);
  std::vector<float> b = RandomVec(c.N, rng);
  std::vector<float> y0 = RandomVec(static_cast<size_t>(c.M) * c.N, rng);
  auto packed = PackedLinear::Create(w, c.K, c.N, b, dtype);
  ASSERT_TRUE(packed.ok()) << packed.status();
  std::vector<float> y = y0;
  ASSERT_TRUE(cache.Linear(x.data(), c.M, *packed, y.data(), post).ok());
  const double tol = dtype == MatmulDType::kF32 ? 1e-5 : 1e-4;
  if (dtype == MatmulDType::kBF16) {
    kernels::RoundToBf16(x.data(), x.size());
    kernels::RoundToBf16(w.data(), w.size());
  }
  std::vector<double> ref, scale;
  Reference(x, w, b, y0, c.M, c.K, c.N, post, &ref, &scale);
  int bad = 0;
  for (size_t i = 0; i < ref.size() && bad < 5; ++i) {
    if (!(std::abs(y[i] - ref[i]) <= tol * scale[i])) {
      ++bad;
      ADD_FAILURE() << "M=" << c.M << " K=" << c.K << " N=" << c.N << " i=" << i << " got " << y[i]
                    << " want " << ref[i] << " scale " << scale[i]
                    << " act=" << static_cast<int>(post.activation) << " bias=" << post.bias
                    << " acc=" << post.accumulate;
    }
  }
}

std::vector<PostOp> AllPostOps() {
  std::vector<PostOp> ops = {PostOp{}, PostOp{.bias = true}};
  for (FusedActivation a : {FusedActivation::kGeluErf, FusedActivation::kGeluTanh, FusedActivation::kRelu,
                       FusedActivation::kSilu}) {
    ops.push_back(PostOp{.bias = true, .activation = a});
  }
  ops.push_back(PostOp{.accumulate = true});
  ops.push_back(PostOp{.bias = true, .accumulate = true});
  ops.push_back(PostOp{.bias = true, .activation = FusedActivation::kGeluErf, .accumulate = true});
  return ops;
}

// BF16 matmuls need an AVX-512 CPU (see CheckMatmulDTypeSupported); on an
// AVX2-only CPU the BF16 instances skip, naming the reason.
class LinearTest : public ::testing::TestWithParam<MatmulDType> {
 protected:
  void SetUp() override {
    const absl::Status s = CheckMatmulDTypeSupported(GetParam());
    if (!s.ok()) GTEST_SKIP() << s.message();
  }
};

TEST_P(LinearTest, RandomShapesEveryPostOp) {
  MatmulCache cache;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> md(1, 300), kd(1, 200);
  std::vector<Case> cases = {{1, 16, 16}, {7, 33, 17}, {300, 64, 48}, {17, 100, 37}, {1, 1, 1}};
  for (int i = 0; i < 6; ++i) cases.push_back({md(rng), kd(rng), kd(rng)});
  uint32_t seed = 1;
  for (const Case& c : cases) {
    for (const PostOp& op : AllPostOps()) CheckLinear(cache, c, GetParam(), op, seed++);
  }
  // Every row class ran an optimised kernel on the packed layout.
  EXPECT_EQ(cache.stats().reference_impls, 0u);
}

// The layout is packed once (at whatever thread count the loader runs with)
// and must suit primitives built later at other thread counts and for every
// row class, including BERT-base shapes.
TEST_P(LinearTest, PackedLayoutServesOtherThreadCountsAndRowClasses) {
  const int before = NumThreads();
  SetNumThreads(2);
  std::mt19937 rng(9);
  struct Shape { int k, n; };
  std::vector<std::pair<Shape, PackedLinear>> packed;
  for (Shape s : {Shape{768, 2304}, Shape{3072, 768}, Shape{1, 1}, Shape{5, 2000}}) {
    auto w = PackedLinear::Create(RandomVec(static_cast<size_t>(s.k) * s.n, rng), s.k, s.n, {}, GetParam());
    ASSERT_TRUE(w.ok());
    packed.emplace_back(s, *std::move(w));
  }
  SetNumThreads(1);
  MatmulCache cache;
  for (auto& [s, w] : packed) {
    for (int m : {1, 13, 16, 40, 100, 333}) {
      std::vector<float> x = RandomVec(static_cast<size_t>(m) * s.k, rng), y(static_cast<size_t>(m) * s.n);
      ASSERT_TRUE(cache.Linear(x.data(), m, w, y.data(), PostOp{}).ok());
    }
  }
  EXPECT_EQ(cache.stats().reference_impls, 0u);
  SetNumThreads(before);
}

TEST_P(LinearTest, LargeMIsChunked) {
  MatmulCache cache(MatmulCacheOptions{.max_chunk_rows = 64});
  CheckLinear(cache, {203, 48, 40}, GetParam(), PostOp{.bias = true, .activation = FusedActivation::kGeluErf}, 7);
  CheckLinear(cache, {203, 48, 40}, GetParam(), PostOp{.accumulate = true}, 8);
}

INSTANTIATE_TEST_SUITE_P(DTypes, LinearTest, ::testing::Values(MatmulDType::kF32, MatmulDType::kBF16),
                         [](const auto& info) {
                           return info.param == MatmulDType::kF32 ? std::string("F32") : std::string("BF16");
                         });

TEST(MatmulCacheTest, RowClassesDecomposeExactly) {
  for (int chunk : {512, 64}) {
    for (int m = 1; m <= 3000; ++m) {
      int rest = m, pieces = 0;
      while (rest > 0) {
        const int c = MatmulCache::RowClass(rest, chunk);
        ASSERT_GE(c, 1);
        ASSERT_LE(c, rest);
        ASSERT_LE(c, chunk);
        rest -= c;
        ++pieces;
      }
      ASSERT_LE(pieces, m / chunk + 4) << m;
    }
  }
  EXPECT_EQ(MatmulCache::RowClass(300, 512), 288);
  EXPECT_EQ(MatmulCache::RowClass(12, 512), 12);
  EXPECT_EQ(MatmulCache::RowClass(17, 512), 16);
  EXPECT_EQ(MatmulCache::RowClass(4096, 512), 512);
  std::set<int> classes;
  for (int m = 1; m <= 512; ++m) classes.insert(MatmulCache::RowClass(m, 512));
  EXPECT_LE(classes.size(), 56u);
}

TEST(MatmulCacheTest, SameShapeClassReusesOnePrimitive) {
  MatmulCache cache;
  std::mt19937 rng(3);
  const int K = 32, N = 24;
  auto w = PackedLinear::Create(RandomVec(K * N, rng), K, N, RandomVec(N, rng), MatmulDType::kF32);
  ASSERT_TRUE(w.ok());
  std::vector<float> x = RandomVec(64 * K, rng), y(64 * N);
  const PostOp op{.bias = true};
  ASSERT_TRUE(cache.Linear(x.data(), 40, *w, y.data(), op).ok());  // class 40
  EXPECT_EQ(cache.stats().primitives, 1u);
  EXPECT_EQ(cache.stats().misses, 1u);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(cache.Linear(x.data(), 40, *w, y.data(), op).ok());
  EXPECT_EQ(cache.stats().primitives, 1u);
  EXPECT_EQ(cache.stats().hits, 5u);
  // A different weight of the same shape shares the primitive.
  auto w2 = PackedLinear::Create(RandomVec(K * N, rng), K, N, RandomVec(N, rng), MatmulDType::kF32);
  ASSERT_TRUE(cache.Linear(x.data(), 40, *w2, y.data(), op).ok());
  EXPECT_EQ(cache.stats().primitives, 1u);
  // A different post-op or dtype is a new primitive.
  ASSERT_TRUE(cache.Linear(x.data(), 40, *w, y.data(), PostOp{}).ok());
  EXPECT_EQ(cache.stats().primitives, 2u);
  // 41 = 40 + 1: one more class.
  ASSERT_TRUE(cache.Linear(x.data(), 41, *w, y.data(), op).ok());
  EXPECT_EQ(cache.stats().primitives, 3u);
}

TEST(MatmulCacheTest, InOutLayoutMatchesOutIn) {
  std::mt19937 rng(5);
  const int M = 9, K = 37, N = 21;
  std::vector<float> w_out_in = RandomVec(N * K, rng), b = RandomVec(N, rng), x = RandomVec(M * K, rng);
  std::vector<float> w_in_out(K * N);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) w_in_out[k * N + n] = w_out_in[n * K + k];
  std::string skipped;
  for (MatmulDType dtype : {MatmulDType::kF32, MatmulDType::kBF16}) {
    if (absl::Status s = CheckMatmulDTypeSupported(dtype); !s.ok()) {
      skipped = std::string(s.message());
      continue;
    }
    auto a = PackedLinear::Create(w_out_in, K, N, b, dtype, WeightLayout::kOutIn);
    auto t = PackedLinear::Create(w_in_out, K, N, b, dtype, WeightLayout::kInOut);
    ASSERT_TRUE(a.ok() && t.ok());
    std::vector<float> ya(M * N), yt(M * N);
    ASSERT_TRUE(MatmulCache::Global().Linear(x.data(), M, *a, ya.data(), PostOp{.bias = true}).ok());
    ASSERT_TRUE(MatmulCache::Global().Linear(x.data(), M, *t, yt.data(), PostOp{.bias = true}).ok());
    EXPECT_EQ(ya, yt);  // same packed bytes, same kernel: bit-identical
  }
  if (!skipped.empty()) GTEST_SKIP() << "FP32 checked; BF16 not: " << skipped;
}

// Where BF16 matmuls exist they pack and run (LinearTest checks the numbers);
// where they do not (AVX2-only CPUs), asking for one fails up front with a
// message that names the CPU limitation instead of oneDNN's "could not create
// a primitive descriptor iterator".
TEST(MatmulCacheTest, Bf16AvailabilityIsReportedClearly) {
  std::mt19937 rng(12);
  EXPECT_TRUE(CheckMatmulDTypeSupported(MatmulDType::kF32).ok());
  const absl::Status s = CheckMatmulDTypeSupported(MatmulDType::kBF16);
  auto w = PackedLinear::Create(RandomVec(8 * 4, rng), 8, 4, {}, MatmulDType::kBF16);
  if (s.ok()) {
    EXPECT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE(IsaDescription().rfind("avx512", 0) == 0) << IsaDescription();
    return;
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("bfloat16"), std::string::npos) << s;
  EXPECT_NE(s.message().find("AVX-512"), std::string::npos) << s;
  EXPECT_NE(s.message().find(IsaDescription()), std::string::npos) << s;
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status(), s);
  EXPECT_FALSE(CpuHasAmxBf16());
  std::printf("BF16 matmuls unavailable here, as reported: %s\n", std::string(s.message()).c_str());
}

TEST(MatmulCacheTest, RejectsBadArguments) {
  std::mt19937 rng(6);
  EXPECT_FALSE(PackedLinear::Create(RandomVec(10, rng), 3, 4, {}, MatmulDType::kF32).ok());
  EXPECT_FALSE(PackedLinear::Create(RandomVec(12, rng), 3, 4, RandomVec(3, rng), MatmulDType::kF32).ok());
  EXPECT_FALSE(PackedLinear::Create({}, 0, 4, {}, MatmulDType::kF32).ok());
  auto w = PackedLinear::Create(RandomVec(12, rng), 3, 4, {}, MatmulDType::kF32);
  ASSERT_TRUE(w.ok());
  std::vector<float> x(3), y(4);
  EXPECT_FALSE(MatmulCache::Global().Linear(x.data(), 1, *w, y.data(), PostOp{.bias = true}).ok());
  EXPECT_FALSE(MatmulCache::Global().Linear(x.data(), 1, PackedLinear(), y.data(), PostOp{}).ok());
  EXPECT_TRUE(MatmulCache::Global().Linear(nullptr, 0, *w, nullptr, PostOp{}).ok());
}

TEST(MatmulCacheTest, ConcurrentCallersGetCorrectResults) {
  MatmulCache cache;
  std::mt19937 rng(11);
  const int K = 96, N = 80;
  std::vector<float> wv = RandomVec(N * K, rng, 0.2f), bv = RandomVec(N, rng);
  auto w32 = PackedLinear::Create(wv, K, N, bv, MatmulDType::kF32);
  ASSERT_TRUE(w32.ok());
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 r(100 + t);
      for (int iter = 0; iter < 20; ++iter) {
        const int M = 1 + (iter * 37 + t * 11) % 150;
        std::vector<float> x = RandomVec(static_cast<size_t>(M) * K, r);
        std::vector<float> y(static_cast<size_t>(M) * N);
        const PostOp op{.bias = true, .activation = iter % 2 ? FusedActivation::kGeluErf : FusedActivation::kNone};
        if (!cache.Linear(x.data(), M, *w32, y.data(), op).ok()) {
          ++failures[t];
          continue;
        }
        std::vector<double> ref, scale;
        Reference(x, wv, bv, {}, M, K, N, op, &ref, &scale);
        for (size_t i = 0; i < ref.size(); ++i) {
          if (!(std::abs(y[i] - ref[i]) <= 1e-5 * scale[i])) {
            ++failures[t];
            break;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

TEST(EngineContextTest, ReportsIsaAndThreads) {
  EXPECT_FALSE(IsaDescription().empty());
  EXPECT_NE(IsaDescription(), "unknown");
  const int before = NumThreads();
  SetNumThreads(1);
  EXPECT_EQ(SyncThreadCount(), 1);
  SetNumThreads(0);  // clamped
  EXPECT_EQ(NumThreads(), 1);
  SetNumThreads(before);
  EXPECT_EQ(NumThreads(), before);
  // A thread's own count wins over the process-wide one, on that thread only.
  SetNumThreads(3);
  int other_thread = 0;
  std::thread worker([&] {
    SetCallingThreadNumThreads(1);
    other_thread = SyncThreadCount();
  });
  worker.join();
  EXPECT_EQ(other_thread, 1);
  EXPECT_EQ(SyncThreadCount(), 3);
  SetCallingThreadNumThreads(2);
  EXPECT_EQ(SyncThreadCount(), 2);
  SetCallingThreadNumThreads(0);  // back to the process-wide count
  EXPECT_EQ(SyncThreadCount(), 3);
  SetNumThreads(before);
  // AMX implies AVX512-BF16 on every CPU that has it.
  if (CpuHasAmxBf16()) {
    EXPECT_TRUE(CpuHasAvx512Bf16());
  }
}

}  // namespace
}  // namespace maskserve::engine
