#include "engine/sampling.h"

#include <cmath>
#include <limits>
#include <vector>

#include "engine/logits_processors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(SamplingTest, ArgmaxTiesGoToLowestId) {
  EXPECT_EQ(Argmax({1.0f, 3.0f, 2.0f, 3.0f}), 1);
  EXPECT_EQ(Argmax({-kInf, -kInf}), 0);
  EXPECT_EQ(Argmax({std::nanf(""), 1.0f, 0.5f}), 1);
  EXPECT_EQ(Argmax({}), -1);
}

TEST(SamplingTest, TokenLogProbIsLogSoftmax) {
  const std::vector<float> s = {0.5f, -1.0f, 2.0f};
  std::vector<float> ls = s;
  LogSoftmaxInPlace(absl::MakeSpan(ls));
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(TokenLogProb(s, i), ls[i], 1e-6);
  EXPECT_EQ(TokenLogProb(s, 3), -kInf);
  const auto top = TopLogProbs(s, 2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].first, 2);
  EXPECT_EQ(top[1].first, 0);
  EXPECT_NEAR(top[1].second, ls[0], 1e-6);
}

TEST(SamplingTest, SameSeedSameDraws) {
  const std::vector<float> s = {0.1f, 0.2f, 0.3f, 0.0f, -0.5f};
  TokenSampler a(1234), b(1234), c(99);
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 200; ++i) {
    da.push_back(a.Sample(s));
    db.push_back(b.Sample(s));
    dc.push_back(c.Sample(s));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(SamplingTest, DrawsDoNotDependOnOtherSequences) {
  // One sampler per sequence: interleaving another sequence's draws (another
  // request in the batch) leaves this sequence's draws unchanged.
  const std::vector<float> s = {0.0f, 1.0f, 0.5f};
  const std::vector<float> other = {3.0f, 0.0f};
  TokenSampler alone(7);
  std::vector<int32_t> want;
  for (int i = 0; i < 100; ++i) want.push_back(alone.Sample(s));
  TokenSampler mine(7), theirs(8);
  std::vector<int32_t> got;
  for (int i = 0; i < 100; ++i) {
    if (i % 3 == 0) theirs.Sample(other);
    got.push_back(mine.Sample(s));
  }
  EXPECT_EQ(got, want);
}

TEST(SamplingTest, FrequenciesMatchSoftmax) {
  const std::vector<float> s = {0.0f, 1.0f, 2.0f, -1.0f, 0.5f, -kInf};
  std::vector<float> p(s.size());
  Softmax(s, absl::MakeSpan(p));
  constexpr int kDraws = 20000;
  std::vector<int> counts(s.size(), 0);
  TokenSampler sampler(42);
  for (int i = 0; i < kDraws; ++i) ++counts[sampler.Sample(s)];
  EXPECT_EQ(counts[5], 0);  // -inf is never drawn
  for (size_t i = 0; i < s.size(); ++i) {
    // 5 standard deviations of a binomial frequency.
    const double sigma = std::sqrt(p[i] * (1.0 - p[i]) / kDraws);
    EXPECT_NEAR(static_cast<double>(counts[i]) / kDraws, p[i], 5 * sigma + 1e-9) << "id " << i;
  }
}

TEST(SamplingTest, SamplingAfterTopKNeverLeavesTheTopK) {
  LogitsProcessorOptions o;
  o.top_k = 2;
  std::vector<float> s = {0.0f, 1.0f, 2.0f, 1.5f};
  ApplyLogitsWarpers(o, absl::MakeSpan(s));
  TokenSampler sampler(3);
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 2000; ++i) ++counts[sampler.Sample(s)];
  EXPECT_EQ(counts[0] + counts[1], 0);
  EXPECT_GT(counts[2], counts[3]);
  EXPECT_GT(counts[3], 0);
}

TEST(SamplingTest, LowTemperatureApproachesArgmax) {
  const std::vector<float> logits = {0.3f, 1.0f, 0.9f, -2.0f};
  double previous = 0.0;
  for (float t : {1.0f, 0.3f, 0.05f, 1e-3f}) {
    std::vector<float> s = logits;
    ApplyTemperature(t, absl::MakeSpan(s));
    TokenSampler sampler(11);
    int hits = 0;
    constexpr int kDraws = 4000;
    for (int i = 0; i < kDraws; ++i) hits += sampler.Sample(s) == Argmax(logits);
    const double freq = static_cast<double>(hits) / kDraws;
    EXPECT_GT(freq, previous) << "temperature " << t;
    previous = freq;
  }
  EXPECT_EQ(previous, 1.0);  // at 1e-3 the runner-up has probability e^-100
}

TEST(SamplingTest, DegenerateRows) {
  TokenSampler sampler(1);
  EXPECT_EQ(sampler.Sample({-kInf, 0.0f, -kInf}), 1);
  EXPECT_EQ(sampler.Sample({-kInf, -kInf}), 0);
  EXPECT_EQ(sampler.Sample({}), -1);
}

}  // namespace
}  // namespace maskserve::engine
