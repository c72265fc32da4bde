// The maskserve_* metric families every part of the server shares, created
// once from the process's registry. Components that come later (queues,
// batching, tokens) register their own families on `registry` or add fields
// here; nothing else needs to change.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "server/metrics/registry.h"

namespace maskserve::server::metrics {

// The `code` label for a gRPC status code number: "OK", "InvalidArgument",
// "DeadlineExceeded", ... (the spelling go-grpc-prometheus uses, so existing
// dashboards match); "Code(N)" outside 0..16.
std::string GrpcCodeLabel(int code);

// Children of the per-method families for one (service, method), resolved
// once so recording a request touches atomics only.
class MethodMetrics {
 public:
  MethodMetrics(const std::string& service, const std::string& method,
                CounterFamily* requests_total, HistogramFamily* duration, GaugeFamily* inflight);

  // A request has started (inflight +1).
  void Started() { inflight_->Inc(); }
  // A request has finished with gRPC status `code` after `seconds`: inflight
  // -1, one duration observation, requests_total{code} +1.
  void Finished(int code, double seconds);

 private:
  const std::string service_;
  const std::string method_;
  CounterFamily* const requests_total_;
  Histogram* const duration_;
  Gauge* const inflight_;
  // requests_total children for codes 0..16, filled on first use so only
  // codes that occurred are exported.
  std::array<std::atomic<Counter*>, 17> by_code_{};
};

// Tracks one request on `m`: Started() now, Finished() with the code set
// last (default OK) when destroyed.
class ScopedRequest {
 public:
  explicit ScopedRequest(MethodMetrics* m) : m_(m), start_(std::chrono::steady_clock::now()) {
    m_->Started();
  }
  ~ScopedRequest() {
    m_->Finished(code_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
                            .count());
  }
  ScopedRequest(const ScopedRequest&) = delete;
  ScopedRequest& operator=(const ScopedRequest&) = delete;
  // gRPC status code number the request ended with.
  void set_code(int code) { code_ = code; }

 private:
  MethodMetrics* const m_;
  const std::chrono::steady_clock::time_point start_;
  int code_ = 0;
};

struct ServerMetrics {
  // Registers (or finds) the standard families on `registry`, which must
  // outlive the result, and sets maskserve_build_info{version} to 1.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(
      MetricsRegistry* registry, const std::string& version = MASKSERVE_VERSION);

  // Cached per-method children; the pointer is stable for the lifetime of
  // this object. Takes a mutex: look it up once per method, not per request.
  MethodMetrics* ForMethod(const std::string& service, const std::string& method);

  MetricsRegistry* registry = nullptr;
  // maskserve_requests_total{service,method,code}: finished RPCs.
  CounterFamily* requests_total = nullptr;
  // maskserve_request_duration_seconds{service,method}: RPC latency.
  HistogramFamily* request_duration_seconds = nullptr;
  // maskserve_inflight_requests{service,method}: RPCs being handled now.
  GaugeFamily* inflight_requests = nullptr;
  // maskserve_build_info{version}: always 1; carries the version as a label.
  GaugeFamily* build_info = nullptr;
  // maskserve_model_ready{model}: 1 when the model serves requests, else 0.
  GaugeFamily* model_ready = nullptr;
  // maskserve_model_load_seconds{model}: how long the last load took.
  GaugeFamily* model_load_seconds = nullptr;

 private:
  std::mutex mu_;
  // Guarded by mu_.
  std::map<std::pair<std::string, std::string>, std::unique_ptr<MethodMetrics>> methods_;
};

}  // namespace maskserve::server::metrics
