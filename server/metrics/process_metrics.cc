#include "server/metrics/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace maskserve::server::metrics {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Boot time from the "btime <unix seconds>" line of /proc/stat.
absl::StatusOr<double> BootTime(const std::string& proc_root) {
  absl::StatusOr<std::string> stat = ReadFile(proc_root + "/stat");
  if (!stat.ok()) return stat.status();
  for (absl::string_view line : absl::StrSplit(*stat, '\n')) {
    if (!absl::ConsumePrefix(&line, "btime ")) continue;
    double btime = 0;
    if (absl::SimpleAtod(line, &btime)) return btime;
  }
  return absl::DataLossError(absl::StrCat("no btime in ", proc_root, "/stat"));
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats(const std::string& proc_root) {
  ProcessStats s;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));

  absl::StatusOr<std::string> stat = ReadFile(proc_root + "/self/stat");
  if (!stat.ok()) return stat.status();
  // The command name (field 2) is parenthesised and may contain spaces and
  // parentheses, so fields are counted from the last ')'.
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) return absl::DataLossError("malformed /proc/self/stat");
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(*stat).substr(close + 1), ' ', absl::SkipWhitespace());
  // f[0] is field 3 (state): field N is f[N - 3].
  constexpr size_t kUtime = 14 - 3, kStime = 15 - 3, kStartTime = 22 - 3;
  double utime = 0, stime = 0, start = 0;
  if (f.size() <= kStartTime || !absl::SimpleAtod(f[kUtime], &utime) ||
      !absl::SimpleAtod(f[kStime], &stime) || !absl::SimpleAtod(f[kStartTime], &start)) {
    return absl::DataLossError("malformed /proc/self/stat");
  }
  s.cpu_seconds = (utime + stime) / ticks;
  absl::StatusOr<double> boot = BootTime(proc_root);
  if (!boot.ok()) return boot.status();
  s.start_time_seconds = *boot + start / ticks;

  absl::StatusOr<std::string> statm = ReadFile(proc_root + "/self/statm");
  if (!statm.ok()) return statm.status();
  std::vector<absl::string_view> m = absl::StrSplit(*statm, ' ', absl::SkipWhitespace());
  double size_pages = 0, resident_pages = 0;
  if (m.size() < 2 || !absl::SimpleAtod(m[0], &size_pages) ||
      !absl::SimpleAtod(m[1], &resident_pages)) {
    return absl::DataLossError("malformed /proc/self/statm");
  }
  s.virtual_memory_bytes = size_pages * page;
  s.resident_memory_bytes = resident_pages * page;

  const std::string fd_dir = proc_root + "/self/fd";
  DIR* dir = opendir(fd_dir.c_str());
  if (dir == nullptr) return absl::NotFoundError(absl::StrCat("cannot list ", fd_dir));
  const std::string own_fd = std::to_string(dirfd(dir));
  int fds = 0;
  while (const dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || name == own_fd) continue;
    ++fds;
  }
  closedir(dir);
  s.open_fds = fds;

  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return absl::InternalError("getrlimit failed");
  s.max_fds = lim.rlim_cur == RLIM_INFINITY ? INFINITY : static_cast<double>(lim.rlim_cur);
  return s;
}

CollectorId RegisterProcessCollector(MetricsRegistry* registry) {
  return registry->AddCollector([](std::vector<FamilySnapshot>* out) {
    absl::StatusOr<ProcessStats> s = ReadProcessStats();
    if (!s.ok()) return;
    out->push_back(SingleValueFamily(MetricType::kGauge, "process_resident_memory_bytes",
                                     "Resident memory size in bytes.", s->resident_memory_bytes));
    out->push_back(SingleValueFamily(MetricType::kGauge, "process_virtual_memory_bytes",
                                     "Virtual memory size in bytes.", s->virtual_memory_bytes));
    out->push_back(SingleValueFamily(MetricType::kCounter, "process_cpu_seconds_total",
                                     "Total user and system CPU time spent in seconds.",
                                     s->cpu_seconds));
    out->push_back(SingleValueFamily(MetricType::kGauge, "process_start_time_seconds",
                                     "Start time of the process since unix epoch in seconds.",
                                     s->start_time_seconds));
    out->push_back(SingleValueFamily(MetricType::kGauge, "process_open_fds",
                                     "Number of open file descriptors.", s->open_fds));
    out->push_back(SingleValueFamily(MetricType::kGauge, "process_max_fds",
                                     "Maximum number of open file descriptors.", s->max_fds));
  });
}

}  // namespace maskserve::server::metrics
