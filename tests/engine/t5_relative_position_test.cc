// T5 relative position buckets against HF transformers 4.31's own table
// (../shared/golden/t5-mini/outputs.json relative_position_buckets, key -
// query offsets -600..600, encoder bidirectional and decoder
// unidirectional), and the bias table's layout.
#include "engine/t5_relative_position.h"

#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

TEST(T5RelativePositionTest, BucketsEqualHfTable) {
  MASKSERVE_REQUIRE_SHARED(path, "golden/t5-mini/outputs.json");
  const nlohmann::json j = nlohmann::json::parse(maskserve::testing::ReadFileOrDie(path));
  const nlohmann::json& t = j["relative_position_buckets"];
  const std::vector<int> rel = t["relative_position"].get<std::vector<int>>();
  const std::vector<int> enc = t["encoder_bidirectional"].get<std::vector<int>>();
  const std::vector<int> dec = t["decoder_unidirectional"].get<std::vector<int>>();
  ASSERT_EQ(rel.size(), 1201u);
  for (size_t i = 0; i < rel.size(); ++i) {
    EXPECT_EQ(T5RelativePositionBucket(rel[i], true, 32, 128), enc[i]) << rel[i];
    EXPECT_EQ(T5RelativePositionBucket(rel[i], false, 32, 128), dec[i]) << rel[i];
  }
}

TEST(T5RelativePositionTest, HandWorkedBuckets) {
  // Bidirectional, 32 buckets: 16 per side, exact below 8; keys after the
  // query are +16.
  EXPECT_EQ(T5RelativePositionBucket(0, true, 32, 128), 0);
  EXPECT_EQ(T5RelativePositionBucket(-7, true, 32, 128), 7);
  EXPECT_EQ(T5RelativePositionBucket(7, true, 32, 128), 23);
  EXPECT_EQ(T5RelativePositionBucket(-1000, true, 32, 128), 15);
  EXPECT_EQ(T5RelativePositionBucket(1000, true, 32, 128), 31);
  // Unidirectional: keys after the query all fall in bucket 0.
  EXPECT_EQ(T5RelativePositionBucket(5, false, 32, 128), 0);
  EXPECT_EQ(T5RelativePositionBucket(-15, false, 32, 128), 15);
  EXPECT_EQ(T5RelativePositionBucket(-100000, false, 32, 128), 31);
}

TEST(T5RelativePositionTest, TableLayout) {
  // 4 buckets x 2 heads: value = 10 * bucket + head.
  std::vector<float> emb(8);
  for (int b = 0; b < 4; ++b) {
    for (int h = 0; h < 2; ++h) emb[b * 2 + h] = static_cast<float>(10 * b + h);
  }
  absl::StatusOr<T5RelativeBias> t = T5RelativeBias::Create(emb, 4, 2, 8, false, 20);
  ASSERT_TRUE(t.ok()) << t.status();
  const RelativePositionBias v = t->view();
  ASSERT_NE(v.table, nullptr);
  EXPECT_EQ(v.head_stride, 39);
  EXPECT_EQ(v.center, 19);
  for (int q = 0; q < 20; ++q) {
    for (int k = 0; k < 20; ++k) {
      for (int h = 0; h < 2; ++h) {
        const int bucket = T5RelativePositionBucket(k - q, false, 4, 8);
        EXPECT_EQ(t->At(h, q, k), 10 * bucket + h);
        EXPECT_EQ(v.table[h * v.head_stride + v.center + q - k], 10 * bucket + h);
      }
    }
  }
  EXPECT_FALSE(T5RelativeBias::Create(emb, 4, 3, 8, false, 20).ok());
  EXPECT_FALSE(T5RelativeBias::Create(emb, 4, 2, 8, false, 0).ok());
  EXPECT_EQ(T5RelativeBias().view().table, nullptr);
}

}  // namespace
}  // namespace maskserve::engine
