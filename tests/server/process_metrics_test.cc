#include "server/metrics/process_metrics.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <ctime>
#include <fstream>

#include "tests/util/test_env.h"

namespace maskserve::server::metrics {
namespace {

TEST(ProcessMetricsTest, ReadsPlausibleValuesForThisProcess) {
  auto s = ReadProcessStats();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT(s->resident_memory_bytes, 1 << 20);
  EXPECT_GE(s->virtual_memory_bytes, s->resident_memory_bytes);
  EXPECT_GE(s->cpu_seconds, 0);
  const double now = static_cast<double>(std::time(nullptr));
  // Started in the past, and not before the test binary could have been built.
  EXPECT_LE(s->start_time_seconds, now + 1);
  EXPECT_GT(s->start_time_seconds, now - 24 * 3600);
  EXPECT_GE(s->open_fds, 3);  // stdin, stdout, stderr
  EXPECT_GE(s->max_fds, s->open_fds);
}

TEST(ProcessMetricsTest, OpenFdsTracksNewDescriptors) {
  auto before = ReadProcessStats();
  ASSERT_TRUE(before.ok());
  int fd = open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  auto during = ReadProcessStats();
  close(fd);
  ASSERT_TRUE(during.ok());
  EXPECT_EQ(during->open_fds, before->open_fds + 1);
}

TEST(ProcessMetricsTest, ParsesCommandNamesWithSpacesAndParens) {
  const std::string root = maskserve::testing::MakeTempDir("fakeproc");
  ASSERT_EQ(system(("mkdir -p " + root + "/self/fd").c_str()), 0);
  // Fields: pid (comm) state ppid ... utime(14)=250 stime(15)=150 ... starttime(22)=1000.
  std::ofstream(root + "/self/stat")
      << "42 (my (weird) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 1000 "
         "123456789 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
  std::ofstream(root + "/self/statm") << "3000 2000 100 10 0 500 0\n";
  std::ofstream(root + "/stat") << "cpu  1 2 3 4\nbtime 1700000000\nprocesses 5\n";
  std::ofstream(root + "/self/fd/0");
  std::ofstream(root + "/self/fd/1");
  auto s = ReadProcessStats(root);
  ASSERT_TRUE(s.ok()) << s.status();
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  EXPECT_DOUBLE_EQ(s->cpu_seconds, 400 / ticks);
  EXPECT_DOUBLE_EQ(s->start_time_seconds, 1700000000 + 1000 / ticks);
  EXPECT_DOUBLE_EQ(s->virtual_memory_bytes, 3000 * page);
  EXPECT_DOUBLE_EQ(s->resident_memory_bytes, 2000 * page);
  EXPECT_EQ(s->open_fds, 2);
}

TEST(ProcessMetricsTest, MissingProcIsAnError) {
  EXPECT_FALSE(ReadProcessStats("/nonexistent-proc-root").ok());
}

TEST(ProcessMetricsTest, CollectorExportsStandardFamilies) {
  MetricsRegistry reg;
  RegisterProcessCollector(&reg);
  std::vector<FamilySnapshot> fs = reg.Collect();
  std::vector<std::string> names;
  for (const auto& f : fs) names.push_back(f.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "process_cpu_seconds_total", "process_max_fds", "process_open_fds",
                       "process_resident_memory_bytes", "process_start_time_seconds",
                       "process_virtual_memory_bytes"}));
  for (const auto& f : fs) {
    EXPECT_EQ(f.type, f.name == "process_cpu_seconds_total" ? MetricType::kCounter
                                                             : MetricType::kGauge);
  }
}

}  // namespace
}  // namespace maskserve::server::metrics
