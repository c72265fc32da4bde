#include "server/cpu_budget.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "tests/util/test_env.h"

namespace maskserve::server {
namespace {

int AffinityCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

void Write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

TEST(CpuBudgetTest, AffinityIsAtLeastOne) {
  CpuBudget b = DetectCpuBudget(maskserve::testing::MakeTempDir("cgroup-empty"));
  EXPECT_GE(b.affinity_cores, 1);
  EXPECT_EQ(b.affinity_cores, AffinityCores());
  EXPECT_EQ(b.quota_cores, 0);
  EXPECT_EQ(b.usable_cores, b.affinity_cores);
  EXPECT_FALSE(b.source.empty());
}

TEST(CpuBudgetTest, MissingRootMeansUnlimited) {
  CpuBudget b = DetectCpuBudget("/nonexistent/cgroup/root");
  EXPECT_EQ(b.quota_cores, 0);
  EXPECT_EQ(b.usable_cores, AffinityCores());
}

TEST(CpuBudgetTest, V2QuotaOfTwoCores) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v2");
  Write(root + "/cpu.max", "200000 100000\n");
  CpuBudget b = DetectCpuBudget(root);
  EXPECT_EQ(b.quota_cores, 2);
  EXPECT_EQ(b.usable_cores, std::min(2, AffinityCores()));
}

TEST(CpuBudgetTest, V2FractionalQuotaRoundsUp) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v2-frac");
  Write(root + "/cpu.max", "50000 100000\n");
  CpuBudget b = DetectCpuBudget(root);
  EXPECT_EQ(b.quota_cores, 1);
  EXPECT_EQ(b.usable_cores, 1);
  if (AffinityCores() > 1) {
    EXPECT_NE(b.source.find("cgroup"), std::string::npos) << b.source;
  }
}

TEST(CpuBudgetTest, V2MaxIsUnlimited) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v2-max");
  Write(root + "/cpu.max", "max 100000\n");
  CpuBudget b = DetectCpuBudget(root);
  EXPECT_EQ(b.quota_cores, 0);
  EXPECT_EQ(b.usable_cores, AffinityCores());
}

TEST(CpuBudgetTest, V2MalformedIsIgnored) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v2-bad");
  Write(root + "/cpu.max", "lots\n");
  EXPECT_EQ(DetectCpuBudget(root).quota_cores, 0);
}

TEST(CpuBudgetTest, V1QuotaInCpuSubdir) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v1");
  Write(root + "/cpu/cpu.cfs_quota_us", "150000\n");
  Write(root + "/cpu/cpu.cfs_period_us", "100000\n");
  CpuBudget b = DetectCpuBudget(root);
  EXPECT_EQ(b.quota_cores, 2);  // ceil(1.5)
  EXPECT_EQ(b.usable_cores, std::min(2, AffinityCores()));
}

TEST(CpuBudgetTest, V1QuotaInCombinedCpuCpuacctDir) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v1-combined");
  Write(root + "/cpu,cpuacct/cpu.cfs_quota_us", "100000\n");
  Write(root + "/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  CpuBudget b = DetectCpuBudget(root);
  EXPECT_EQ(b.quota_cores, 1);
  EXPECT_EQ(b.usable_cores, 1);
}

TEST(CpuBudgetTest, V1MinusOneIsUnlimited) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v1-unlimited");
  Write(root + "/cpu/cpu.cfs_quota_us", "-1\n");
  Write(root + "/cpu/cpu.cfs_period_us", "100000\n");
  CpuBudget b = DetectCpuBudget(root);
  EXPECT_EQ(b.quota_cores, 0);
  EXPECT_EQ(b.usable_cores, AffinityCores());
}

TEST(CpuBudgetTest, QuotaAboveAffinityDoesNotRaiseUsable) {
  const std::string root = maskserve::testing::MakeTempDir("cgroup-v2-big");
  Write(root + "/cpu.max", "6400000 100000\n");
  CpuBudget b = DetectCpuBudget(root);
  EXPECT_EQ(b.quota_cores, 64);
  EXPECT_EQ(b.usable_cores, std::min(64, AffinityCores()));
}

}  // namespace
}  // namespace maskserve::server
