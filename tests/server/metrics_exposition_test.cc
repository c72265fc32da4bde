#include "server/metrics/exposition.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "server/metrics/registry.h"

namespace maskserve::server::metrics {
namespace {

TEST(MetricsExpositionTest, ExactTextForSmallRegistry) {
  MetricsRegistry reg;
  // Registered out of order: output is sorted by family name.
  HistogramFamily* h =
      *reg.AddHistogram("b_latency_seconds", "Latency.", {"method"}, {0.0005, 0.1, 1});
  CounterFamily* c = *reg.AddCounter("a_requests_total", "Requests \\ served.\nSecond line.",
                                     {"service", "code"});
  GaugeFamily* g = *reg.AddGauge("c_temperature", "A gauge.");
  GaugeFamily* special = *reg.AddGauge("d_special", "Non-finite values.", {"kind"});

  // Children are sorted by label values, not by creation order.
  c->WithLabels({"embed", "OK"})->Inc(3);
  c->WithLabels({"ask \"me\"", "Internal"})->Inc();
  h->WithLabels({"Embed"})->Observe(0.0005);
  h->WithLabels({"Embed"})->Observe(0.25);
  g->WithLabels({})->Set(-1.5);
  special->WithLabels({"nan"})->Set(std::numeric_limits<double>::quiet_NaN());
  special->WithLabels({"neg"})->Set(-INFINITY);
  special->WithLabels({"pos"})->Set(INFINITY);
  special->WithLabels({"tiny"})->Set(1e-7);
  special->WithLabels({"third"})->Set(0.1 + 0.2);

  const std::string expected =
      "# HELP a_requests_total Requests \\\\ served.\\nSecond line.\n"
      "# TYPE a_requests_total counter\n"
      "a_requests_total{service=\"ask \\\"me\\\"\",code=\"Internal\"} 1\n"
      "a_requests_total{service=\"embed\",code=\"OK\"} 3\n"
      "# HELP b_latency_seconds Latency.\n"
      "# TYPE b_latency_seconds histogram\n"
      "b_latency_seconds_bucket{method=\"Embed\",le=\"0.0005\"} 1\n"
      "b_latency_seconds_bucket{method=\"Embed\",le=\"0.1\"} 1\n"
      "b_latency_seconds_bucket{method=\"Embed\",le=\"1\"} 2\n"
      "b_latency_seconds_bucket{method=\"Embed\",le=\"+Inf\"} 2\n"
      "b_latency_seconds_sum{method=\"Embed\"} 0.2505\n"
      "b_latency_seconds_count{method=\"Embed\"} 2\n"
      "# HELP c_temperature A gauge.\n"
      "# TYPE c_temperature gauge\n"
      "c_temperature -1.5\n"
      "# HELP d_special Non-finite values.\n"
      "# TYPE d_special gauge\n"
      "d_special{kind=\"nan\"} NaN\n"
      "d_special{kind=\"neg\"} -Inf\n"
      "d_special{kind=\"pos\"} +Inf\n"
      "d_special{kind=\"third\"} 0.30000000000000004\n"
      "d_special{kind=\"tiny\"} 1e-07\n";
  EXPECT_EQ(RenderText(reg), expected);
  // Deterministic: a second scrape with no updates is byte-identical.
  EXPECT_EQ(RenderText(reg), expected);
}

TEST(MetricsExpositionTest, FloatFormattingRoundTrips) {
  EXPECT_EQ(FormatSampleValue(0), "0");
  EXPECT_EQ(FormatSampleValue(123456789), "123456789");
  EXPECT_EQ(FormatSampleValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatSampleValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatSampleValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatBucketBound(0.0005), "0.0005");
  EXPECT_EQ(FormatBucketBound(2.5), "2.5");
  EXPECT_EQ(FormatBucketBound(30), "30");
  EXPECT_EQ(FormatBucketBound(std::numeric_limits<double>::infinity()), "+Inf");
  for (double v : {0.1, 1.0 / 3, 1e300, 2.2250738585072014e-308, -2.718281828459045, 1e21, 4294967296.0}) {
    EXPECT_EQ(std::stod(FormatSampleValue(v)), v) << FormatSampleValue(v);
    EXPECT_EQ(std::stod(FormatBucketBound(v)), v) << FormatBucketBound(v);
  }
}

TEST(MetricsExpositionTest, ContentType) {
  EXPECT_STREQ(kTextExpositionContentType, "text/plain; version=0.0.4; charset=utf-8");
}

TEST(MetricsExpositionTest, EmptyRegistryRendersNothing) {
  MetricsRegistry reg;
  EXPECT_EQ(RenderText(reg), "");
}

}  // namespace
}  // namespace maskserve::server::metrics
