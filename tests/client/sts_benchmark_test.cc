// STS Benchmark reader (bench/sts_benchmark.h): fields 4-6 from the start,
// quotes kept verbatim, extra attribution columns ignored; and the real
// ../shared/data/stsbenchmark/sts-test.csv (1,379 pairs, per DATA.md).
#include "bench/sts_benchmark.h"

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/util/test_env.h"

namespace maskserve::bench {
namespace {

TEST(StsBenchmarkTest, ParsesSevenFieldLine) {
  auto pair = ParseStsBenchmarkLine(
      "main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is styling her hair.\t"
      "A girl is brushing her hair.");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_DOUBLE_EQ(pair->score, 2.5);
  EXPECT_EQ(pair->sentence1, "A girl is styling her hair.");
  EXPECT_EQ(pair->sentence2, "A girl is brushing her hair.");
}

TEST(StsBenchmarkTest, ExtraColumnsAndQuotesAndCrlf) {
  // Reading from the end (l[-3], l[-2], l[-1]) would pick the attribution
  // columns here; a quoting CSV parser would swallow the tabs after '"'.
  auto pair = ParseStsBenchmarkLine(
      "main-forums\tanswer-answer\t2016\t0008\t3\tHe said \"no.\t"
      "\"Yes\" she said \tsource one\tsource two\r");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_DOUBLE_EQ(pair->score, 3.0);
  EXPECT_EQ(pair->sentence1, "He said \"no.");
  EXPECT_EQ(pair->sentence2, "\"Yes\" she said ");
}

TEST(StsBenchmarkTest, RejectsMalformedLines) {
  EXPECT_FALSE(ParseStsBenchmarkLine("a\tb\tc\td\t1.0\tonly one sentence").ok());
  EXPECT_FALSE(ParseStsBenchmarkLine("a\tb\tc\td\tfive\ts1\ts2").ok());
}

TEST(StsBenchmarkTest, ReadFileSkipsBlankLinesAndNamesBadLine) {
  const std::string dir = maskserve::testing::MakeTempDir("sts_benchmark_test");
  const std::string path = dir + "/sts.csv";
  {
    std::ofstream out(path);
    out << "g\tf\ty\t1\t0.5\ta\tb\n\ng\tf\ty\t2\t4\tc\td\textra\textra\n";
  }
  auto pairs = ReadStsBenchmark(path);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 2u);
  EXPECT_EQ((*pairs)[1].sentence1, "c");
  EXPECT_DOUBLE_EQ((*pairs)[1].score, 4.0);
  {
    std::ofstream out(path, std::ios::app);
    out << "broken line\n";
  }
  auto bad = ReadStsBenchmark(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find(":4:"), std::string::npos)
      << bad.status();
  EXPECT_EQ(ReadStsBenchmark(dir + "/missing.csv").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(StsBenchmarkTest, RealTestSplit) {
  MASKSERVE_REQUIRE_SHARED(path, "data/stsbenchmark/sts-test.csv");
  auto pairs = ReadStsBenchmark(path);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 1379u);  // DATA.md: test 1,379 pairs
  EXPECT_EQ(pairs->front().sentence1, "A girl is styling her hair.");
  EXPECT_DOUBLE_EQ(pairs->front().score, 2.5);
  // Last row has the 2 attribution columns; its sentences are fields 5, 6.
  EXPECT_EQ(pairs->back().sentence2,
            "North Korea Delegation Meets With South Korean Officials");
  EXPECT_DOUBLE_EQ(pairs->back().score, 0.0);
  for (const auto& p : *pairs) {
    ASSERT_GE(p.score, 0.0);
    ASSERT_LE(p.score, 5.0);
  }
}

}  // namespace
}  // namespace maskserve::bench
