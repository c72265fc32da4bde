// A small HTTP server, on its own thread, for Prometheus scrapes and for
// liveness / readiness probes (Kubernetes httpGet probes, load balancers):
//   GET /metrics  the registry in text exposition format 0.0.4
//   GET /healthz  200 "ok" while the process runs
//   GET /readyz   200 "ready" when ready() is true, else 503 "not ready"
// Anything else is 404. Over HTTPS when given a certificate. Kept apart from the gRPC port so probes and scrapes
// never queue behind inference traffic.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/metrics/registry.h"

namespace httplib {
class Server;
}

namespace maskserve::server::metrics {

struct HttpExporterOptions {
  // Address to listen on ("0.0.0.0", "127.0.0.1", "::").
  std::string bind_address = "0.0.0.0";
  // TCP port; 0 picks a free one (see HttpExporter::port()).
  int port = 0;
  // Registry rendered on /metrics; must outlive the exporter. Required.
  const MetricsRegistry* registry = nullptr;
  // Readiness for /readyz, called on the HTTP thread; empty means always ready.
  std::function<bool()> ready;
  // HTTPS with this PEM certificate chain and private key (both or neither);
  // empty = plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
};

class HttpExporter {
 public:
  // Binds and starts serving; fails with a status naming address:port when
  // the port cannot be bound (e.g. already in use).
  static absl::StatusOr<std::unique_ptr<HttpExporter>> Create(const HttpExporterOptions& options);
  ~HttpExporter();
  HttpExporter(const HttpExporter&) = delete;
  HttpExporter& operator=(const HttpExporter&) = delete;

  // The bound port (the chosen one when options.port was 0).
  int port() const { return port_; }
  // Stops accepting, finishes in-flight requests and joins the thread.
  // Idempotent; also done by the destructor.
  void Shutdown();

 private:
  HttpExporter() = default;

  HttpExporterOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  int port_ = 0;
};

}  // namespace maskserve::server::metrics
