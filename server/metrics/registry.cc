#include "server/metrics/registry.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace maskserve::server::metrics {
namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Adds with a CAS loop: std::atomic<double>::fetch_add is C++20 but is not
// lock-free on every standard library, and this keeps the intent explicit.
void AtomicAdd(std::atomic<double>* target, double v) {
  double cur = target->load(std::memory_order_relaxed);
  while (!target->compare_exchange_weak(cur, cur + v, std::memory_order_relaxed,
                                        std::memory_order_relaxed)) {
  }
}

std::vector<std::string> SeriesNames(const std::string& name, MetricType type) {
  if (type != MetricType::kHistogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

absl::Status ValidateLabelNames(const std::string& metric, MetricType type,
                                const std::vector<std::string>& label_names) {
  std::set<std::string> seen;
  for (const std::string& l : label_names) {
    if (!IsValidLabelName(l)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric ", metric, ": invalid label name \"", l, "\""));
    }
    if (type == MetricType::kHistogram && l == "le") {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", metric, ": label name \"le\" is reserved for buckets"));
    }
    if (!seen.insert(l).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric ", metric, ": duplicate label name \"", l, "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateBuckets(const std::string& metric, const std::vector<double>& bounds) {
  if (bounds.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("histogram ", metric, ": needs at least one finite bucket bound"));
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", metric, ": bucket bounds must be finite"));
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", metric, ": bucket bounds must be strictly increasing"));
    }
  }
  return absl::OkStatus();
}

// A collector's family is usable when it is shaped like a registered one.
absl::Status ValidateSnapshot(const FamilySnapshot& f) {
  if (!IsValidMetricName(f.name)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metric name \"", f.name, "\""));
  }
  if (absl::Status s = ValidateLabelNames(f.name, f.type, f.label_names); !s.ok()) return s;
  if (f.type == MetricType::kHistogram) {
    if (absl::Status s = ValidateBuckets(f.name, f.bucket_bounds); !s.ok()) return s;
  }
  std::set<std::vector<std::string>> seen;
  for (const MetricPoint& p : f.points) {
    if (p.label_values.size() != f.label_names.size()) {
      return absl::InvalidArgumentError(absl::StrCat(f.name, ": label value count mismatch"));
    }
    if (!seen.insert(p.label_values).second) {
      return absl::InvalidArgumentError(absl::StrCat(f.name, ": duplicate label values"));
    }
    if (f.type == MetricType::kHistogram) {
      const std::vector<uint64_t>& c = p.histogram.cumulative;
      if (c.size() != f.bucket_bounds.size() + 1 || !std::is_sorted(c.begin(), c.end())) {
        return absl::InvalidArgumentError(absl::StrCat(f.name, ": malformed histogram buckets"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

bool IsValidMetricName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = IsAlpha(c) || c == '_' || c == ':' || (i > 0 && IsDigit(c));
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(const std::string& name) {
  if (name.empty() || name.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = IsAlpha(c) || c == '_' || (i > 0 && IsDigit(c));
    if (!ok) return false;
  }
  return true;
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25,   0.5,   1.0,    2.5,   5.0,  10.0,  30.0};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) return {};
  std::vector<double> out;
  out.reserve(count);
  for (int i = 0; i < count; ++i) out.push_back(start * std::pow(factor, i));
  return out;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  if (!(width > 0) || count < 1) return {};
  std::vector<double> out;
  out.reserve(count);
  // start + i*width rather than repeated addition, so error does not accumulate.
  for (int i = 0; i < count; ++i) out.push_back(start + i * width);
  return out;
}

void Counter::Inc(double v) {
  if (!(v >= 0)) return;
  AtomicAdd(&value_, v);
}

void Gauge::Inc(double v) { AtomicAdd(&value_, v); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // First bound >= v: equal values land in that bound's bucket. NaN is
  // below no bound, so it lands in +Inf only, as in the Go client.
  const size_t idx =
      std::isnan(v) ? bounds_->size()
                    : static_cast<size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), v) -
                                          bounds_->begin());
  counts_[idx].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(&sum_, v);
}

HistogramData Histogram::Snapshot() const {
  HistogramData d;
  d.cumulative.resize(bounds_->size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    d.cumulative[i] = running;
  }
  d.sum = sum_.load(std::memory_order_relaxed);
  return d;
}

FamilySnapshot SingleValueFamily(MetricType type, std::string name, std::string help,
                                 double value) {
  FamilySnapshot f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  MetricPoint p;
  p.value = value;
  f.points.push_back(std::move(p));
  return f;
}

MetricFamily::MetricFamily(std::string name, std::string help, MetricType type,
                           std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

FamilySnapshot MetricFamily::EmptySnapshot() const {
  FamilySnapshot f;
  f.name = name_;
  f.help = help_;
  f.type = type_;
  f.label_names = label_names_;
  return f;
}

void MetricFamily::DieOnLabelCount(size_t got) const {
  std::fprintf(stderr, "FATAL: metric %s has labels {%s} (%zu) but got %zu label values\n",
               name_.c_str(), absl::StrJoin(label_names_, ",").c_str(), label_names_.size(), got);
  std::abort();
}

FamilySnapshot CounterFamily::Snapshot() const {
  FamilySnapshot f = EmptySnapshot();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, child] : children_) {
    MetricPoint p;
    p.label_values = labels;
    p.value = child->Value();
    f.points.push_back(std::move(p));
  }
  return f;
}

FamilySnapshot GaugeFamily::Snapshot() const {
  FamilySnapshot f = EmptySnapshot();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, child] : children_) {
    MetricPoint p;
    p.label_values = labels;
    p.value = child->Value();
    f.points.push_back(std::move(p));
  }
  return f;
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names, std::vector<double> bounds)
    : Family<Histogram>(std::move(name), std::move(help), MetricType::kHistogram,
                        std::move(label_names)),
      bounds_(std::move(bounds)) {}

FamilySnapshot HistogramFamily::Snapshot() const {
  FamilySnapshot f = EmptySnapshot();
  f.bucket_bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, child] : children_) {
    MetricPoint p;
    p.label_values = labels;
    p.histogram = child->Snapshot();
    f.points.push_back(std::move(p));
  }
  return f;
}

absl::StatusOr<MetricFamily*> MetricsRegistry::CheckRegistration(
    const std::string& name, MetricType type, const std::vector<std::string>& label_names,
    const std::vector<double>* buckets) const {
  if (!IsValidMetricName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metric name \"", name, "\""));
  }
  if (absl::Status s = ValidateLabelNames(name, type, label_names); !s.ok()) return s;
  if (buckets != nullptr) {
    if (absl::Status s = ValidateBuckets(name, *buckets); !s.ok()) return s;
  }

  auto it = families_.find(name);
  if (it != families_.end()) {
    MetricFamily* existing = it->second.get();
    if (existing->type() != type) {
      return absl::AlreadyExistsError(absl::StrCat("metric ", name, " already registered as a ",
                                                   MetricTypeName(existing->type())));
    }
    if (existing->label_names() != label_names) {
      return absl::AlreadyExistsError(
          absl::StrCat("metric ", name, " already registered with labels {",
                       absl::StrJoin(existing->label_names(), ","), "}"));
    }
    if (buckets != nullptr && static_cast<HistogramFamily*>(existing)->bounds() != *buckets) {
      return absl::AlreadyExistsError(
          absl::StrCat("histogram ", name, " already registered with other buckets"));
    }
    return existing;
  }
  for (const std::string& series : SeriesNames(name, type)) {
    auto clash = series_names_.find(series);
    if (clash != series_names_.end()) {
      return absl::AlreadyExistsError(absl::StrCat("metric ", name, ": series name ", series,
                                                   " clashes with metric ", clash->second));
    }
  }
  return nullptr;
}

void MetricsRegistry::Insert(std::unique_ptr<MetricFamily> family) {
  for (const std::string& series : SeriesNames(family->name(), family->type())) {
    series_names_[series] = family->name();
  }
  const std::string name = family->name();
  families_[name] = std::move(family);
}

absl::StatusOr<CounterFamily*> MetricsRegistry::AddCounter(
    const std::string& name, const std::string& help,
    const std::vector<std::string>& label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<MetricFamily*> existing =
      CheckRegistration(name, MetricType::kCounter, label_names, nullptr);
  if (!existing.ok()) return existing.status();
  if (*existing != nullptr) return static_cast<CounterFamily*>(*existing);
  auto family = std::make_unique<CounterFamily>(name, help, MetricType::kCounter, label_names);
  CounterFamily* raw = family.get();
  if (label_names.empty()) raw->WithLabels({});
  Insert(std::move(family));
  return raw;
}

absl::StatusOr<GaugeFamily*> MetricsRegistry::AddGauge(
    const std::string& name, const std::string& help,
    const std::vector<std::string>& label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<MetricFamily*> existing =
      CheckRegistration(name, MetricType::kGauge, label_names, nullptr);
  if (!existing.ok()) return existing.status();
  if (*existing != nullptr) return static_cast<GaugeFamily*>(*existing);
  auto family = std::make_unique<GaugeFamily>(name, help, MetricType::kGauge, label_names);
  GaugeFamily* raw = family.get();
  if (label_names.empty()) raw->WithLabels({});
  Insert(std::move(family));
  return raw;
}

absl::StatusOr<HistogramFamily*> MetricsRegistry::AddHistogram(
    const std::string& name, const std::string& help,
    const std::vector<std::string>& label_names, std::vector<double> buckets) {
  if (!buckets.empty() && std::isinf(buckets.back()) && buckets.back() > 0) buckets.pop_back();
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<MetricFamily*> existing =
      CheckRegistration(name, MetricType::kHistogram, label_names, &buckets);
  if (!existing.ok()) return existing.status();
  if (*existing != nullptr) return static_cast<HistogramFamily*>(*existing);
  auto family = std::make_unique<HistogramFamily>(name, help, label_names, std::move(buckets));
  HistogramFamily* raw = family.get();
  if (label_names.empty()) raw->WithLabels({});
  Insert(std::move(family));
  return raw;
}

CollectorId MetricsRegistry::AddCollector(Collector collector) {
  std::lock_guard<std::mutex> lock(mu_);
  const CollectorId id = next_collector_id_++;
  collectors_[id] = std::make_shared<Collector>(std::move(collector));
  return id;
}

void MetricsRegistry::RemoveCollector(CollectorId id) {
  // Taking collect_mu_ waits out a scrape that may be running this collector.
  std::lock_guard<std::mutex> collect_lock(collect_mu_);
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.erase(id);
}

std::vector<FamilySnapshot> MetricsRegistry::Collect() const {
  std::lock_guard<std::mutex> collect_lock(collect_mu_);
  std::vector<std::shared_ptr<Collector>> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, c] : collectors_) collectors.push_back(c);
  }
  // Collectors run without mu_ so they may register families or set gauges.
  std::vector<FamilySnapshot> collected;
  for (const auto& c : collectors) (*c)(&collected);

  std::vector<FamilySnapshot> out;
  std::lock_guard<std::mutex> lock(mu_);
  std::set<std::string> taken;
  for (const auto& [series, owner] : series_names_) taken.insert(series);
  for (const auto& [name, family] : families_) {
    FamilySnapshot f = family->Snapshot();
    if (!f.points.empty()) out.push_back(std::move(f));
  }
  for (FamilySnapshot& f : collected) {
    if (!ValidateSnapshot(f).ok()) continue;
    const std::vector<std::string> series = SeriesNames(f.name, f.type);
    if (std::any_of(series.begin(), series.end(),
                    [&](const std::string& s) { return taken.count(s) > 0; })) {
      continue;
    }
    taken.insert(series.begin(), series.end());
    std::sort(f.points.begin(), f.points.end(),
              [](const MetricPoint& a, const MetricPoint& b) {
                return a.label_values < b.label_values;
              });
    if (!f.points.empty()) out.push_back(std::move(f));
  }
  std::sort(out.begin(), out.end(),
            [](const FamilySnapshot& a, const FamilySnapshot& b) { return a.name < b.name; });
  return out;
}

}  // namespace maskserve::server::metrics
