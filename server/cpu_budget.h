// How many CPU cores this process may really use: the smaller of the
// affinity mask and the cgroup CPU quota (v2 cpu.max or v1 cfs_quota/period),
// never the host's core count. Engine workers x intra-op threads are sized
// from this so a container with a 2-CPU limit does not run 64 threads.
#pragma once

#include <string>

namespace maskserve::server {

struct CpuBudget {
  // Cores in the affinity mask (sched_getaffinity).
  int affinity_cores = 1;
  // ceil(quota / period) from the cgroup, or 0 when unlimited / unknown.
  int quota_cores = 0;
  // min(affinity_cores, quota_cores if set), at least 1.
  int usable_cores = 1;
  // Human-readable origin of usable_cores, for the start-up log.
  std::string source;
};

// Reads the budget of the calling process. `cgroup_root` is overridable for
// tests (defaults to /sys/fs/cgroup).
CpuBudget DetectCpuBudget(const std::string& cgroup_root = "/sys/fs/cgroup");

}  // namespace maskserve::server
