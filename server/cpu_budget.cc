#include "server/cpu_budget.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace maskserve::server {
namespace {

bool ReadFirstLine(const std::string& path, std::string* line) {
  std::ifstream in(path);
  if (!in) return false;
  return static_cast<bool>(std::getline(in, *line));
}

// cgroup v2: "max 100000" or "200000 100000".
int QuotaFromV2(const std::string& root) {
  std::string line;
  if (!ReadFirstLine(root + "/cpu.max", &line)) return 0;
  std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (parts.size() != 2 || parts[0] == "max") return 0;
  int64_t quota = 0, period = 0;
  if (!absl::SimpleAtoi(parts[0], &quota) || !absl::SimpleAtoi(parts[1], &period)) return 0;
  if (quota <= 0 || period <= 0) return 0;
  return static_cast<int>((quota + period - 1) / period);
}

// cgroup v1: cpu.cfs_quota_us (-1 = unlimited) and cpu.cfs_period_us.
int QuotaFromV1(const std::string& root) {
  for (const std::string& dir : {root + "/cpu", root + "/cpu,cpuacct", root}) {
    std::string q, p;
    if (!ReadFirstLine(dir + "/cpu.cfs_quota_us", &q) ||
        !ReadFirstLine(dir + "/cpu.cfs_period_us", &p)) {
      continue;
    }
    int64_t quota = 0, period = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(q), &quota) ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(p), &period)) {
      return 0;
    }
    if (quota <= 0 || period <= 0) return 0;
    return static_cast<int>((quota + period - 1) / period);
  }
  return 0;
}

}  // namespace

CpuBudget DetectCpuBudget(const std::string& cgroup_root) {
  CpuBudget b;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    b.affinity_cores = std::max(1, CPU_COUNT(&set));
  }
  b.quota_cores = QuotaFromV2(cgroup_root);
  if (b.quota_cores == 0) b.quota_cores = QuotaFromV1(cgroup_root);
  b.usable_cores = b.affinity_cores;
  b.source = absl::StrCat("affinity mask (", b.affinity_cores, " cores)");
  if (b.quota_cores > 0 && b.quota_cores < b.usable_cores) {
    b.usable_cores = b.quota_cores;
    b.source = absl::StrCat("cgroup CPU quota (", b.quota_cores, " cores; affinity ",
                            b.affinity_cores, ")");
  }
  b.usable_cores = std::max(1, b.usable_cores);
  return b;
}

}  // namespace maskserve::server
