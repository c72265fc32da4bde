#include "engine/logits_processors.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> Log(std::vector<float> p) {
  for (float& x : p) x = std::log(x);
  return p;
}

TEST(LogitsProcessorsTest, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  std::vector<float> s = {2.0f, -1.0f, 0.0f, 3.0f, -4.0f, 5.0f};
  // Id 1 appears twice but is penalised once; ids outside the vocab are ignored.
  ApplyRepetitionPenalty({0, 1, 2, 1, 4, 99, -3}, 2.0f, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(1.0f, -2.0f, 0.0f, 3.0f, -8.0f, 5.0f));
}

TEST(LogitsProcessorsTest, RepetitionPenaltyBelowOneBoosts) {
  std::vector<float> s = {2.0f, -1.0f};
  ApplyRepetitionPenalty({0, 1}, 0.5f, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(4.0f, -0.5f));
}

TEST(LogitsProcessorsTest, NoRepeatNgramBannedIds) {
  // n = 2: ids that followed the last id (1) before: 2 (twice).
  EXPECT_THAT(NoRepeatNgramBannedIds({1, 2, 3, 1, 2, 1}, 2), ElementsAre(2));
  // n = 3 after (2, 1): no earlier trigram starts with (2, 1).
  EXPECT_THAT(NoRepeatNgramBannedIds({1, 2, 3, 1, 2, 1}, 3), ElementsAre());
  // (5, 6) was followed by 7 and by 8.
  EXPECT_THAT(NoRepeatNgramBannedIds({5, 6, 7, 5, 6, 8, 5, 6}, 3), ElementsAre(7, 8));
  EXPECT_THAT(NoRepeatNgramBannedIds({5, 6, 7, 5, 6, 8, 5, 6}, 2), ElementsAre(7, 8));
  // n = 1 bans every id seen.
  EXPECT_THAT(NoRepeatNgramBannedIds({4, 2, 4}, 1), ElementsAre(2, 4));
  // HF: nothing while cur_len + 1 < n.
  EXPECT_THAT(NoRepeatNgramBannedIds({7, 7}, 4), ElementsAre());
  // A self-overlapping history: (7, 7) followed by 7.
  EXPECT_THAT(NoRepeatNgramBannedIds({7, 7, 7}, 3), ElementsAre(7));
  EXPECT_THAT(NoRepeatNgramBannedIds({}, 2), ElementsAre());
}

TEST(LogitsProcessorsTest, NoRepeatNgramSetsMinusInfinity) {
  std::vector<float> s = {0.5f, -1.0f, 2.0f, 3.0f};
  ApplyNoRepeatNgram({0, 2, 1, 0}, 2, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(0.5f, -1.0f, -kInf, 3.0f));
}

TEST(LogitsProcessorsTest, MinNewTokensBansStopIdsUntilReached) {
  std::vector<float> s = {1.0f, 2.0f, 3.0f};
  ApplyMinNewTokens(1, 2, {2, 0}, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(-kInf, 2.0f, -kInf));
  std::vector<float> t = {1.0f, 2.0f, 3.0f};
  ApplyMinNewTokens(2, 2, {2, 0}, absl::MakeSpan(t));
  EXPECT_THAT(t, ElementsAre(1.0f, 2.0f, 3.0f));
}

TEST(LogitsProcessorsTest, Temperature) {
  std::vector<float> s = {2.0f, -4.0f};
  ApplyTemperature(0.5f, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(4.0f, -8.0f));
}

TEST(LogitsProcessorsTest, TopKKeepsTiesWithTheKth) {
  std::vector<float> s = {1.0f, 3.0f, 3.0f, 2.0f, 0.0f};
  ApplyTopK(1, 1, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(-kInf, 3.0f, 3.0f, -kInf, -kInf));
  s = {1.0f, 3.0f, 3.0f, 2.0f, 0.0f};
  ApplyTopK(3, 1, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(-kInf, 3.0f, 3.0f, 2.0f, -kInf));
  s = {1.0f, 4.0f, 3.0f, 2.0f, 0.0f};
  ApplyTopK(1, 2, absl::MakeSpan(s));  // min_tokens_to_keep raises k
  EXPECT_THAT(s, ElementsAre(-kInf, 4.0f, 3.0f, -kInf, -kInf));
  s = {1.0f, 4.0f};
  ApplyTopK(10, 1, absl::MakeSpan(s));  // k > vocab keeps all
  EXPECT_THAT(s, ElementsAre(1.0f, 4.0f));
}

TEST(LogitsProcessorsTest, TopPNucleus) {
  // Probabilities 0.05, 0.15, 0.3, 0.5; ascending cumulative 0.05, 0.2, 0.5, 1.0.
  const std::vector<float> base = Log({0.3f, 0.05f, 0.5f, 0.15f});
  std::vector<float> s = base;
  ApplyTopP(0.7f, 1, absl::MakeSpan(s));  // drop cumulative <= 0.3: 0.05 and 0.15
  EXPECT_EQ(s[0], base[0]);
  EXPECT_EQ(s[1], -kInf);
  EXPECT_EQ(s[2], base[2]);
  EXPECT_EQ(s[3], -kInf);
  s = base;
  ApplyTopP(0.45f, 1, absl::MakeSpan(s));  // drop cumulative <= 0.55: only 0.5 survives
  EXPECT_THAT(s, ElementsAre(-kInf, -kInf, base[2], -kInf));
  s = base;
  ApplyTopP(0.45f, 3, absl::MakeSpan(s));  // but min_tokens_to_keep = 3 keeps the best three
  EXPECT_THAT(s, ElementsAre(base[0], -kInf, base[2], base[3]));
}

TEST(LogitsProcessorsTest, TopPAlwaysKeepsAtLeastOneToken) {
  // With a tiny top_p every cumulative mass is <= 1 - top_p (even the last,
  // 1.0, after float rounding); HF still keeps the best token.
  std::vector<float> s = Log({0.25f, 0.25f, 0.25f, 0.25f + 1e-7f});
  ApplyTopP(1e-9f, 1, absl::MakeSpan(s));
  int kept = 0;
  for (float x : s) kept += x != -kInf;
  EXPECT_EQ(kept, 1);
  EXPECT_NE(s[3], -kInf);
}

TEST(LogitsProcessorsTest, ProcessorsRunInHfOrderAndOnlyWhenEnabled) {
  LogitsProcessorOptions o;
  o.repetition_penalty = 2.0f;
  o.no_repeat_ngram_size = 2;
  o.min_new_tokens = 3;
  o.stop_token_ids = {4};
  // History 1 2 1: repetition penalty on 1 and 2, then 2 banned (follows 1), 4 banned (min_new_tokens).
  std::vector<float> s = {1.0f, 4.0f, -3.0f, 6.0f, 9.0f};
  ApplyLogitsProcessors(o, {1, 2, 1}, /*num_generated=*/1, absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(1.0f, 2.0f, -kInf, 6.0f, -kInf));
  LogitsProcessorOptions off;
  std::vector<float> t = {1.0f, 4.0f, -3.0f};
  ApplyLogitsProcessors(off, {1, 2, 1}, 0, absl::MakeSpan(t));
  ApplyLogitsWarpers(off, absl::MakeSpan(t));
  EXPECT_THAT(t, ElementsAre(1.0f, 4.0f, -3.0f));
}

TEST(LogitsProcessorsTest, WarpersRunTemperatureThenTopKThenTopP) {
  LogitsProcessorOptions o;
  o.temperature = 0.5f;
  o.top_k = 3;
  o.top_p = 0.9f;
  std::vector<float> s = {0.0f, 1.0f, 2.0f, 3.0f};
  ApplyLogitsWarpers(o, absl::MakeSpan(s));
  // /0.5 -> 0 2 4 6; top-3 drops id 0; softmax(2, 4, 6) = .016 .117 .867:
  // cumulative .016 <= .1 is dropped too.
  EXPECT_THAT(s, ElementsAre(-kInf, -kInf, 4.0f, 6.0f));
}

TEST(LogitsProcessorsTest, ValidateNamesTheField) {
  LogitsProcessorOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.top_p = 0.0f;
  EXPECT_THAT(o.Validate().message(), HasSubstr("top_p"));
  o = {};
  o.temperature = 0.0f;
  EXPECT_THAT(o.Validate().message(), HasSubstr("temperature"));
  o = {};
  o.repetition_penalty = -1.0f;
  EXPECT_THAT(o.Validate().message(), HasSubstr("repetition_penalty"));
  o = {};
  o.top_k = -1;
  EXPECT_THAT(o.Validate().message(), HasSubstr("top_k"));
}

TEST(LogitsProcessorsTest, LogSoftmaxAndSoftmax) {
  std::vector<float> s = {1.0f, 2.0f, 3.0f, -kInf};
  LogSoftmaxInPlace(absl::MakeSpan(s));
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));  // 3.40760596
  EXPECT_NEAR(s[0], 1.0 - lse, 1e-6);
  EXPECT_NEAR(s[1], 2.0 - lse, 1e-6);
  EXPECT_NEAR(s[2], 3.0 - lse, 1e-6);
  EXPECT_EQ(s[3], -kInf);
  std::vector<float> big = {1000.0f, 1000.0f};  // no overflow
  LogSoftmaxInPlace(absl::MakeSpan(big));
  EXPECT_NEAR(big[0], -std::log(2.0), 1e-6);
  std::vector<float> p(3);
  Softmax({0.0f, std::log(3.0f), -kInf}, absl::MakeSpan(p));
  EXPECT_NEAR(p[0], 0.25, 1e-7);
  EXPECT_NEAR(p[1], 0.75, 1e-7);
  EXPECT_EQ(p[2], 0.0f);
}

}  // namespace
}  // namespace maskserve::engine
