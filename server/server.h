// The maskserve process minus main(): builds the model registry, the gRPC
// server (services, health, reflection, interceptors) and the metrics
// endpoint from ServerOptions, and shuts them down gracefully.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "server/auth/access_control.h"
#include "server/config.h"
#include "server/metrics/http_exporter.h"
#include "server/metrics/registry.h"
#include "server/metrics/server_metrics.h"
#include "server/model_registry.h"
#include "server/request_interceptor.h"
#include "server/scheduler/worker_pool.h"
#include "server/whitening_store.h"

namespace maskserve::server {

class EmbeddingService;
class GenerationService;
class ModelsService;

// gRPC service names as the health service reports them.
inline constexpr char kModelsServiceName[] = "maskserve.v1.Models";
inline constexpr char kEmbeddingServiceName[] = "maskserve.v1.Embedding";
inline constexpr char kGenerationServiceName[] = "maskserve.v1.Generation";

class Server {
 public:
  // Binds the ports and starts loading models in the background. Health
  // reports NOT_SERVING until the models a service needs are loaded.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerOptions& options);
  ~Server();

  // Bound ports (useful when the options asked for port 0).
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return exporter_ ? exporter_->port() : -1; }

  const ModelRegistry& registry() const { return *registry_; }

  // True once every model has settled and at least one is READY.
  bool Ready() const;

  // Graceful shutdown: health goes NOT_SERVING, no new calls are accepted,
  // in-flight calls get until `grace_s` to finish, then are cancelled.
  void Shutdown(double grace_s);

  // Blocks until Shutdown() has completed.
  void Wait();

  // SIGHUP: re-reads --auth_tokens_file (the old tokens stay in force when
  // it does not parse) and logs the outcome, never a token.
  absl::Status ReloadAuth();

 private:
  class MetricsObserver;

  explicit Server(const ServerOptions& options);
  void OnModelStateChange(const ModelSnapshot& snap);
  void UpdateHealth();

  ServerOptions options_;
  metrics::MetricsRegistry metrics_registry_;
  std::unique_ptr<metrics::ServerMetrics> server_metrics_;
  std::unique_ptr<MetricsObserver> observer_;
  // Authentication, scopes and per-principal limits (server/auth/).
  std::unique_ptr<AccessController> access_;
  std::unique_ptr<ModelRegistry> registry_;
  // CPU work of handlers (tokenisation ...); sized from the CPU budget.
  std::unique_ptr<WorkerPool> cpu_pool_;
  // Whitening profiles under --data_dir, loaded at start-up.
  std::unique_ptr<WhiteningStore> whitening_;
  std::unique_ptr<ModelsService> models_service_;
  std::unique_ptr<EmbeddingService> embedding_service_;
  std::unique_ptr<GenerationService> generation_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<metrics::HttpExporter> exporter_;
  int grpc_port_ = 0;
  std::atomic<bool> shutting_down_{false};
  std::mutex shutdown_mu_;
  std::condition_variable shutdown_cv_;  // signalled when shutdown_done_ turns true
  bool shutdown_done_ = false;           // guarded by shutdown_mu_
};

// Loads one configured model (the loader the registry uses in production):
// generates the demo model first when spec.path is the demo directory.
absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> LoadModelForServing(
    const ModelSpec& spec, const ServerOptions& options);

}  // namespace maskserve::server
