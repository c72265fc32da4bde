// Spearman / ranks / cosine of bench/spearman.h against values computed by
// hand (and cross-checked with scipy.stats.spearmanr). Exact arithmetic on
// small integers, so the tolerance is 1e-12.
#include "bench/spearman.h"

#include <cmath>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace maskserve::bench {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;

constexpr double kTol = 1e-12;

TEST(AverageRanksTest, DistinctValuesGetTheirPositions) {
  EXPECT_THAT(AverageRanks({30, 10, 20}), ElementsAre(3, 1, 2));
}

TEST(AverageRanksTest, TiesGetTheMeanOfTheirRanks) {
  EXPECT_THAT(AverageRanks({10, 20, 20, 30}), ElementsAre(1, 2.5, 2.5, 4));
  // The three 3s span ranks 3, 4, 5 -> 4 each.
  EXPECT_THAT(AverageRanks({3, 1, 3, 3, 2}), ElementsAre(4, 1, 4, 4, 2));
  EXPECT_THAT(AverageRanks({7, 7, 7}), ElementsAre(2, 2, 2));
}

TEST(AverageRanksTest, Empty) { EXPECT_TRUE(AverageRanks({}).empty()); }

TEST(SpearmanTest, NoTies) {
  // d = rank differences {-1, 1, -1, 1, 0}: 1 - 6*4 / (5*24) = 0.8.
  auto rho = Spearman({1, 2, 3, 4, 5}, {2, 1, 4, 3, 5});
  ASSERT_TRUE(rho.has_value());
  EXPECT_THAT(*rho, DoubleNear(0.8, kTol));
}

TEST(SpearmanTest, TiesOnOneSideUseAverageRanksNotTheShortcut) {
  // ranks y = {1, 4, 2.5, 2.5}; Pearson of ranks = 1.5 / sqrt(5 * 4.5)
  // = sqrt(0.1). The no-ties shortcut would give 0.35 instead.
  auto rho = Spearman({1, 2, 3, 4}, {1, 3, 2, 2});
  ASSERT_TRUE(rho.has_value());
  EXPECT_THAT(*rho, DoubleNear(std::sqrt(0.1), kTol));
}

TEST(SpearmanTest, TiesOnBothSides) {
  // ranks x = {1.5, 1.5, 3, 4}, y = {1, 2.5, 2.5, 4}: 3.75 / 4.5.
  auto rho = Spearman({1, 1, 2, 3}, {1, 2, 2, 3});
  ASSERT_TRUE(rho.has_value());
  EXPECT_THAT(*rho, DoubleNear(3.75 / 4.5, kTol));
  // Crossed ties cancel out.
  rho = Spearman({1, 1, 2, 2}, {1, 2, 1, 2});
  ASSERT_TRUE(rho.has_value());
  EXPECT_THAT(*rho, DoubleNear(0.0, kTol));
}

TEST(SpearmanTest, MonotoneTransformsAreInvisible) {
  std::vector<double> x = {0.3, -1.2, 2.5, 0.0, 7.0};
  std::vector<double> up, down;
  for (double v : x) {
    up.push_back(std::exp(v));
    down.push_back(-v * v * v);
  }
  EXPECT_THAT(*Spearman(x, up), DoubleNear(1.0, kTol));
  EXPECT_THAT(*Spearman(x, down), DoubleNear(-1.0, kTol));
}

TEST(SpearmanTest, UndefinedCases) {
  EXPECT_FALSE(Spearman({1, 2, 3}, {4, 4, 4}).has_value());  // constant side
  EXPECT_FALSE(Spearman({1, 2, 3}, {1, 2}).has_value());     // length mismatch
  EXPECT_FALSE(Spearman({1}, {1}).has_value());              // n < 2
}

TEST(PearsonTest, HandComputed) {
  // x - 2 = {-1, 0, 1}, y - 3 = {-2, 1, 1}: 3 / sqrt(2 * 6).
  auto r = Pearson({1, 2, 3}, {1, 4, 4});
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(*r, DoubleNear(3.0 / std::sqrt(12.0), kTol));
}

TEST(CosineTest, HandComputed) {
  const float a[] = {1, 0}, b[] = {0, 1}, c[] = {1, 1};
  EXPECT_THAT(Cosine(a, b, 2), DoubleNear(0.0, kTol));
  EXPECT_THAT(Cosine(a, c, 2), DoubleNear(1.0 / std::sqrt(2.0), kTol));
  const float d[] = {1, 2, 2}, e[] = {2, 4, 4}, f[] = {-1, -2, -2};
  EXPECT_THAT(Cosine(d, e, 3), DoubleNear(1.0, kTol));
  EXPECT_THAT(Cosine(d, f, 3), DoubleNear(-1.0, kTol));
}

TEST(CosineTest, ZeroVectorIsZeroNotNan) {
  const float z[] = {0, 0, 0}, d[] = {1, 2, 2};
  EXPECT_EQ(Cosine(z, d, 3), 0.0);
  EXPECT_EQ(Cosine(z, z, 3), 0.0);
}

}  // namespace
}  // namespace maskserve::bench
