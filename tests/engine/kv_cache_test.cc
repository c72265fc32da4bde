#include "engine/kv_cache.h"

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "engine/attention.h"
#include "engine/attention_mask.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr int kBlock = 16;

KvCacheOptions Options(int num_blocks, int layers = 2, int heads = 2, int head_dim = 8) {
  KvCacheOptions o;
  o.block_size_tokens = kBlock;
  o.num_layers = layers;
  o.num_kv_heads = heads;
  o.head_dim = head_dim;
  o.total_bytes = int64_t{num_blocks} * 2 * layers * heads * kBlock * head_dim * sizeof(float);
  return o;
}

std::vector<float> RandomRows(int n, int width, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<size_t>(n) * width);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(KvCacheTest, CreateValidates) {
  KvCacheOptions o = Options(4);
  o.head_dim = 0;
  EXPECT_THAT(KvCachePool::Create(o).status().message(), HasSubstr("head_dim"));
  o = Options(4);
  o.total_bytes = 10;
  EXPECT_EQ(KvCachePool::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  auto pool = KvCachePool::Create(Options(4));
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ((*pool)->num_blocks(), 4);
  EXPECT_EQ((*pool)->block_bytes(), 2 * 2 * 2 * kBlock * 8 * 4);
}

TEST(KvCacheTest, AppendAndFreeAccounting) {
  auto pool = *KvCachePool::Create(Options(10));
  const SeqId a = pool->AllocateSequence();
  EXPECT_EQ(pool->Stats().blocks_used, 0);
  ASSERT_TRUE(pool->Append(a, 20).ok());  // 2 blocks
  EXPECT_EQ(pool->Stats().blocks_used, 2);
  ASSERT_TRUE(pool->Append(a, 12).ok());  // 32 tokens: still 2
  EXPECT_EQ(pool->Stats().blocks_used, 2);
  EXPECT_EQ(*pool->BlocksNeededToAppend(a, 1), 1);
  ASSERT_TRUE(pool->Append(a, 1).ok());  // 33: 3
  EXPECT_EQ(*pool->Length(a), 33);
  EXPECT_EQ(pool->BlockTable(a)->size(), 3u);
  const SeqId b = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(b, 5).ok());
  KvCacheStats st = pool->Stats();
  EXPECT_EQ(st.blocks_total, 10);
  EXPECT_EQ(st.blocks_used, 4);
  EXPECT_EQ(st.blocks_free, 6);
  EXPECT_EQ(st.sequences, 2);
  EXPECT_EQ(st.tokens, 38);
  ASSERT_TRUE(pool->Free(a).ok());
  st = pool->Stats();
  EXPECT_EQ(st.blocks_used, 1);
  EXPECT_EQ(st.sequences, 1);
  EXPECT_EQ(pool->Free(a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pool->Append(a, 1).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(pool->Free(b).ok());
  EXPECT_EQ(pool->Stats().blocks_free, 10);
}

TEST(KvCacheTest, ExhaustionIsAllOrNothing) {
  auto pool = *KvCachePool::Create(Options(3));
  const SeqId a = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(a, 40).ok());  // 3 blocks, 8 slots left in the last
  const SeqId b = pool->AllocateSequence();
  const absl::Status s = pool->Append(b, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(*pool->Length(b), 0);
  EXPECT_EQ(pool->Append(a, 9).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*pool->Length(a), 40);
  EXPECT_EQ(pool->Stats().blocks_free, 0);
  ASSERT_TRUE(pool->Append(a, 8).ok());  // fills the last block exactly
  ASSERT_TRUE(pool->Free(a).ok());
  EXPECT_TRUE(pool->Append(b, 1).ok());
}

TEST(KvCacheTest, FreedBlocksAreReused) {
  auto pool = *KvCachePool::Create(Options(4));
  const SeqId a = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(a, 64).ok());  // the whole pool
  const std::vector<int32_t> table = *pool->BlockTable(a);
  ASSERT_TRUE(pool->Free(a).ok());
  const SeqId b = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(b, 64).ok());
  const std::vector<int32_t> table_b = *pool->BlockTable(b);
  EXPECT_EQ(std::set<int32_t>(table.begin(), table.end()),
            std::set<int32_t>(table_b.begin(), table_b.end()));
}

TEST(KvCacheTest, WriteGatherRoundTripsWithStrides) {
  auto pool = *KvCachePool::Create(Options(8));
  std::mt19937 rng(1);
  const int w = pool->row_width();
  const SeqId a = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(a, 37).ok());
  // K and V interleaved in one fused buffer [37, 3 * w] (as a QKV projection gives).
  const std::vector<float> qkv = RandomRows(37, 3 * w, rng);
  for (int layer = 0; layer < 2; ++layer) {
    // Written in uneven chunks that straddle block boundaries.
    for (auto [begin, n] : {std::pair{0, 5}, {5, 20}, {25, 12}}) {
      ASSERT_TRUE(pool->Write(a, layer, begin, n, qkv.data() + begin * 3 * w + w,
                              qkv.data() + begin * 3 * w + 2 * w, 3 * w, 3 * w)
                      .ok());
    }
  }
  std::vector<float> k(37 * w), v(37 * w);
  ASSERT_TRUE(pool->Gather(a, 1, k.data(), v.data()).ok());
  for (int t = 0; t < 37; ++t) {
    for (int c = 0; c < w; ++c) {
      ASSERT_EQ(k[t * w + c], qkv[t * 3 * w + w + c]);
      ASSERT_EQ(v[t * w + c], qkv[t * 3 * w + 2 * w + c]);
    }
  }
  EXPECT_EQ(pool->Write(a, 0, 30, 8, qkv.data(), qkv.data()).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(pool->Write(a, 2, 0, 1, qkv.data(), qkv.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, ForkSharesBlocksAndCopiesOnWrite) {
  auto pool = *KvCachePool::Create(Options(8));
  std::mt19937 rng(2);
  const int w = pool->row_width();
  const SeqId parent = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(parent, 20).ok());
  const std::vector<float> k0 = RandomRows(20, w, rng), v0 = RandomRows(20, w, rng);
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(pool->Write(parent, layer, 0, 20, k0.data(), v0.data()).ok());
  }
  const SeqId child = *pool->Fork(parent);
  const std::vector<int32_t> pt = *pool->BlockTable(parent);
  EXPECT_THAT(*pool->BlockTable(child), ElementsAreArray(pt));
  EXPECT_EQ(pool->RefCount(pt[0]), 2);
  EXPECT_EQ(pool->RefCount(pt[1]), 2);
  EXPECT_EQ(pool->Stats().blocks_used, 2);  // forking allocates nothing
  EXPECT_EQ(*pool->Length(child), 20);

  // The child grows into the shared, partially filled last block: it gets a copy.
  EXPECT_EQ(*pool->BlocksNeededToAppend(child, 1), 1);
  ASSERT_TRUE(pool->Append(child, 1).ok());
  const std::vector<int32_t> ct = *pool->BlockTable(child);
  EXPECT_EQ(ct[0], pt[0]);
  EXPECT_NE(ct[1], pt[1]);
  EXPECT_EQ(pool->RefCount(pt[1]), 1);
  EXPECT_EQ(pool->Stats().blocks_used, 3);
  const std::vector<float> k1 = RandomRows(1, w, rng), v1 = RandomRows(1, w, rng);
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(pool->Write(child, layer, 20, 1, k1.data(), v1.data()).ok());
  }
  // The parent, now sole owner of its last block, appends in place.
  ASSERT_TRUE(pool->Append(parent, 1).ok());
  EXPECT_THAT(*pool->BlockTable(parent), ElementsAreArray(pt));
  const std::vector<float> k2 = RandomRows(1, w, rng), v2 = RandomRows(1, w, rng);
  ASSERT_TRUE(pool->Write(parent, 0, 20, 1, k2.data(), v2.data()).ok());

  std::vector<float> kc(21 * w), kp(21 * w);
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(pool->Gather(child, layer, kc.data(), nullptr).ok());
    for (int i = 0; i < 20 * w; ++i) ASSERT_EQ(kc[i], k0[i]) << "copied prefix, layer " << layer;
    for (int i = 0; i < w; ++i) ASSERT_EQ(kc[20 * w + i], k1[i]);
  }
  ASSERT_TRUE(pool->Gather(parent, 0, kp.data(), nullptr).ok());
  for (int i = 0; i < 20 * w; ++i) ASSERT_EQ(kp[i], k0[i]);
  for (int i = 0; i < w; ++i) ASSERT_EQ(kp[20 * w + i], k2[i]) << "parent kept its own token";

  // Rewriting a position in a still-shared full block copies that block too.
  const std::vector<float> k3 = RandomRows(1, w, rng);
  ASSERT_TRUE(pool->Write(child, 0, 3, 1, k3.data(), nullptr).ok());
  EXPECT_NE((*pool->BlockTable(child))[0], pt[0]);
  ASSERT_TRUE(pool->Gather(parent, 0, kp.data(), nullptr).ok());
  for (int i = 0; i < 20 * w; ++i) ASSERT_EQ(kp[i], k0[i]) << "parent intact after child rewrite";
  ASSERT_TRUE(pool->Gather(child, 0, kc.data(), nullptr).ok());
  for (int i = 0; i < w; ++i) ASSERT_EQ(kc[3 * w + i], k3[i]);
  for (int i = 0; i < w; ++i) ASSERT_EQ(kc[4 * w + i], k0[4 * w + i]);

  ASSERT_TRUE(pool->Free(parent).ok());
  ASSERT_TRUE(pool->Free(child).ok());
  EXPECT_EQ(pool->Stats().blocks_used, 0);
}

TEST(KvCacheTest, ForkOfFullLastBlockNeedsNoCopy) {
  auto pool = *KvCachePool::Create(Options(4));
  const SeqId a = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(a, 16).ok());
  const SeqId b = *pool->Fork(a);
  EXPECT_EQ(*pool->BlocksNeededToAppend(b, 1), 1);  // a fresh block, no copy
  ASSERT_TRUE(pool->Append(b, 1).ok());
  EXPECT_EQ((*pool->BlockTable(b))[0], (*pool->BlockTable(a))[0]);
  EXPECT_EQ(pool->Stats().blocks_used, 2);
}

TEST(KvCacheTest, ReassignForksAndFreesLikeBeamSearch) {
  auto pool = *KvCachePool::Create(Options(16));
  std::vector<SeqId> beams;
  for (int i = 0; i < 3; ++i) {
    beams.push_back(pool->AllocateSequence());
    ASSERT_TRUE(pool->Append(beams.back(), 10).ok());
  }
  // New beams 0,1 continue old beam 2, new beam 2 continues old beam 0; old beam 1 dies.
  const std::vector<SeqId> next = *pool->Reassign(beams, {2, 2, 0});
  EXPECT_EQ(next[0], beams[2]);
  EXPECT_EQ(next[2], beams[0]);
  EXPECT_NE(next[1], beams[2]);
  EXPECT_THAT(*pool->BlockTable(next[1]), ElementsAreArray(*pool->BlockTable(beams[2])));
  EXPECT_EQ(pool->Length(beams[1]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pool->Stats().sequences, 3);
  EXPECT_EQ(pool->Stats().blocks_used, 2);
  EXPECT_EQ(pool->Reassign(next, {3}).status().code(), absl::StatusCode::kInvalidArgument);
}

// FusedAttention over PagedKvSource must equal FusedAttention over the same
// K/V packed contiguously: the kernel does the same arithmetic in the same
// order, so the results are bit-identical.
TEST(KvCacheTest, FusedAttentionOverPagesEqualsContiguous) {
  constexpr int kLayers = 2, kKvHeads = 2, kHeadDim = 32, kHeads = 4;
  auto pool = *KvCachePool::Create(Options(64, kLayers, kKvHeads, kHeadDim));
  std::mt19937 rng(7);
  const int w = pool->row_width();
  // Sequences with their full K/V history per layer, kept on the side.
  struct Ref {
    SeqId id;
    std::vector<std::vector<float>> k, v;  // per layer [len, w]
  };
  auto append = [&](Ref& r, int n) {
    const int len = *pool->Length(r.id);
    ASSERT_TRUE(pool->Append(r.id, n).ok());
    for (int layer = 0; layer < kLayers; ++layer) {
      const std::vector<float> k = RandomRows(n, w, rng), v = RandomRows(n, w, rng);
      ASSERT_TRUE(pool->Write(r.id, layer, len, n, k.data(), v.data()).ok());
      r.k[layer].insert(r.k[layer].end(), k.begin(), k.end());
      r.v[layer].insert(r.v[layer].end(), v.begin(), v.end());
    }
  };
  std::vector<Ref> refs;
  for (int len : {1, 5, 16, 17, 40, 100}) {
    Ref r{pool->AllocateSequence(), std::vector<std::vector<float>>(kLayers),
          std::vector<std::vector<float>>(kLayers)};
    append(r, len);
    refs.push_back(std::move(r));
  }
  // Forks of the 17- and 40-token sequences that then diverge from their parents.
  for (int parent : {3, 4}) {
    Ref r = refs[parent];
    r.id = *pool->Fork(refs[parent].id);
    refs.push_back(std::move(r));
  }
  append(refs[6], 3);
  append(refs[3], 2);
  append(refs[7], 30);
  append(refs[4], 1);

  AttentionOptions ao;
  ao.num_heads = kHeads;
  ao.num_kv_heads = kKvHeads;
  ao.head_dim = kHeadDim;
  MaskSpec causal;
  causal.kind = MaskKind::kCausal;
  // Two query shapes: decode (the last position only) and full prefill.
  for (bool decode : {true, false}) {
    std::vector<SeqId> ids;
    std::vector<int32_t> cu_q{0}, cu_k{0};
    std::vector<AttentionMask> masks;
    for (const Ref& r : refs) {
      const int len = static_cast<int>(r.k[0].size()) / w;
      ASSERT_EQ(*pool->Length(r.id), len);
      ids.push_back(r.id);
      const int q_len = decode ? 1 : len;
      cu_q.push_back(cu_q.back() + q_len);
      cu_k.push_back(cu_k.back() + len);
      masks.push_back(*AttentionMask::Create(causal, len, len - q_len, q_len));
    }
    const int total_q = cu_q.back();
    const std::vector<float> q = RandomRows(total_q, kHeads * kHeadDim, rng);
    for (int layer = 0; layer < kLayers; ++layer) {
      std::vector<float> k, v;
      for (const Ref& r : refs) {
        k.insert(k.end(), r.k[layer].begin(), r.k[layer].end());
        v.insert(v.end(), r.v[layer].begin(), r.v[layer].end());
      }
      std::vector<float> want(total_q * kHeads * kHeadDim), got(want.size(), -1.0f);
      ASSERT_TRUE(FusedAttention(ao, q.data(), kHeads * kHeadDim, k.data(), w, v.data(), w, cu_q,
                                 cu_k, masks, want.data(), kHeads * kHeadDim)
                      .ok());
      auto source = pool->MakeKvSource(layer, ids);
      ASSERT_TRUE(source.ok()) << source.status();
      ASSERT_TRUE(FusedAttention(ao, q.data(), kHeads * kHeadDim, cu_q, **source, masks, got.data(),
                                 kHeads * kHeadDim)
                      .ok());
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(got[i], want[i]) << "decode=" << decode << " layer=" << layer << " i=" << i;
      }
      // And the kernel's reference agrees (loose: float64 vs FP32 online softmax).
      std::vector<float> naive(want.size());
      ASSERT_TRUE(NaiveAttention(ao, q.data(), kHeads * kHeadDim, k.data(), w, v.data(), w, cu_q,
                                 cu_k, masks, naive.data(), kHeads * kHeadDim)
                      .ok());
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], naive[i], 1e-5);
    }
  }
}

TEST(KvCacheTest, KvSourceRunsStopAtBlockBoundaries) {
  auto pool = *KvCachePool::Create(Options(8));
  const SeqId a = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(a, 40).ok());
  auto src = *pool->MakeKvSource(0, {a}, {35});
  EXPECT_EQ(src->NumKeys(0), 35);
  EXPECT_EQ(src->Fetch(0, 1, 0, 64).count, 16);
  EXPECT_EQ(src->Fetch(0, 1, 10, 64).count, 6);
  EXPECT_EQ(src->Fetch(0, 1, 10, 3).count, 3);
  EXPECT_EQ(src->Fetch(0, 0, 32, 64).count, 3);
  EXPECT_EQ(src->Fetch(0, 0, 0, 64).k_stride, 8);
  EXPECT_EQ(pool->MakeKvSource(0, {a}, {41}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace maskserve::engine
