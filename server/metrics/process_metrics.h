// The standard Prometheus process_* metrics (as the Go and Java clients
// export them), read from /proc at scrape time so dashboards and alerts
// written for other services work unchanged against maskserve.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/metrics/registry.h"

namespace maskserve::server::metrics {

struct ProcessStats {
  // Resident set size (statm resident pages x page size).
  double resident_memory_bytes = 0;
  // Virtual memory size (statm size pages x page size).
  double virtual_memory_bytes = 0;
  // User + system CPU time (stat utime + stime, in clock ticks).
  double cpu_seconds = 0;
  // Unix time the process started (boot time from /proc/stat + stat starttime).
  double start_time_seconds = 0;
  // Entries in /proc/self/fd, not counting the descriptor used to list them.
  double open_fds = 0;
  // Soft RLIMIT_NOFILE (+Inf when unlimited).
  double max_fds = 0;
};

// Reads the calling process's stats. `proc_root` is overridable for tests.
absl::StatusOr<ProcessStats> ReadProcessStats(const std::string& proc_root = "/proc");

// Adds a collector exporting process_resident_memory_bytes,
// process_virtual_memory_bytes, process_cpu_seconds_total,
// process_start_time_seconds, process_open_fds and process_max_fds.
// A scrape during which /proc cannot be read simply has no process_* families.
CollectorId RegisterProcessCollector(MetricsRegistry* registry);

}  // namespace maskserve::server::metrics
