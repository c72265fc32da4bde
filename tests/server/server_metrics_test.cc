#include "server/metrics/server_metrics.h"

#include <gtest/gtest.h>

#include "server/metrics/exposition.h"

namespace maskserve::server::metrics {
namespace {

TEST(ServerMetricsTest, RegistersStandardFamiliesAndBuildInfo) {
  MetricsRegistry reg;
  auto m = ServerMetrics::Create(&reg, "9.9.9");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->build_info->WithLabels({"9.9.9"})->Value(), 1);
  EXPECT_EQ((*m)->requests_total->label_names(),
            (std::vector<std::string>{"service", "method", "code"}));
  EXPECT_EQ((*m)->request_duration_seconds->bounds(), DefaultLatencyBuckets());
  EXPECT_NE(RenderText(reg).find("# HELP maskserve_build_info "), std::string::npos);
  // A second ServerMetrics on the same registry shares the families.
  auto again = ServerMetrics::Create(&reg, "9.9.9");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->requests_total, (*m)->requests_total);
}

TEST(ServerMetricsTest, ConflictingEarlierRegistrationFails) {
  MetricsRegistry reg;
  ASSERT_TRUE(reg.AddGauge("maskserve_requests_total", "wrong type").ok());
  EXPECT_FALSE(ServerMetrics::Create(&reg).ok());
}

TEST(ServerMetricsTest, MethodMetricsRecordRequests) {
  MetricsRegistry reg;
  auto m = *ServerMetrics::Create(&reg);
  MethodMetrics* mm = m->ForMethod("svc", "Embed");
  EXPECT_EQ(m->ForMethod("svc", "Embed"), mm);
  mm->Started();
  mm->Started();
  EXPECT_EQ(m->inflight_requests->WithLabels({"svc", "Embed"})->Value(), 2);
  mm->Finished(0, 0.01);
  mm->Finished(3, 0.02);
  {
    ScopedRequest r(mm);
    EXPECT_EQ(m->inflight_requests->WithLabels({"svc", "Embed"})->Value(), 1);
    r.set_code(14);
  }
  mm->Started();
  mm->Finished(99, 0.5);
  EXPECT_EQ(m->inflight_requests->WithLabels({"svc", "Embed"})->Value(), 0);
  EXPECT_EQ(m->requests_total->WithLabels({"svc", "Embed", "OK"})->Value(), 1);
  EXPECT_EQ(m->requests_total->WithLabels({"svc", "Embed", "InvalidArgument"})->Value(), 1);
  EXPECT_EQ(m->requests_total->WithLabels({"svc", "Embed", "Unavailable"})->Value(), 1);
  EXPECT_EQ(m->requests_total->WithLabels({"svc", "Embed", "Code(99)"})->Value(), 1);
  HistogramData d = m->request_duration_seconds->WithLabels({"svc", "Embed"})->Snapshot();
  EXPECT_EQ(d.cumulative.back(), 4u);
}

TEST(ServerMetricsTest, GrpcCodeLabels) {
  EXPECT_EQ(GrpcCodeLabel(0), "OK");
  EXPECT_EQ(GrpcCodeLabel(1), "Canceled");
  EXPECT_EQ(GrpcCodeLabel(4), "DeadlineExceeded");
  EXPECT_EQ(GrpcCodeLabel(8), "ResourceExhausted");
  EXPECT_EQ(GrpcCodeLabel(16), "Unauthenticated");
  EXPECT_EQ(GrpcCodeLabel(17), "Code(17)");
  EXPECT_EQ(GrpcCodeLabel(-1), "Code(-1)");
}

}  // namespace
}  // namespace maskserve::server::metrics
