// DecodeAttention (one query row per sequence) against NaiveAttention over
// contiguous K/V and against FusedAttention over the paged KV cache: every
// mask kind with q_offset = k_len - 1, GQA / MQA groupings, head widths
// with and without a SIMD tail, sequences without a query row, a fully
// masked row, and the log-n scale.
#include "engine/decode_attention.h"

#include <algorithm>
#include <random>
#include <vector>

#include "engine/attention.h"
#include "engine/attention_mask.h"
#include "engine/kv_cache.h"
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

std::vector<MaskSpec> Masks() {
  std::vector<MaskSpec> v;
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  v.push_back(m);
  m = MaskSpec{};
  m.kind = MaskKind::kLocal;
  m.window = 5;
  m.causal = true;
  v.push_back(m);
  m = MaskSpec{};
  m.kind = MaskKind::kDilated;
  m.rate = 3;
  m.causal = true;
  v.push_back(m);
  m = MaskSpec{};
  m.kind = MaskKind::kStrided;
  m.window = 2;
  m.rate = 7;
  v.push_back(m);
  m = MaskSpec{};
  m.kind = MaskKind::kUnilm;
  m.prefix_length = 9;
  v.push_back(m);
  v.push_back(MaskSpec{});  // BIDIRECTIONAL
  return v;
}

TEST(DecodeAttentionTest, MatchesNaiveAndFused) {
  std::mt19937 rng(1);
  struct Cfg {
    int heads, kv_heads, d, log_n;
  };
  for (const Cfg& c : {Cfg{4, 4, 16, 0}, Cfg{8, 2, 8, 0}, Cfg{6, 1, 13, 0}, Cfg{2, 2, 64, 32}}) {
    AttentionOptions o;
    o.num_heads = c.heads;
    o.num_kv_heads = c.kv_heads;
    o.head_dim = c.d;
    o.log_n_train_length = c.log_n;
    const int qw = c.heads * c.d, kw = c.kv_heads * c.d;
    for (const MaskSpec& spec : Masks()) {
      // Sequences of these lengths; the third has no query row.
      const std::vector<int> lens = {1, 17, 40, 130};
      const std::vector<int> rows = {1, 1, 0, 1};
      std::vector<int32_t> cu_q = {0}, cu_k = {0};
      std::vector<AttentionMask> masks;
      for (size_t b = 0; b < lens.size(); ++b) {
        cu_q.push_back(cu_q.back() + rows[b]);
        cu_k.push_back(cu_k.back() + lens[b]);
        MaskSpec sb = spec;
        if (sb.kind == MaskKind::kUnilm) sb.prefix_length = std::min(sb.prefix_length, lens[b]);
        masks.push_back(*AttentionMask::Create(sb, lens[b], lens[b] - rows[b], rows[b]));
      }
      const std::vector<float> q = Random(static_cast<size_t>(cu_q.back()) * qw, rng);
      const std::vector<float> k = Random(static_cast<size_t>(cu_k.back()) * kw, rng);
      const std::vector<float> v = Random(static_cast<size_t>(cu_k.back()) * kw, rng);
      std::vector<float> want(static_cast<size_t>(cu_q.back()) * qw, -1), got(want.size(), -2);
      ASSERT_TRUE(NaiveAttention(o, q.data(), qw, k.data(), kw, v.data(), kw, cu_q, cu_k, masks,
                                 want.data(), qw)
                      .ok());
      const ContiguousKv ckv(k.data(), kw, v.data(), kw, cu_k, c.d);
      ASSERT_TRUE(IsDecodeStep(masks));
      ASSERT_TRUE(DecodeAttention(o, q.data(), qw, cu_q, ckv, masks, got.data(), qw).ok());
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 2e-5) << spec.ToString() << " heads " << c.heads << " i " << i;
      }
      // Over the paged cache, against FusedAttention.
      KvCacheOptions po;
      po.block_size_tokens = 8;
      po.num_layers = 1;
      po.num_kv_heads = c.kv_heads;
      po.head_dim = c.d;
      po.total_bytes = int64_t{64} * 2 * c.kv_heads * 8 * c.d * 4;
      std::unique_ptr<KvCachePool> pool = *KvCachePool::Create(po);
      std::vector<SeqId> seqs;
      for (size_t b = 0; b < lens.size(); ++b) {
        seqs.push_back(pool->AllocateSequence());
        ASSERT_TRUE(pool->Append(seqs.back(), lens[b]).ok());
        ASSERT_TRUE(pool->Write(seqs.back(), 0, 0, lens[b], k.data() + cu_k[b] * kw,
                                v.data() + cu_k[b] * kw)
                        .ok());
      }
      std::unique_ptr<PagedKvSource> paged = *pool->MakeKvSource(0, seqs);
      std::vector<float> fused(want.size(), -3), dec(want.size(), -4);
      ASSERT_TRUE(FusedAttention(o, q.data(), qw, cu_q, *paged, masks, fused.data(), qw).ok());
      ASSERT_TRUE(DecodeAttention(o, q.data(), qw, cu_q, *paged, masks, dec.data(), qw).ok());
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(dec[i], fused[i], 2e-5) << i;
    }
  }
}

// A relative-position bias (T5) gives the same rows as FusedAttention and
// NaiveAttention with the same bias.
TEST(DecodeAttentionTest, RelativePositionBias) {
  std::mt19937 rng(5);
  AttentionOptions o;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 8;
  o.scale = 1.0f;
  const int max_len = 200;
  std::vector<float> table = Random(static_cast<size_t>(o.num_heads) * (2 * max_len - 1), rng);
  o.bias.table = table.data();
  o.bias.head_stride = 2 * max_len - 1;
  o.bias.center = max_len - 1;
  const int qw = o.num_heads * o.head_dim, kw = o.num_kv_heads * o.head_dim;
  for (const MaskSpec& spec : Masks()) {
    const std::vector<int> lens = {1, 17, 40, 130};
    std::vector<int32_t> cu_q = {0}, cu_k = {0};
    std::vector<AttentionMask> masks;
    for (int len : lens) {
      cu_q.push_back(cu_q.back() + 1);
      cu_k.push_back(cu_k.back() + len);
      MaskSpec sb = spec;
      if (sb.kind == MaskKind::kUnilm) sb.prefix_length = std::min(sb.prefix_length, len);
      // Cross-attention-like rows (q_offset 0 against all keys) for
      // BIDIRECTIONAL, the last position otherwise.
      const int q_offset = spec.kind == MaskKind::kBidirectional ? len / 3 : len - 1;
      masks.push_back(*AttentionMask::Create(sb, len, q_offset, 1));
    }
    const std::vector<float> q = Random(static_cast<size_t>(cu_q.back()) * qw, rng);
    const std::vector<float> k = Random(static_cast<size_t>(cu_k.back()) * kw, rng);
    const std::vector<float> v = Random(static_cast<size_t>(cu_k.back()) * kw, rng);
    std::vector<float> want(static_cast<size_t>(cu_q.back()) * qw, -1), got(want.size(), -2),
        fused(want.size(), -3);
    ASSERT_TRUE(NaiveAttention(o, q.data(), qw, k.data(), kw, v.data(), kw, cu_q, cu_k, masks,
                               want.data(), qw)
                    .ok());
    const ContiguousKv ckv(k.data(), kw, v.data(), kw, cu_k, o.head_dim);
    ASSERT_TRUE(DecodeAttention(o, q.data(), qw, cu_q, ckv, masks, got.data(), qw).ok());
    ASSERT_TRUE(FusedAttention(o, q.data(), qw, cu_q, ckv, masks, fused.data(), qw).ok());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 2e-5) << spec.ToString() << " i " << i;
      ASSERT_NEAR(fused[i], want[i], 2e-5) << spec.ToString() << " i " << i;
    }
  }
}

TEST(DecodeAttentionTest, RejectsPrefillRowsAndBadArguments) {
  AttentionOptions o;
  o.num_heads = 2;
  o.num_kv_heads = 2;
  o.head_dim = 4;
  MaskSpec causal;
  causal.kind = MaskKind::kCausal;
  std::vector<AttentionMask> masks = {*AttentionMask::Create(causal, 5, 3, 2)};
  EXPECT_FALSE(IsDecodeStep(masks));
  const std::vector<float> buf(64);
  std::vector<float> out(64);
  const std::vector<int32_t> cu_q = {0, 2}, cu_k = {0, 5};
  const ContiguousKv kv(buf.data(), 8, buf.data(), 8, cu_k, 4);
  EXPECT_THAT(DecodeAttention(o, buf.data(), 8, cu_q, kv, masks, out.data(), 8).message(),
              ::testing::HasSubstr("query rows"));
  masks = {*AttentionMask::Create(causal, 4, 3, 1)};  // 4 keys, the source has 5
  const std::vector<int32_t> cu_q1 = {0, 1};
  EXPECT_THAT(DecodeAttention(o, buf.data(), 8, cu_q1, kv, masks, out.data(), 8).message(),
              ::testing::HasSubstr("keys"));
  o.num_kv_heads = 3;
  EXPECT_FALSE(DecodeAttention(o, buf.data(), 8, cu_q1, kv, masks, out.data(), 8).ok());
}

}  // namespace
}  // namespace maskserve::engine
