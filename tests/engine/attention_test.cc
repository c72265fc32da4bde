#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "engine/attention_mask.h"
#include "engine/kernels/cpu_features.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/isa_param.h"

namespace maskserve::engine {
namespace {

using ::testing::HasSubstr;

// Tolerance of fused (FP32, online softmax) vs naive (float64) outputs.
constexpr float kTolerance = 1e-5f;
constexpr float kSentinel = 12345.0f;

// Builds a spec of a given family for one sequence of k_len keys (UNILM
// needs per-sequence segment ids).
using SpecMaker = std::function<MaskSpec(int k_len, std::mt19937& rng)>;

struct NamedSpec {
  std::string name;
  SpecMaker make;
};

MaskSpec MaskSpecOf(MaskKind kind, bool causal, int window = 0, int rate = 0) {
  MaskSpec s;
  s.kind = kind;
  s.causal = causal;
  s.window = window;
  s.rate = rate;
  return s;
}

std::vector<NamedSpec> AllMaskFamilies() {
  auto fixed = [](MaskSpec s) { return [s](int, std::mt19937&) { return s; }; };
  auto unilm_segments = [](bool causal) {
    return [causal](int k_len, std::mt19937& rng) {
      MaskSpec s = MaskSpecOf(MaskKind::kUnilm, causal);
      const int prefix = 1 + static_cast<int>(rng() % k_len);
      s.segment_ids.assign(k_len, 0);
      for (int t = prefix; t < k_len; ++t) s.segment_ids[t] = 1;
      return s;
    };
  };
  return {
      {"BIDIRECTIONAL", fixed(MaskSpecOf(MaskKind::kBidirectional, false))},
      {"CAUSAL", fixed(MaskSpecOf(MaskKind::kCausal, false))},
      {"UNILM(segments)", unilm_segments(false)},
      {"UNILM(prefix)",
       [](int k_len, std::mt19937& rng) {
         MaskSpec s = MaskSpecOf(MaskKind::kUnilm, false);
         s.prefix_length = 1 + static_cast<int>(rng() % k_len);
         return s;
       }},
      {"UNILM(random segments)",
       [](int k_len, std::mt19937& rng) {
         MaskSpec s = MaskSpecOf(MaskKind::kUnilm, false);
         for (int t = 0; t < k_len; ++t) s.segment_ids.push_back(rng() % 5 == 0);
         return s;
       }},
      {"LOCAL_3", fixed(MaskSpecOf(MaskKind::kLocal, false, 3))},
      {"LOCAL_0", fixed(MaskSpecOf(MaskKind::kLocal, false, 0))},
      {"LOCAL_70", fixed(MaskSpecOf(MaskKind::kLocal, false, 70))},
      {"DILATED_3", fixed(MaskSpecOf(MaskKind::kDilated, false, 0, 3))},
      {"DILATED_1", fixed(MaskSpecOf(MaskKind::kDilated, false, 0, 1))},
      {"STRIDED_2_4", fixed(MaskSpecOf(MaskKind::kStrided, false, 2, 4))},
      {"STRIDED_40_64", fixed(MaskSpecOf(MaskKind::kStrided, false, 40, 64))},
      {"CAUSAL+LOCAL_3", fixed(MaskSpecOf(MaskKind::kLocal, true, 3))},
      {"CAUSAL+DILATED_3", fixed(MaskSpecOf(MaskKind::kDilated, true, 0, 3))},
      {"CAUSAL+STRIDED_2_4", fixed(MaskSpecOf(MaskKind::kStrided, true, 2, 4))},
      {"CAUSAL+UNILM", unilm_segments(true)},
  };
}

// Packed problem: Q rows [total_q, q_stride], K/V in one fused buffer
// [total_k, kv_stride] (K at column 0, V at column num_kv_heads * head_dim).
struct Problem {
  AttentionOptions options;
  std::vector<int32_t> cu_q{0};
  std::vector<int32_t> cu_k{0};
  std::vector<AttentionMask> masks;
  std::vector<float> q;
  std::vector<float> kv;
  int64_t q_stride = 0;
  int64_t kv_stride = 0;
  int64_t out_stride = 0;

  const float* k() const { return kv.data(); }
  const float* v() const { return kv.data() + int64_t{options.num_kv_heads} * options.head_dim; }
  int total_q() const { return cu_q.back(); }
  std::vector<float> NewOutput() const {
    return std::vector<float>(static_cast<size_t>(total_q()) * out_stride, kSentinel);
  }
  absl::Status Fused(std::vector<float>& out, AttentionStats* stats = nullptr) const {
    return FusedAttention(options, q.data(), q_stride, k(), kv_stride, v(), kv_stride, cu_q, cu_k,
                          masks, out.data(), out_stride, stats);
  }
  absl::Status Naive(std::vector<float>& out) const {
    return NaiveAttention(options, q.data(), q_stride, k(), kv_stride, v(), kv_stride, cu_q, cu_k,
                          masks, out.data(), out_stride);
  }
};

void FillRandom(std::vector<float>& x, float amplitude, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-amplitude, amplitude);
  for (float& f : x) f = dist(rng);
}

struct SeqShape {
  int q_len;
  int k_len;
  int q_offset;
};

Problem MakeProblem(const AttentionOptions& options, const std::vector<SeqShape>& seqs,
                    const SpecMaker& make, std::mt19937& rng) {
  Problem p;
  p.options = options;
  const int h = options.num_heads;
  const int hkv = options.num_kv_heads;
  const int d = options.head_dim;
  for (const SeqShape& s : seqs) {
    p.cu_q.push_back(p.cu_q.back() + s.q_len);
    p.cu_k.push_back(p.cu_k.back() + s.k_len);
    absl::StatusOr<AttentionMask> m =
        AttentionMask::Create(make(s.k_len, rng), s.k_len, s.q_offset, s.q_len);
    EXPECT_TRUE(m.ok()) << m.status();
    p.masks.push_back(*m);
  }
  // Odd paddings make sure strides, not widths, are used.
  p.q_stride = int64_t{h} * d + 3;
  p.kv_stride = 2 * int64_t{hkv} * d + 5;
  p.out_stride = int64_t{h} * d + 7;
  p.q.resize(static_cast<size_t>(p.cu_q.back()) * p.q_stride);
  p.kv.resize(static_cast<size_t>(p.cu_k.back()) * p.kv_stride);
  // Queries spread wide enough that softmax is far from uniform.
  FillRandom(p.q, 4.0f, rng);
  FillRandom(p.kv, 1.0f, rng);
  return p;
}

float MaxAbsDiff(const Problem& p, const std::vector<float>& a, const std::vector<float>& b) {
  const int64_t width = int64_t{p.options.num_heads} * p.options.head_dim;
  float worst = 0.0f;
  for (int t = 0; t < p.total_q(); ++t) {
    for (int64_t c = 0; c < p.out_stride; ++c) {
      const float x = a[t * p.out_stride + c];
      const float y = b[t * p.out_stride + c];
      if (c >= width) {
        // Padding columns of the output must be left alone.
        EXPECT_EQ(x, kSentinel);
        EXPECT_EQ(y, kSentinel);
        continue;
      }
      worst = std::max(worst, std::fabs(x - y));
    }
  }
  return worst;
}

// Every test runs on each kernel ISA this CPU supports (.../avx2, .../avx512).
class AttentionTest : public maskserve::testing::IsaTest {};

TEST_P(AttentionTest, FusedMatchesNaiveForEveryMaskKind) {
  std::mt19937 rng(2024);
  const int head_dims[] = {16, 32, 64, 80, 8, 40};
  int cases = 0;
  float worst = 0.0f;
  for (const NamedSpec& family : AllMaskFamilies()) {
    for (int trial = 0; trial < 6; ++trial) {
      AttentionOptions o;
      o.num_heads = 1 + static_cast<int>(rng() % 4);
      std::vector<int> divisors;
      for (int x = 1; x <= o.num_heads; ++x) {
        if (o.num_heads % x == 0) divisors.push_back(x);
      }
      o.num_kv_heads = divisors[rng() % divisors.size()];
      o.head_dim = head_dims[trial % 6 < 4 ? rng() % 4 : 4 + rng() % 2];
      // Mode: 0 = prefill, 1 = decode (1..4 new queries after a cache),
      // 2 = chunked prefill at an arbitrary offset.
      const int mode = trial % 3;
      const int num_seqs = 1 + static_cast<int>(rng() % 4);
      std::vector<SeqShape> seqs;
      for (int s = 0; s < num_seqs; ++s) {
        const int k_len = 1 + static_cast<int>(rng() % 300);
        SeqShape shape{k_len, k_len, 0};
        if (mode == 1) {
          shape.q_len = std::min(k_len, 1 + static_cast<int>(rng() % 4));
          shape.q_offset = k_len - shape.q_len;
        } else if (mode == 2) {
          shape.q_len = 1 + static_cast<int>(rng() % k_len);
          shape.q_offset = static_cast<int>(rng() % (k_len - shape.q_len + 1));
        }
        seqs.push_back(shape);
      }
      const Problem p = MakeProblem(o, seqs, family.make, rng);
      std::vector<float> fused = p.NewOutput();
      std::vector<float> naive = p.NewOutput();
      AttentionStats stats;
      ASSERT_TRUE(p.Fused(fused, &stats).ok());
      ASSERT_TRUE(p.Naive(naive).ok());
      const float diff = MaxAbsDiff(p, fused, naive);
      EXPECT_LE(diff, kTolerance) << family.name << " heads " << o.num_heads << "/"
                                  << o.num_kv_heads << " d " << o.head_dim << " mode " << mode
                                  << " seqs " << num_seqs;
      EXPECT_LE(stats.blocks_computed(), stats.blocks_dense);
      worst = std::max(worst, diff);
      ++cases;
    }
  }
  EXPECT_EQ(cases, 16 * 6);
  std::cout << cases << " cases, max |fused - naive| = " << worst << "\n";
}

// A relative-position bias table over q - k in [-(max_len - 1), max_len - 1]
// per head (random values), as T5 models build them.
struct BiasTable {
  std::vector<float> values;
  RelativePositionBias view;
};

BiasTable MakeBiasTable(int heads, int max_len, std::mt19937& rng) {
  BiasTable t;
  t.values.resize(static_cast<size_t>(heads) * (2 * max_len - 1));
  FillRandom(t.values, 3.0f, rng);
  t.view.table = t.values.data();
  t.view.head_stride = 2 * max_len - 1;
  t.view.center = max_len - 1;
  return t;
}

// The biased attention of one query row and head, computed from the
// definition (scale * q.k + bias(q - k), masked softmax), in double.
void ExplicitBiasedRow(const Problem& p, int b, int r, int h, double* out) {
  const AttentionOptions& o = p.options;
  const AttentionMask& mask = p.masks[b];
  const int d = o.head_dim;
  const int g = h / (o.num_heads / o.num_kv_heads);
  const double scale = EffectiveAttentionScale(o, mask.k_len());
  const float* qr = p.q.data() + (int64_t{p.cu_q[b]} + r) * p.q_stride + int64_t{h} * d;
  std::vector<double> s(mask.k_len(), -INFINITY);
  double mx = -INFINITY;
  for (int j = 0; j < mask.k_len(); ++j) {
    if (!mask.Allowed(r, j)) continue;
    const float* kr = p.k() + (int64_t{p.cu_k[b]} + j) * p.kv_stride + int64_t{g} * d;
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += double{qr[c]} * kr[c];
    const int rel = mask.q_offset() + r - j;
    s[j] = dot * scale + o.bias.table[h * o.bias.head_stride + o.bias.center + rel];
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  std::vector<double> acc(d, 0.0);
  for (int j = 0; j < mask.k_len(); ++j) {
    if (!mask.Allowed(r, j)) continue;
    const double e = std::exp(s[j] - mx);
    sum += e;
    const float* vr = p.v() + (int64_t{p.cu_k[b]} + j) * p.kv_stride + int64_t{g} * d;
    for (int c = 0; c < d; ++c) acc[c] += e * vr[c];
  }
  for (int c = 0; c < d; ++c) out[c] = sum > 0 ? acc[c] / sum : 0.0;
}

TEST_P(AttentionTest, RelativePositionBiasMatchesDefinition) {
  std::mt19937 rng(77);
  const std::vector<std::string> families = {"BIDIRECTIONAL", "CAUSAL", "LOCAL_3",
                                             "CAUSAL+STRIDED_2_4", "UNILM(prefix)"};
  int cases = 0;
  float worst = 0.0f;
  for (const NamedSpec& family : AllMaskFamilies()) {
    if (std::find(families.begin(), families.end(), family.name) == families.end()) continue;
    for (int trial = 0; trial < 4; ++trial) {
      AttentionOptions o;
      o.num_heads = 2 + trial % 3;
      o.num_kv_heads = trial == 1 ? 1 : o.num_heads;
      o.head_dim = trial == 2 ? 4 : 32;
      o.scale = trial == 3 ? 1.0f : 0.0f;  // T5 does not scale
      // Prefill (several tiles of both kinds), decode-like rows after a
      // cache, a chunk at an offset, a one-key sequence.
      const std::vector<SeqShape> seqs = {{150, 150, 0}, {3, 90, 87}, {40, 130, 50}, {1, 1, 0}};
      const Problem base = MakeProblem(o, seqs, family.make, rng);
      const BiasTable bias = MakeBiasTable(o.num_heads, 160, rng);
      Problem p = base;
      p.options.bias = bias.view;
      std::vector<float> fused = p.NewOutput();
      std::vector<float> naive = p.NewOutput();
      ASSERT_TRUE(p.Fused(fused).ok());
      ASSERT_TRUE(p.Naive(naive).ok());
      worst = std::max(worst, MaxAbsDiff(p, fused, naive));
      // The naive reference itself against the definition.
      std::vector<double> row(o.head_dim);
      for (size_t b = 0; b < p.masks.size(); ++b) {
        for (int r = 0; r < p.masks[b].q_len(); r += 7) {
          for (int h = 0; h < o.num_heads; ++h) {
            ExplicitBiasedRow(p, static_cast<int>(b), r, h, row.data());
            const float* got =
                fused.data() + (int64_t{p.cu_q[b]} + r) * p.out_stride + int64_t{h} * o.head_dim;
            for (int c = 0; c < o.head_dim; ++c) {
              ASSERT_NEAR(got[c], row[c], kTolerance) << family.name << " b " << b << " r " << r;
            }
          }
        }
      }
      // The bias changes the result (it is not silently ignored).
      std::vector<float> unbiased = base.NewOutput();
      ASSERT_TRUE(base.Fused(unbiased).ok());
      EXPECT_GT(MaxAbsDiff(p, fused, unbiased), 1e-3f) << family.name;
      ++cases;
    }
  }
  EXPECT_EQ(cases, 20);
  EXPECT_LE(worst, kTolerance);
  std::cout << cases << " biased cases, max |fused - naive| = " << worst << "\n";
}

// Keys/values scattered over fixed-size pages that do not line up with the
// kernel's key blocks, reached through a block table: what a paged KV cache
// looks like to the kernel.
class PagedKv final : public KvSource {
 public:
  PagedKv(const Problem& p, int page_size, std::mt19937& rng)
      : page_size_(page_size), d_(p.options.head_dim), hkv_(p.options.num_kv_heads) {
    const int num_seqs = static_cast<int>(p.masks.size());
    table_.resize(num_seqs);
    lens_.resize(num_seqs);
    // Page layout [kv_head][slot][head_dim] for K then V.
    const int64_t page_floats = 2 * int64_t{hkv_} * page_size_ * d_;
    std::vector<std::pair<int, int>> order;  // (seq, page index)
    for (int b = 0; b < num_seqs; ++b) {
      lens_[b] = p.cu_k[b + 1] - p.cu_k[b];
      const int pages = (lens_[b] + page_size_ - 1) / page_size_;
      table_[b].resize(pages);
      for (int g = 0; g < pages; ++g) order.push_back({b, g});
    }
    std::shuffle(order.begin(), order.end(), rng);
    pool_.assign(order.size() * page_floats, -777.0f);
    for (size_t slot = 0; slot < order.size(); ++slot) {
      table_[order[slot].first][order[slot].second] = static_cast<int>(slot);
    }
    for (int b = 0; b < num_seqs; ++b) {
      for (int j = 0; j < lens_[b]; ++j) {
        const float* src = p.kv.data() + (int64_t{p.cu_k[b]} + j) * p.kv_stride;
        for (int g = 0; g < hkv_; ++g) {
          float* kd = KeyPtr(b, g, j);
          float* vd = kd + int64_t{hkv_} * page_size_ * d_;
          std::copy(src + g * d_, src + (g + 1) * d_, kd);
          std::copy(src + (hkv_ + g) * d_, src + (hkv_ + g + 1) * d_, vd);
        }
      }
    }
  }
  int NumKeys(int seq) const override { return lens_[seq]; }
  KvRun Fetch(int seq, int kv_head, int key, int max_count) const override {
    KvRun run;
    run.k = KeyPtr(seq, kv_head, key);
    run.v = run.k + int64_t{hkv_} * page_size_ * d_;
    run.k_stride = d_;
    run.v_stride = d_;
    run.count = std::min({max_count, page_size_ - key % page_size_, lens_[seq] - key});
    return run;
  }

 private:
  float* KeyPtr(int seq, int g, int key) const {
    const int64_t page_floats = 2 * int64_t{hkv_} * page_size_ * d_;
    const int slot = table_[seq][key / page_size_];
    return const_cast<float*>(pool_.data()) + slot * page_floats +
           (int64_t{g} * page_size_ + key % page_size_) * d_;
  }
  int page_size_;
  int d_;
  int hkv_;
  std::vector<std::vector<int>> table_;
  std::vector<int> lens_;
  std::vector<float> pool_;
};

TEST_P(AttentionTest, PagedKvSourceGivesIdenticalResults) {
  std::mt19937 rng(99);
  AttentionOptions o;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 64;
  const std::vector<SeqShape> seqs = {{200, 200, 0}, {3, 150, 147}, {1, 77, 76}};
  for (const NamedSpec& family : AllMaskFamilies()) {
    const Problem p = MakeProblem(o, seqs, family.make, rng);
    std::vector<float> contiguous = p.NewOutput();
    std::vector<float> paged = p.NewOutput();
    ASSERT_TRUE(p.Fused(contiguous).ok());
    const PagedKv kv(p, /*page_size=*/7, rng);
    ASSERT_TRUE(
        FusedAttention(o, p.q.data(), p.q_stride, p.cu_q, kv, p.masks, paged.data(), p.out_stride)
            .ok());
    // Same arithmetic in the same order: bit-identical.
    EXPECT_EQ(MaxAbsDiff(p, contiguous, paged), 0.0f) << family.name;
  }
}

TEST_P(AttentionTest, LocalMaskCostsLinearBlocks) {
  std::mt19937 rng(5);
  constexpr int kLen = 4096;
  constexpr int kWindow = 8;
  AttentionOptions o;
  o.num_heads = 1;
  o.num_kv_heads = 1;
  o.head_dim = 64;
  const Problem p = MakeProblem(
      o, {{kLen, kLen, 0}},
      [](int, std::mt19937&) { return MaskSpecOf(MaskKind::kLocal, false, kWindow); }, rng);
  std::vector<float> fused = p.NewOutput();
  AttentionStats stats;
  ASSERT_TRUE(p.Fused(fused, &stats).ok());
  constexpr double bq = kAttentionBlockQ;
  constexpr double bk = kAttentionBlockK;
  const double bound = (kLen / bq) * ((2 * kWindow + bq) / bk + 2);
  const double dense = (kLen / bq) * (kLen / bk);
  std::cout << "LOCAL(" << kWindow << ") L=" << kLen << ": computed " << stats.blocks_computed()
            << " (full " << stats.blocks_full << ", partial " << stats.blocks_partial
            << ", skipped " << stats.blocks_empty << "), bound " << bound << ", dense "
            << stats.blocks_dense << "\n";
  EXPECT_LE(stats.blocks_computed(), bound);
  EXPECT_EQ(stats.blocks_dense, static_cast<int64_t>(dense));
  EXPECT_LT(stats.blocks_computed() * 20, stats.blocks_dense);
  std::vector<float> naive = p.NewOutput();
  ASSERT_TRUE(p.Naive(naive).ok());
  EXPECT_LE(MaxAbsDiff(p, fused, naive), kTolerance);
}

TEST_P(AttentionTest, BlockStatsFollowMaskShape) {
  std::mt19937 rng(6);
  AttentionOptions o;
  o.num_heads = 2;
  o.num_kv_heads = 1;
  o.head_dim = 32;
  constexpr int kLen = 1024;
  const int64_t q_blocks = kLen / kAttentionBlockQ;
  const int64_t k_blocks = kLen / kAttentionBlockK;
  auto run = [&](MaskSpec spec) {
    const Problem p = MakeProblem(
        o, {{kLen, kLen, 0}}, [spec](int, std::mt19937&) { return spec; }, rng);
    std::vector<float> out = p.NewOutput();
    AttentionStats stats;
    EXPECT_TRUE(p.Fused(out, &stats).ok());
    return stats;
  };
  const AttentionStats bidi = run(MaskSpecOf(MaskKind::kBidirectional, false));
  EXPECT_EQ(bidi.blocks_full, 2 * q_blocks * k_blocks);
  EXPECT_EQ(bidi.blocks_partial, 0);
  EXPECT_EQ(bidi.blocks_empty, 0);
  const AttentionStats causal = run(MaskSpecOf(MaskKind::kCausal, false));
  // Only the diagonal tiles need a mask; keys past the block never visited.
  EXPECT_EQ(causal.blocks_partial, 2 * q_blocks);
  EXPECT_EQ(causal.blocks_empty, 0);
  EXPECT_LT(causal.blocks_computed(), bidi.blocks_computed() * 6 / 10);
}

TEST_P(AttentionTest, LogNScalingMultipliesScaleByLogRatio) {
  std::mt19937 rng(11);
  AttentionOptions o;
  o.num_heads = 2;
  o.num_kv_heads = 2;
  o.head_dim = 32;
  const float base = 1.0f / std::sqrt(32.0f);
  EXPECT_FLOAT_EQ(EffectiveAttentionScale(o, 300), base);
  o.log_n_train_length = 64;
  EXPECT_FLOAT_EQ(EffectiveAttentionScale(o, 300), base * std::log(300.0) / std::log(64.0));
  EXPECT_FLOAT_EQ(EffectiveAttentionScale(o, 64), base);
  o.scale = 0.5f;
  EXPECT_FLOAT_EQ(EffectiveAttentionScale(o, 20), 0.5 * std::log(20.0) / std::log(64.0));
  o.scale = 0.0f;

  const std::vector<SeqShape> seqs = {{300, 300, 0}, {64, 64, 0}};
  const Problem p = MakeProblem(
      o, seqs, [](int, std::mt19937&) { return MaskSpecOf(MaskKind::kBidirectional, false); }, rng);
  std::vector<float> with_log_n = p.NewOutput();
  std::vector<float> naive = p.NewOutput();
  ASSERT_TRUE(p.Fused(with_log_n).ok());
  ASSERT_TRUE(p.Naive(naive).ok());
  EXPECT_LE(MaxAbsDiff(p, with_log_n, naive), kTolerance);

  // Sequence 0 (300 keys) equals a run with the scale given explicitly;
  // sequence 1 (k_len == train length) equals a run without log-n.
  Problem explicit_scale = p;
  explicit_scale.options.log_n_train_length = 0;
  explicit_scale.options.scale = base * std::log(300.0) / std::log(64.0);
  std::vector<float> by_scale = explicit_scale.NewOutput();
  ASSERT_TRUE(explicit_scale.Fused(by_scale).ok());
  Problem plain = p;
  plain.options.log_n_train_length = 0;
  std::vector<float> unscaled = plain.NewOutput();
  ASSERT_TRUE(plain.Fused(unscaled).ok());
  const int64_t width = 2 * 32;
  float seq0_vs_explicit = 0.0f;
  float seq0_vs_plain = 0.0f;
  float seq1_vs_plain = 0.0f;
  for (int t = 0; t < p.total_q(); ++t) {
    for (int64_t c = 0; c < width; ++c) {
      const int64_t at = t * p.out_stride + c;
      if (t < 300) {
        seq0_vs_explicit = std::max(seq0_vs_explicit, std::fabs(with_log_n[at] - by_scale[at]));
        seq0_vs_plain = std::max(seq0_vs_plain, std::fabs(with_log_n[at] - unscaled[at]));
      } else {
        seq1_vs_plain = std::max(seq1_vs_plain, std::fabs(with_log_n[at] - unscaled[at]));
      }
    }
  }
  EXPECT_LE(seq0_vs_explicit, 1e-6f);
  EXPECT_GT(seq0_vs_plain, 1e-3f);  // log(300)/log(64) = 1.37 changes outputs
  EXPECT_LE(seq1_vs_plain, 1e-6f);
}

TEST_P(AttentionTest, RowsWithoutAllowedKeysAreZero) {
  std::mt19937 rng(3);
  AttentionOptions o;
  o.num_heads = 1;
  o.num_kv_heads = 1;
  o.head_dim = 16;
  // LOCAL(2) queries at positions 30..33 against 10 keys: nothing in reach.
  const Problem p = MakeProblem(
      o, {{4, 10, 30}, {5, 5, 0}},
      [](int, std::mt19937&) { return MaskSpecOf(MaskKind::kLocal, false, 2); }, rng);
  std::vector<float> out = p.NewOutput();
  AttentionStats stats;
  ASSERT_TRUE(p.Fused(out, &stats).ok());
  for (int t = 0; t < 4; ++t) {
    for (int c = 0; c < 16; ++c) EXPECT_EQ(out[t * p.out_stride + c], 0.0f);
  }
  std::vector<float> naive = p.NewOutput();
  ASSERT_TRUE(p.Naive(naive).ok());
  EXPECT_LE(MaxAbsDiff(p, out, naive), kTolerance);
}

TEST_P(AttentionTest, RejectsInconsistentArguments) {
  std::mt19937 rng(4);
  AttentionOptions o;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 16;
  Problem p = MakeProblem(
      o, {{8, 8, 0}}, [](int, std::mt19937&) { return MaskSpecOf(MaskKind::kCausal, false); }, rng);
  std::vector<float> out = p.NewOutput();
  ASSERT_TRUE(p.Fused(out).ok());

  Problem bad = p;
  bad.options.num_kv_heads = 3;
  EXPECT_THAT(std::string(bad.Fused(out).message()), HasSubstr("num_kv_heads"));
  bad = p;
  bad.options.log_n_train_length = 1;
  EXPECT_THAT(std::string(bad.Fused(out).message()), HasSubstr("log_n_train_length"));
  bad = p;
  bad.cu_q = {0, 7};
  EXPECT_THAT(std::string(bad.Fused(out).message()), HasSubstr("q_len"));
  bad = p;
  bad.cu_k = {0, 9};
  EXPECT_THAT(std::string(bad.Fused(out).message()), HasSubstr("k_len"));
  bad = p;
  bad.q_stride = 10;
  EXPECT_THAT(std::string(bad.Fused(out).message()), HasSubstr("stride"));
  bad = p;
  bad.cu_q = {0, 8, 8};
  EXPECT_THAT(std::string(bad.Fused(out).message()), HasSubstr("cu_seqlens_q"));
}

MASKSERVE_INSTANTIATE_ISA_TESTS(AttentionTest);

// The AVX2 and AVX-512 tile kernels on the same problems: both within the
// fused-vs-naive tolerance of each other (they differ only in register
// blocking, which does not change the order of any sum).
TEST(AttentionCrossIsaTest, Avx2AndAvx512Agree) {
  if (!kernels::IsaSupported(kernels::Isa::kAvx512)) {
    GTEST_SKIP() << "this CPU has no AVX-512 (" << kernels::CpuFeatureSummary()
                 << "): the AVX-512 tile kernels are not exercised here";
  }
  const kernels::Isa saved = kernels::ActiveIsa();
  std::mt19937 rng(77);
  AttentionOptions o;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  for (int d : {8, 40, 64, 80}) {
    o.head_dim = d;
    for (const NamedSpec& family : AllMaskFamilies()) {
      const Problem p = MakeProblem(o, {{70, 70, 0}, {3, 130, 127}, {33, 33, 0}}, family.make, rng);
      std::vector<float> a = p.NewOutput();
      std::vector<float> z = p.NewOutput();
      ASSERT_TRUE(kernels::SetActiveIsa(kernels::Isa::kAvx2).ok());
      ASSERT_TRUE(p.Fused(a).ok());
      ASSERT_TRUE(kernels::SetActiveIsa(kernels::Isa::kAvx512).ok());
      ASSERT_TRUE(p.Fused(z).ok());
      EXPECT_LE(MaxAbsDiff(p, a, z), 1e-6f) << family.name << " d " << d;
    }
  }
  ASSERT_TRUE(kernels::SetActiveIsa(saved).ok());
}

}  // namespace
}  // namespace maskserve::engine
