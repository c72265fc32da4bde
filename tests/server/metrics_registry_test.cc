#include "server/metrics/registry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <vector>

#include "server/metrics/exposition.h"

namespace maskserve::server::metrics {
namespace {

const FamilySnapshot* Find(const std::vector<FamilySnapshot>& fs, const std::string& name) {
  for (const auto& f : fs) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(MetricsRegistryTest, HistogramBoundaryValuesLandInTheirBucket) {
  MetricsRegistry reg;
  auto fam = reg.AddHistogram("h_seconds", "help", {}, {1, 2, 5});
  ASSERT_TRUE(fam.ok()) << fam.status();
  Histogram* h = (*fam)->WithLabels({});
  // le semantics: a value equal to a bound counts in that bound's bucket.
  for (double v : {0.5, 1.0, 1.5, 2.0, 5.0, 6.0}) h->Observe(v);
  HistogramData d = h->Snapshot();
  EXPECT_EQ(d.cumulative, (std::vector<uint64_t>{2, 4, 5, 6}));
  EXPECT_DOUBLE_EQ(d.sum, 16.0);
}

TEST(MetricsRegistryTest, HistogramNegativeAndNaNObservations) {
  MetricsRegistry reg;
  Histogram* h = (*reg.AddHistogram("h2_seconds", "help", {}, {0, 1}))->WithLabels({});
  h->Observe(-3);   // below the first bound: first bucket
  h->Observe(0);    // equal to bound 0
  h->Observe(NAN);  // compares false everywhere: +Inf only
  HistogramData d = h->Snapshot();
  EXPECT_EQ(d.cumulative, (std::vector<uint64_t>{2, 2, 3}));
  EXPECT_TRUE(std::isnan(d.sum));
}

TEST(MetricsRegistryTest, CumulativeCountsRender) {
  MetricsRegistry reg;
  Histogram* h = (*reg.AddHistogram("lat_seconds", "Latency.", {"m"}, {0.1, 1}))->WithLabels({"a"});
  h->Observe(0.05);
  h->Observe(0.1);
  h->Observe(3);
  const std::string text = RenderText(reg);
  EXPECT_NE(text.find("lat_seconds_bucket{m=\"a\",le=\"0.1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{m=\"a\",le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{m=\"a\",le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count{m=\"a\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_sum{m=\"a\"} 3.15\n"), std::string::npos) << text;
}

TEST(MetricsRegistryTest, LabelValuesAreEscaped) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeLabelValue("plain ünïcode"), "plain ünïcode");
  EXPECT_EQ(EscapeHelp("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");
  MetricsRegistry reg;
  (*reg.AddCounter("c_total", "h", {"path"}))->WithLabels({"C:\\dir\n\"x\""})->Inc();
  EXPECT_NE(RenderText(reg).find("c_total{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n"), std::string::npos)
      << RenderText(reg);
}

TEST(MetricsRegistryTest, ConcurrentUpdatesGiveExactTotals) {
  MetricsRegistry reg;
  CounterFamily* cf = *reg.AddCounter("ops_total", "h", {"kind"});
  GaugeFamily* gf = *reg.AddGauge("level", "h", {"kind"});
  HistogramFamily* hf = *reg.AddHistogram("obs_seconds", "h", {"kind"}, {0.5, 1});
  constexpr int kThreads = 8;
  constexpr int kIters = 20000;
  std::vector<Counter*> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Every thread resolves the child itself: all must get the same one.
      Counter* c = cf->WithLabels({"x"});
      Gauge* g = gf->WithLabels({"x"});
      Histogram* h = hf->WithLabels({"x"});
      seen[t] = c;
      for (int i = 0; i < kIters; ++i) {
        c->Inc();
        c->Inc(0.25);
        g->Inc(2);
        g->Dec();
        h->Observe((i % 2) ? 0.5 : 0.75);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (Counter* c : seen) EXPECT_EQ(c, seen[0]);
  const double n = static_cast<double>(kThreads) * kIters;
  EXPECT_EQ(cf->WithLabels({"x"})->Value(), n * 1.25);
  EXPECT_EQ(gf->WithLabels({"x"})->Value(), n);
  HistogramData d = hf->WithLabels({"x"})->Snapshot();
  EXPECT_EQ(d.cumulative, (std::vector<uint64_t>{kThreads * kIters / 2, kThreads * kIters,
                                                 kThreads * kIters}));
  EXPECT_EQ(d.sum, n / 2 * 0.5 + n / 2 * 0.75);
}

TEST(MetricsRegistryTest, DuplicateRegistration) {
  MetricsRegistry reg;
  auto a = reg.AddCounter("dup_total", "first", {"x"});
  auto b = reg.AddCounter("dup_total", "second help is ignored", {"x"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ((*b)->help(), "first");
  EXPECT_EQ(reg.AddGauge("dup_total", "h", {"x"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.AddCounter("dup_total", "h", {"y"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.AddCounter("dup_total", "h", {}).status().code(),
            absl::StatusCode::kAlreadyExists);

  auto h1 = reg.AddHistogram("dur_seconds", "h", {}, {1, 2});
  auto h2 = reg.AddHistogram("dur_seconds", "h", {}, {1, 2, INFINITY});  // +Inf is implied
  ASSERT_TRUE(h1.ok() && h2.ok());
  EXPECT_EQ(*h1, *h2);
  EXPECT_EQ(reg.AddHistogram("dur_seconds", "h", {}, {1, 3}).status().code(),
            absl::StatusCode::kAlreadyExists);
  // Series names a histogram produces are taken, in both orders.
  EXPECT_EQ(reg.AddCounter("dur_seconds_count", "h").status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(reg.AddGauge("other_sum", "h").ok());
  EXPECT_EQ(reg.AddHistogram("other", "h").status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(MetricsRegistryTest, InvalidNamesRejected) {
  MetricsRegistry reg;
  for (const char* bad : {"", "1abc", "a-b", "a b", "é", "a.b"}) {
    EXPECT_FALSE(IsValidMetricName(bad)) << bad;
    EXPECT_EQ(reg.AddGauge(bad, "h").status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  for (const char* good : {"a", "_a", "a:b", "ns:sub_sys_1", "A9"}) {
    EXPECT_TRUE(IsValidMetricName(good)) << good;
  }
  for (const char* bad : {"", "__reserved", "1a", "a:b", "a-b"}) {
    EXPECT_FALSE(IsValidLabelName(bad)) << bad;
    EXPECT_EQ(reg.AddGauge("g", "h", {bad}).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_TRUE(IsValidLabelName("_x1"));
  EXPECT_EQ(reg.AddGauge("g", "h", {"a", "a"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.AddHistogram("hh", "h", {"le"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(reg.AddGauge("g", "h", {"le"}).ok());  // only histograms reserve le
}

TEST(MetricsRegistryTest, BucketHelpersAndValidation) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0, 0.5, 3), (std::vector<double>{0, 0.5, 1}));
  EXPECT_TRUE(ExponentialBuckets(0, 2, 3).empty());
  EXPECT_TRUE(ExponentialBuckets(1, 1, 3).empty());
  EXPECT_TRUE(LinearBuckets(0, -1, 3).empty());
  std::vector<double> def = DefaultLatencyBuckets();
  EXPECT_EQ(def.front(), 0.0005);
  EXPECT_EQ(def.back(), 30.0);
  EXPECT_TRUE(std::is_sorted(def.begin(), def.end()));

  MetricsRegistry reg;
  EXPECT_FALSE(reg.AddHistogram("a", "h", {}, {}).ok());
  EXPECT_FALSE(reg.AddHistogram("b", "h", {}, {1, 1}).ok());
  EXPECT_FALSE(reg.AddHistogram("c", "h", {}, {2, 1}).ok());
  EXPECT_FALSE(reg.AddHistogram("d", "h", {}, {NAN}).ok());
  EXPECT_FALSE(reg.AddHistogram("e", "h", {}, ExponentialBuckets(1, 0.5, 3)).ok());
  EXPECT_TRUE(reg.AddHistogram("f", "h", {}, {-1, 0, 1}).ok());
}

TEST(MetricsRegistryTest, LabelCountMismatch) {
  MetricsRegistry reg;
  CounterFamily* f = *reg.AddCounter("x_total", "h", {"a", "b"});
  EXPECT_EQ(f->TryWithLabels({"1"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(f->TryWithLabels({"1", "2"}).ok());
  EXPECT_DEATH(f->WithLabels({"1", "2", "3"}), "x_total");
}

TEST(MetricsRegistryTest, CounterIgnoresNegativeIncrements) {
  MetricsRegistry reg;
  Counter* c = (*reg.AddCounter("n_total", "h"))->WithLabels({});
  c->Inc(2);
  c->Inc(-1);
  c->Inc(NAN);
  EXPECT_EQ(c->Value(), 2);
}

TEST(MetricsRegistryTest, UnlabeledFamiliesExportZeroLabeledEmptyOmitted) {
  MetricsRegistry reg;
  ASSERT_TRUE(reg.AddCounter("plain_total", "h").ok());
  ASSERT_TRUE(reg.AddGauge("labeled", "h", {"k"}).ok());
  std::vector<FamilySnapshot> fs = reg.Collect();
  ASSERT_NE(Find(fs, "plain_total"), nullptr);
  EXPECT_EQ(Find(fs, "plain_total")->points.at(0).value, 0);
  EXPECT_EQ(Find(fs, "labeled"), nullptr);
}

TEST(MetricsRegistryTest, CollectorsRunAtScrapeTimeAndCanBeRemoved) {
  MetricsRegistry reg;
  ASSERT_TRUE(reg.AddGauge("taken", "h").ok());
  int runs = 0;
  CollectorId id = reg.AddCollector([&runs](std::vector<FamilySnapshot>* out) {
    ++runs;
    out->push_back(SingleValueFamily(MetricType::kGauge, "queue_depth", "Depth.", runs));
    // Clashes with a registered family: dropped.
    out->push_back(SingleValueFamily(MetricType::kGauge, "taken", "dup", 42));
    // Invalid name: dropped.
    out->push_back(SingleValueFamily(MetricType::kGauge, "bad-name", "x", 1));
    // Label count mismatch: dropped.
    FamilySnapshot f = SingleValueFamily(MetricType::kGauge, "wrong_labels", "x", 1);
    f.label_names = {"a"};
    out->push_back(f);
    // Points come back sorted by label values.
    FamilySnapshot g;
    g.name = "per_model";
    g.help = "x";
    g.type = MetricType::kGauge;
    g.label_names = {"model"};
    g.points.push_back(MetricPoint{{"zeta"}, 1, {}});
    g.points.push_back(MetricPoint{{"alpha"}, 2, {}});
    out->push_back(g);
  });
  std::vector<FamilySnapshot> fs = reg.Collect();
  ASSERT_NE(Find(fs, "queue_depth"), nullptr);
  EXPECT_EQ(Find(fs, "queue_depth")->points[0].value, 1);
  EXPECT_EQ(Find(fs, "taken")->points[0].value, 0);
  EXPECT_EQ(Find(fs, "bad-name"), nullptr);
  EXPECT_EQ(Find(fs, "wrong_labels"), nullptr);
  ASSERT_NE(Find(fs, "per_model"), nullptr);
  EXPECT_EQ(Find(fs, "per_model")->points[0].label_values[0], "alpha");
  for (size_t i = 1; i < fs.size(); ++i) EXPECT_LT(fs[i - 1].name, fs[i].name);

  EXPECT_EQ(Find(reg.Collect(), "queue_depth")->points[0].value, 2);
  reg.RemoveCollector(id);
  EXPECT_EQ(Find(reg.Collect(), "queue_depth"), nullptr);
  EXPECT_EQ(runs, 2);
}

TEST(MetricsRegistryTest, CollectorMayUpdateRegisteredGauges) {
  MetricsRegistry reg;
  Gauge* g = (*reg.AddGauge("on_demand", "h"))->WithLabels({});
  int depth = 7;
  reg.AddCollector([&](std::vector<FamilySnapshot>*) { g->Set(depth); });
  EXPECT_EQ(Find(reg.Collect(), "on_demand")->points[0].value, 7);
}

}  // namespace
}  // namespace maskserve::server::metrics
