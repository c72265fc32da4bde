#include "server/metrics/server_metrics.h"

#include <iterator>

#include "absl/strings/str_cat.h"

namespace maskserve::server::metrics {

std::string GrpcCodeLabel(int code) {
  static constexpr const char* kNames[] = {
      "OK",           "Canceled",          "Unknown",          "InvalidArgument",
      "DeadlineExceeded", "NotFound",      "AlreadyExists",    "PermissionDenied",
      "ResourceExhausted", "FailedPrecondition", "Aborted",    "OutOfRange",
      "Unimplemented", "Internal",         "Unavailable",      "DataLoss",
      "Unauthenticated"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) return kNames[code];
  return absl::StrCat("Code(", code, ")");
}

MethodMetrics::MethodMetrics(const std::string& service, const std::string& method,
                             CounterFamily* requests_total, HistogramFamily* duration,
                             GaugeFamily* inflight)
    : service_(service),
      method_(method),
      requests_total_(requests_total),
      duration_(duration->WithLabels({service, method})),
      inflight_(inflight->WithLabels({service, method})) {}

void MethodMetrics::Finished(int code, double seconds) {
  inflight_->Dec();
  duration_->Observe(seconds);
  Counter* counter = nullptr;
  const bool cacheable = code >= 0 && code < static_cast<int>(by_code_.size());
  if (cacheable) counter = by_code_[code].load(std::memory_order_acquire);
  if (counter == nullptr) {
    // Racing threads resolve the same child (the family dedups), so a plain
    // store is enough.
    counter = requests_total_->WithLabels({service_, method_, GrpcCodeLabel(code)});
    if (cacheable) by_code_[code].store(counter, std::memory_order_release);
  }
  counter->Inc();
}

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(MetricsRegistry* registry,
                                                                     const std::string& version) {
  auto m = std::make_unique<ServerMetrics>();
  m->registry = registry;

  absl::StatusOr<CounterFamily*> requests = registry->AddCounter(
      "maskserve_requests_total", "Finished RPCs by service, method and gRPC status code.",
      {"service", "method", "code"});
  if (!requests.ok()) return requests.status();
  m->requests_total = *requests;

  absl::StatusOr<HistogramFamily*> duration = registry->AddHistogram(
      "maskserve_request_duration_seconds",
      "Time from receiving an RPC to sending its status, in seconds.", {"service", "method"});
  if (!duration.ok()) return duration.status();
  m->request_duration_seconds = *duration;

  absl::StatusOr<GaugeFamily*> inflight =
      registry->AddGauge("maskserve_inflight_requests", "RPCs currently being handled.",
                         {"service", "method"});
  if (!inflight.ok()) return inflight.status();
  m->inflight_requests = *inflight;

  absl::StatusOr<GaugeFamily*> build = registry->AddGauge(
      "maskserve_build_info", "Always 1; the version label names the running build.",
      {"version"});
  if (!build.ok()) return build.status();
  m->build_info = *build;
  m->build_info->WithLabels({version})->Set(1);

  absl::StatusOr<GaugeFamily*> ready = registry->AddGauge(
      "maskserve_model_ready", "1 when the model is loaded and serving requests, else 0.",
      {"model"});
  if (!ready.ok()) return ready.status();
  m->model_ready = *ready;

  absl::StatusOr<GaugeFamily*> load = registry->AddGauge(
      "maskserve_model_load_seconds", "Wall time the most recent load of the model took, in seconds.",
      {"model"});
  if (!load.ok()) return load.status();
  m->model_load_seconds = *load;
  return m;
}

MethodMetrics* ServerMetrics::ForMethod(const std::string& service, const std::string& method) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<MethodMetrics>& slot = methods_[{service, method}];
  if (slot == nullptr) {
    slot = std::make_unique<MethodMetrics>(service, method, requests_total,
                                           request_duration_seconds, inflight_requests);
  }
  return slot.get();
}

}  // namespace maskserve::server::metrics
