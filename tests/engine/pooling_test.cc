// Pooling definitions on hand-computed examples (two packed sequences).
#include "engine/pooling.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

// Sequence 0: rows {1, -2}, {3, 4}; sequence 1: row {-5, 6}.
const std::vector<float> kLast = {1, -2, 3, 4, -5, 6};
const std::vector<float> kFirst = {3, 2, 1, 0, 5, -6};
const std::vector<int32_t> kCu = {0, 2, 3};

std::vector<float> PoolOf(PoolingMode mode, const float* first = kFirst.data()) {
  std::vector<float> out(4, 99.0f);
  EXPECT_TRUE(Pool(mode, kLast.data(), first, kCu, 2, out.data()).ok());
  return out;
}

TEST(PoolingTest, Definitions) {
  EXPECT_EQ(PoolOf(PoolingMode::kCls), (std::vector<float>{1, -2, -5, 6}));
  EXPECT_EQ(PoolOf(PoolingMode::kLastToken), (std::vector<float>{3, 4, -5, 6}));
  EXPECT_EQ(PoolOf(PoolingMode::kMean), (std::vector<float>{2, 1, -5, 6}));
  EXPECT_EQ(PoolOf(PoolingMode::kMax), (std::vector<float>{3, 4, -5, 6}));
  // mean over tokens of (first + last) / 2: seq 0 -> ((4,0)/2 + (4,4)/2) / 2.
  EXPECT_EQ(PoolOf(PoolingMode::kFirstLastAvg), (std::vector<float>{2, 1, 0, 0}));
}

TEST(PoolingTest, Errors) {
  std::vector<float> out(4);
  EXPECT_FALSE(Pool(PoolingMode::kFirstLastAvg, kLast.data(), nullptr, kCu, 2, out.data()).ok());
  EXPECT_TRUE(Pool(PoolingMode::kMean, kLast.data(), nullptr, kCu, 2, out.data()).ok());
  const std::vector<int32_t> empty_seq = {0, 2, 2};
  EXPECT_FALSE(Pool(PoolingMode::kMean, kLast.data(), nullptr, empty_seq, 2, out.data()).ok());
  const std::vector<int32_t> no_seqs = {0};
  EXPECT_FALSE(Pool(PoolingMode::kCls, kLast.data(), nullptr, no_seqs, 2, out.data()).ok());
}

TEST(PoolingTest, L2Normalize) {
  std::vector<float> v = {3, 4, 0, 0, 1e-20f, 0};
  L2Normalize(v.data(), 3, 2);
  EXPECT_FLOAT_EQ(v[0], 0.6f);
  EXPECT_FLOAT_EQ(v[1], 0.8f);
  EXPECT_EQ(v[2], 0.0f);  // zero vector stays zero (norm clamped to 1e-12)
  EXPECT_EQ(v[3], 0.0f);
  EXPECT_FLOAT_EQ(v[4], 1e-8f);  // 1e-20 / 1e-12
}

}  // namespace
}  // namespace maskserve::engine
