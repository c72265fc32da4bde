// A small, thread-safe Prometheus metrics registry (prometheus-cpp is not
// available on Debian 12). Families of counters, gauges and histograms are
// registered once with a fixed list of label names; each distinct set of label
// values gets a child whose address never changes, so hot paths look a child
// up once and then update it with lock-free atomics only.
//
// Collectors are callbacks run at scrape time for values that are cheaper to
// compute on demand (process stats, queue depths) than to keep up to date.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace maskserve::server::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

// "counter", "gauge" or "histogram", as written in a # TYPE line.
const char* MetricTypeName(MetricType type);

// Prometheus naming rules: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label
// names [a-zA-Z_][a-zA-Z0-9_]* and must not start with "__" (reserved).
bool IsValidMetricName(const std::string& name);
bool IsValidLabelName(const std::string& name);

// Upper bounds for request latencies in seconds, 0.5 ms .. 30 s in 1-2.5-5
// steps: fine enough for sub-millisecond tokenizer calls and for long batches.
std::vector<double> DefaultLatencyBuckets();
// start, start*factor, ... (count bounds). Needs start > 0, factor > 1,
// count >= 1; otherwise returns an empty list, which AddHistogram rejects.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// start, start+width, ... (count bounds). Needs width > 0, count >= 1;
// otherwise returns an empty list, which AddHistogram rejects.
std::vector<double> LinearBuckets(double start, double width, int count);

// A monotonically increasing value.
class Counter {
 public:
  // Adds `v`; negative and NaN increments are ignored because a counter that
  // goes down reads as a process restart to Prometheus' rate().
  void Inc(double v = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that can go up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0);
  void Dec(double v = 1.0) { Inc(-v); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Point-in-time view of one histogram child.
struct HistogramData {
  // cumulative[i] = observations <= bounds[i]; the last entry (one past the
  // bounds) is the +Inf bucket and equals the total count.
  std::vector<uint64_t> cumulative;
  double sum = 0.0;
};

// Observations counted into fixed buckets; an observation equal to a bound
// belongs to that bound's bucket (Prometheus `le` = less-or-equal).
class Histogram {
 public:
  // `bounds` must outlive the histogram (the owning family keeps them).
  explicit Histogram(const std::vector<double>* bounds);
  void Observe(double v);
  HistogramData Snapshot() const;

 private:
  const std::vector<double>* bounds_;
  // Per-bucket (not cumulative) counts; index bounds_->size() is +Inf.
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0.0};
};

// One child as seen by a scrape.
struct MetricPoint {
  std::vector<std::string> label_values;
  // Counter / gauge value (unused for histograms).
  double value = 0.0;
  // Histogram buckets and sum (empty for counters / gauges).
  HistogramData histogram;
};

// One family as seen by a scrape; also what collectors produce.
struct FamilySnapshot {
  std::string name;
  std::string help;
  MetricType type = MetricType::kGauge;
  std::vector<std::string> label_names;
  // Histogram upper bounds, without +Inf (empty for counters / gauges).
  std::vector<double> bucket_bounds;
  // Sorted by label values.
  std::vector<MetricPoint> points;
};

// A family with one unlabeled point, for collectors exporting a single number.
FamilySnapshot SingleValueFamily(MetricType type, std::string name, std::string help, double value);

// Registration-time facts shared by all family types.
class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, MetricType type,
               std::vector<std::string> label_names);
  virtual ~MetricFamily() = default;
  MetricFamily(const MetricFamily&) = delete;
  MetricFamily& operator=(const MetricFamily&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  virtual FamilySnapshot Snapshot() const = 0;

 protected:
  FamilySnapshot EmptySnapshot() const;
  // Aborts with a message naming the family: a wrong label count is a
  // programming error that every code path would hit, not a runtime condition.
  [[noreturn]] void DieOnLabelCount(size_t got) const;

 private:
  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

// Children keyed by label values. Lookups take a mutex: cache the returned
// pointer, which stays valid for the registry's lifetime.
template <typename Child>
class Family : public MetricFamily {
 public:
  using MetricFamily::MetricFamily;

  // The child for `label_values` (one per label name, in order), created on
  // first use. Aborts when the count does not match the label names.
  Child* WithLabels(const std::vector<std::string>& label_values) {
    absl::StatusOr<Child*> child = TryWithLabels(label_values);
    if (!child.ok()) DieOnLabelCount(label_values.size());
    return *child;
  }

  // Like WithLabels, but an InvalidArgument error on a label count mismatch.
  absl::StatusOr<Child*> TryWithLabels(const std::vector<std::string>& label_values) {
    if (label_values.size() != label_names().size()) {
      return absl::InvalidArgumentError("metric " + name() + " expects " +
                                        std::to_string(label_names().size()) +
                                        " label values, got " +
                                        std::to_string(label_values.size()));
    }
    std::lock_guard<std::mutex> lock(mu_);
    std::unique_ptr<Child>& slot = children_[label_values];
    if (slot == nullptr) slot = NewChild();
    return slot.get();
  }

 protected:
  virtual std::unique_ptr<Child> NewChild() const = 0;

  // std::mutex rather than absl::Mutex: Debian's absl is not built with
  // TSan, so TSan builds could not see absl::Mutex's synchronisation.
  mutable std::mutex mu_;
  // Guarded by mu_.
  std::map<std::vector<std::string>, std::unique_ptr<Child>> children_;
};

class CounterFamily final : public Family<Counter> {
 public:
  using Family<Counter>::Family;
  FamilySnapshot Snapshot() const override;

 protected:
  std::unique_ptr<Counter> NewChild() const override { return std::make_unique<Counter>(); }
};

class GaugeFamily final : public Family<Gauge> {
 public:
  using Family<Gauge>::Family;
  FamilySnapshot Snapshot() const override;

 protected:
  std::unique_ptr<Gauge> NewChild() const override { return std::make_unique<Gauge>(); }
};

class HistogramFamily final : public Family<Histogram> {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> bounds);
  const std::vector<double>& bounds() const { return bounds_; }
  FamilySnapshot Snapshot() const override;

 protected:
  std::unique_ptr<Histogram> NewChild() const override {
    return std::make_unique<Histogram>(&bounds_);
  }

 private:
  const std::vector<double> bounds_;
};

// Appends the families it computes to `out`. Runs on the scraping thread.
using Collector = std::function<void(std::vector<FamilySnapshot>* out)>;
using CollectorId = int64_t;

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registers a family, or returns the existing one when a family of that
  // name already exists with the same type, label names (and buckets); the
  // first registration's help text wins. Errors (InvalidArgument /
  // AlreadyExists) on invalid names, duplicate or reserved label names, bad
  // buckets, a conflicting earlier registration, or a name that clashes with
  // a histogram's _bucket/_sum/_count series. A family without labels gets
  // its single child at once, so it is exported (as 0) from the start.
  absl::StatusOr<CounterFamily*> AddCounter(const std::string& name, const std::string& help,
                                            const std::vector<std::string>& label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(const std::string& name, const std::string& help,
                                        const std::vector<std::string>& label_names = {});
  // `buckets`: strictly increasing finite upper bounds; a trailing +Inf is
  // accepted and dropped (it is always implied).
  absl::StatusOr<HistogramFamily*> AddHistogram(const std::string& name, const std::string& help,
                                                const std::vector<std::string>& label_names = {},
                                                std::vector<double> buckets =
                                                    DefaultLatencyBuckets());

  // Collectors run on every Collect(), one scrape at a time. Families they
  // emit with an invalid shape, or a name already taken by a registered
  // family or an earlier collector, are dropped from that scrape.
  CollectorId AddCollector(Collector collector);
  // After this returns the collector is not running and will not run again,
  // so state it captured may be destroyed. Must not be called from a collector.
  void RemoveCollector(CollectorId id);

  // Runs the collectors and snapshots every family: sorted by name, points
  // sorted by label values. Families with labels but no children are omitted.
  std::vector<FamilySnapshot> Collect() const;

 private:
  // Checks the shared registration rules; returns the existing family of that
  // name (or nullptr when new), or an error.
  absl::StatusOr<MetricFamily*> CheckRegistration(const std::string& name, MetricType type,
                                                  const std::vector<std::string>& label_names,
                                                  const std::vector<double>* buckets) const;
  void Insert(std::unique_ptr<MetricFamily> family);

  // Serialises scrapes so collectors never run concurrently with themselves.
  // Taken before mu_ when both are held.
  mutable std::mutex collect_mu_;
  // Guards everything below; CheckRegistration and Insert need it held.
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<MetricFamily>> families_;
  // Every series name families_ produce (name, and name_bucket/_sum/_count
  // for histograms) -> owning family name; used to reject clashes.
  std::map<std::string, std::string> series_names_;
  std::map<CollectorId, std::shared_ptr<Collector>> collectors_;
  CollectorId next_collector_id_ = 1;
};

}  // namespace maskserve::server::metrics
