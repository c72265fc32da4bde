#include "server/metrics/http_exporter.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>

#include "server/metrics/exposition.h"
#include "server/metrics/process_metrics.h"
#include "server/metrics/server_metrics.h"
#include "tests/util/test_env.h"

namespace maskserve::server::metrics {
namespace {

TEST(HttpExporterTest, ServesHealthReadinessMetricsAnd404) {
  MetricsRegistry reg;
  (*reg.AddCounter("probe_total", "Probes."))->WithLabels({})->Inc(5);
  std::atomic<bool> ready{false};
  HttpExporterOptions opts;
  opts.bind_address = "127.0.0.1";
  opts.port = 0;
  opts.registry = &reg;
  opts.ready = [&ready] { return ready.load(); };
  auto exporter = HttpExporter::Create(opts);
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  const int port = (*exporter)->port();
  ASSERT_GT(port, 0);

  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(5, 0);

  auto health = cli.Get("/healthz");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok");

  auto not_ready = cli.Get("/readyz");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->body, "not ready");
  ready = true;
  auto is_ready = cli.Get("/readyz");
  ASSERT_TRUE(is_ready);
  EXPECT_EQ(is_ready->status, 200);
  EXPECT_EQ(is_ready->body, "ready");

  auto missing = cli.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  auto metrics = cli.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->get_header_value("Content-Type"), kTextExpositionContentType);
  EXPECT_NE(metrics->body.find("probe_total 5\n"), std::string::npos) << metrics->body;

  (*exporter)->Shutdown();
  (*exporter)->Shutdown();  // idempotent
  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(1, 0);
  EXPECT_FALSE(after.Get("/healthz"));
}

TEST(HttpExporterTest, EmptyReadyCallbackMeansReady) {
  MetricsRegistry reg;
  auto exporter = HttpExporter::Create({"127.0.0.1", 0, &reg, nullptr, "", ""});
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  httplib::Client cli("127.0.0.1", (*exporter)->port());
  auto res = cli.Get("/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(HttpExporterTest, PortInUseIsAClearError) {
  MetricsRegistry reg;
  auto first = HttpExporter::Create({"127.0.0.1", 0, &reg, nullptr, "", ""});
  ASSERT_TRUE(first.ok()) << first.status();
  const int port = (*first)->port();
  auto second = HttpExporter::Create({"127.0.0.1", port, &reg, nullptr, "", ""});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("127.0.0.1:" + std::to_string(port)),
            absl::string_view::npos)
      << second.status();
}

TEST(HttpExporterTest, RejectsMissingRegistry) {
  EXPECT_EQ(HttpExporter::Create({"127.0.0.1", 0, nullptr, nullptr, "", ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HttpExporterTest, ShutdownRightAfterCreateDoesNotHang) {
  MetricsRegistry reg;
  for (int i = 0; i < 20; ++i) {
    auto e = HttpExporter::Create({"127.0.0.1", 0, &reg, nullptr, "", ""});
    ASSERT_TRUE(e.ok()) << e.status();
  }
}

// The scraped text of a realistic registry must pass promtool's parser and
// its linter (naming conventions such as counters ending in _total).
TEST(HttpExporterTest, ScrapePassesPromtoolCheckMetrics) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not found (Debian package 'prometheus'): skipping lint of /metrics";
  }
  MetricsRegistry reg;
  auto sm = ServerMetrics::Create(&reg, "1.2.3");
  ASSERT_TRUE(sm.ok()) << sm.status();
  RegisterProcessCollector(&reg);
  MethodMetrics* embed = (*sm)->ForMethod("maskserve.v1.EmbeddingService", "Embed");
  embed->Started();
  embed->Finished(0, 0.012);
  embed->Started();
  embed->Finished(3, 0.0004);
  { ScopedRequest r((*sm)->ForMethod("maskserve.v1.GenerationService", "Generate")); }
  (*sm)->model_ready->WithLabels({"bert \"base\"\n"})->Set(1);
  (*sm)->model_load_seconds->WithLabels({"bert \"base\"\n"})->Set(2.5);

  auto exporter = HttpExporter::Create({"127.0.0.1", 0, &reg, nullptr, "", ""});
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  httplib::Client cli("127.0.0.1", (*exporter)->port());
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  for (const char* name :
       {"maskserve_requests_total", "maskserve_request_duration_seconds_bucket",
        "maskserve_build_info{version=\"1.2.3\"} 1", "maskserve_model_ready",
        "maskserve_model_load_seconds", "maskserve_inflight_requests",
        "process_resident_memory_bytes", "process_cpu_seconds_total"}) {
    EXPECT_NE(res->body.find(name), std::string::npos) << name << "\n" << res->body;
  }

  const std::string dir = maskserve::testing::MakeTempDir("promtool");
  const std::string in = dir + "/metrics.txt";
  const std::string out = dir + "/promtool.out";
  std::ofstream(in) << res->body;
  const int rc = std::system(("promtool check metrics < " + in + " > " + out + " 2>&1").c_str());
  const std::string report = maskserve::testing::ReadFileOrDie(out);
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0)
      << "promtool exit " << rc << ":\n" << report << "\n--- input ---\n" << res->body;
  EXPECT_EQ(report.find("error"), std::string::npos) << report;
  EXPECT_EQ(report.find(" should "), std::string::npos) << report;  // lint findings
}

}  // namespace
}  // namespace maskserve::server::metrics
