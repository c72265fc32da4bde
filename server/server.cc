#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/demo_model.h"
#include "engine/onednn/engine_context.h"
#include "server/engine_threads.h"
#include "server/logging.h"
#include "server/metrics/process_metrics.h"
#include "server/services/embedding_service.h"
#include "server/services/generation_service.h"
#include "server/services/models_service.h"

namespace maskserve::server {
namespace {

absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in || ss.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read '", path, "'"));
  }
  return ss.str();
}

// Insecure, TLS, or mutual TLS, from the --tls_* flags.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const ServerOptions& o) {
  if (o.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = ReadPem("tls_cert_file", o.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("tls_key_file", o.tls_key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!o.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls_client_ca_file", o.tls_client_ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

// Feeds finished RPCs into maskserve_requests_total / _duration_seconds.
// Also counts calls in flight, so shutdown can drain them before stopping
// the gRPC server.
class Server::MetricsObserver : public RpcObserver {
 public:
  explicit MetricsObserver(metrics::ServerMetrics* m) : m_(m) {}
  void OnRpcStart(absl::string_view service, absl::string_view method) override {
    For(service, method)->Started();
    std::lock_guard<std::mutex> lock(mu_);
    ++inflight_;
  }
  void OnRpcDone(absl::string_view service, absl::string_view method, int code,
                 double seconds) override {
    For(service, method)->Finished(code, seconds);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --inflight_;
    }
    idle_cv_.notify_all();
  }
  // Waits until no call is in flight or `deadline` passes; returns the count left.
  int WaitIdle(absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return inflight_ == 0; });
    return inflight_;
  }

 private:
  metrics::MethodMetrics* For(absl::string_view service, absl::string_view method) {
    return m_->ForMethod(std::string(service), std::string(method));
  }
  metrics::ServerMetrics* m_;
  // std:: synchronisation throughout the server: Debian's Abseil is not built
  // with TSan, which then cannot see absl::Mutex (make test-tsan).
  std::mutex mu_;
  std::condition_variable idle_cv_;  // signalled when a call finishes
  int inflight_ = 0;                 // guarded by mu_
};

absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> LoadModelForServing(
    const ModelSpec& spec, const ServerOptions& options) {
  const std::string demo_dir = options.data_dir + "/demo-model";
  if (spec.path == demo_dir && !engine::DemoModelUpToDate(demo_dir)) {
    LogEvent(LogLevel::kInfo, "demo_model_generate", {{"path", demo_dir}});
    if (absl::Status s = engine::WriteDemoModel(demo_dir); !s.ok()) return s;
  }
  engine::LoadOptions lo;
  lo.path = spec.path;
  // auto: bfloat16 where AMX runs it, else float32 (engine::AutoComputeDtype).
  lo.dtype = options.dtype == "bfloat16" ? engine::ComputeDtype::kBFloat16
             : options.dtype == "auto"   ? engine::AutoComputeDtype()
                                         : engine::ComputeDtype::kFloat32;
  absl::StatusOr<std::unique_ptr<engine::LoadedModel>> model = engine::LoadedModel::Load(lo);
  if (!model.ok()) return model.status();
  return std::shared_ptr<const engine::LoadedModel>(std::move(*model));
}

Server::Server(const ServerOptions& options) : options_(options) {}

Server::~Server() { Shutdown(0); }

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerOptions& options_in) {
  ServerOptions options = options_in;
  if (options.models.empty()) {
    options.models.push_back({"demo", options.data_dir + "/demo-model"});
  }
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--data_dir: cannot create '", options.data_dir, "': ", ec.message()));
  }

  std::unique_ptr<Server> s(new Server(options));
  absl::StatusOr<std::unique_ptr<metrics::ServerMetrics>> sm =
      metrics::ServerMetrics::Create(&s->metrics_registry_);
  if (!sm.ok()) return sm.status();
  s->server_metrics_ = std::move(*sm);
  metrics::RegisterProcessCollector(&s->metrics_registry_);
  s->observer_ = std::make_unique<MetricsObserver>(s->server_metrics_.get());

  AccessControlOptions ao;
  ao.tokens_file = s->options_.auth_tokens_file;
  ao.open_health = s->options_.auth_open_health;
  ao.open_reflection = s->options_.auth_open_reflection;
  ao.default_limits.max_concurrent = s->options_.limit_concurrency;
  ao.default_limits.rps = s->options_.limit_rps;
  ao.default_limits.burst = s->options_.limit_burst;
  ao.registry = &s->metrics_registry_;
  absl::StatusOr<std::unique_ptr<AccessController>> access = AccessController::Create(ao);
  if (!access.ok()) return access.status();
  s->access_ = std::move(*access);
  struct stat st {};
  if (s->access_->auth_enabled() && ::stat(s->options_.auth_tokens_file.c_str(), &st) == 0 &&
      (st.st_mode & (S_IROTH | S_IWOTH)) != 0) {
    LogEvent(LogLevel::kWarning, "auth_tokens_file_permissions",
             {{"path", s->options_.auth_tokens_file},
              {"advice", "other users can read it; chmod 600 (or store sha256: digests)"}});
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentialsFor(s->options_);
  if (!credentials.ok()) return credentials.status();

  Server* self = s.get();
  s->registry_ = std::make_unique<ModelRegistry>(s->options_.models, [self](const ModelSpec& spec) {
    return LoadModelForServing(spec, self->options_);
  });
  for (const ModelSpec& m : s->options_.models) {
    s->server_metrics_->model_ready->WithLabels({m.name})->Set(0);
  }
  s->registry_->AddListener([self](const ModelSnapshot& snap) { self->OnModelStateChange(snap); });

  // Engine threads (server/engine_threads.h); the embedding workers set
  // their own count on their first batch.
  const EngineThreadPlan threads = PlanEngineThreads(
      s->options_.workers, s->options_.intra_op_threads, s->options_.cpu.usable_cores);
  engine::SetNumThreads(threads.engine_threads);

  WorkerPoolOptions po;
  po.num_threads = s->options_.cpu.usable_cores;
  po.name = "cpu";
  absl::StatusOr<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create(po);
  if (!pool.ok()) return pool.status();
  s->cpu_pool_ = std::move(*pool);

  absl::StatusOr<std::unique_ptr<WhiteningStore>> store = WhiteningStore::Open(s->options_.data_dir);
  if (!store.ok()) return store.status();
  s->whitening_ = std::move(*store);
  for (const std::string& w : s->whitening_->open_warnings()) {
    LogEvent(LogLevel::kWarning, "whitening_profile_skipped", {{"reason", w}});
  }

  s->models_service_ = std::make_unique<ModelsService>(s->registry_.get(), s->whitening_.get());
  EmbeddingService::Deps deps;
  deps.registry = s->registry_.get();
  deps.options = &s->options_;
  deps.pool = s->cpu_pool_.get();
  deps.whitening = s->whitening_.get();
  deps.metrics = &s->metrics_registry_;
  s->embedding_service_ = std::make_unique<EmbeddingService>(deps);
  GenerationService::Deps gdeps;
  gdeps.registry = s->registry_.get();
  gdeps.options = &s->options_;
  gdeps.pool = s->cpu_pool_.get();
  gdeps.embedding = s->embedding_service_.get();
  gdeps.metrics = &s->metrics_registry_;
  s->generation_service_ = std::make_unique<GenerationService>(gdeps);

  grpc::EnableDefaultHealthCheckService(true);
  if (s->options_.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string addr = absl::StrCat(s->options_.bind.find(':') != std::string::npos
                                            ? absl::StrCat("[", s->options_.bind, "]")
                                            : s->options_.bind,
                                        ":", s->options_.port);
  builder.AddListeningPort(addr, *credentials, &s->grpc_port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(s->options_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(s->options_.max_message_bytes));
  if (s->options_.max_connection_age_s > 0) {
    // Calls in flight on a connection being aged out get as long to finish
    // as they would get at shutdown.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(std::min(s->options_.max_connection_age_s * 1e3,
                                                         2147483647.0)));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(std::min(s->options_.shutdown_grace_s * 1e3,
                                                         2147483647.0)));
  }
  builder.RegisterService(s->models_service_.get());
  builder.RegisterService(s->embedding_service_.get());
  builder.RegisterService(s->generation_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(
      std::make_unique<RequestInterceptorFactory>(
          s->observer_.get(), s->access_.get(),
          [registry = s->registry_.get()] { return registry->AcceptingWork(); }));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  s->grpc_server_ = builder.BuildAndStart();
  if (s->grpc_server_ == nullptr || s->grpc_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", addr, " (address in use or not available)"));
  }
  s->UpdateHealth();

  if (s->options_.metrics_port >= 0) {
    metrics::HttpExporterOptions eo;
    eo.bind_address = s->options_.bind;
    eo.port = s->options_.metrics_port;
    eo.registry = &s->metrics_registry_;
    eo.ready = [self] { return self->Ready(); };
    if (s->options_.metrics_tls) {
      eo.tls_cert_file = s->options_.tls_cert_file;
      eo.tls_key_file = s->options_.tls_key_file;
    }
    absl::StatusOr<std::unique_ptr<metrics::HttpExporter>> ex = metrics::HttpExporter::Create(eo);
    if (!ex.ok()) {
      s->grpc_server_->Shutdown();
      return ex.status();
    }
    s->exporter_ = std::move(*ex);
  }

  std::vector<std::string> names;
  for (const ModelSpec& m : s->options_.models) names.push_back(m.name + "=" + m.path);
  LogEvent(LogLevel::kInfo, "listening",
           {{"grpc", absl::StrCat(s->options_.bind, ":", s->grpc_port_)},
            {"metrics", s->exporter_ ? absl::StrCat(s->options_.metrics_tls ? "https://" : "http://",
                                                    s->options_.bind, ":", s->exporter_->port(),
                                                    "/metrics")
                                     : std::string("off")},
            {"tls", s->options_.tls_cert_file.empty()          ? "off"
                    : s->options_.tls_client_ca_file.empty() ? "on"
                                                               : "mutual"},
            {"auth", s->access_->auth_enabled() ? "bearer" : "off"},
            {"models", absl::StrJoin(names, ",")},
            {"cpu_cores", absl::StrCat(s->options_.cpu.usable_cores)},
            {"cpu_source", s->options_.cpu.source}});
  s->registry_->Start();
  return s;
}

void Server::OnModelStateChange(const ModelSnapshot& snap) {
  const bool ready = snap.state == ModelState::kReady;
  server_metrics_->model_ready->WithLabels({snap.spec.name})->Set(ready ? 1 : 0);
  server_metrics_->model_load_seconds->WithLabels({snap.spec.name})->Set(snap.load_seconds);
  if (ready) {
    const engine::ModelDescription& d = snap.model->description();
    LogEvent(LogLevel::kInfo, "model_ready",
             {{"model", snap.spec.name},
              {"path", snap.spec.path},
              {"architecture", d.architecture},
              {"dtype", engine::ComputeDtypeName(d.dtype)},
              {"load_ms", absl::StrCat(static_cast<int64_t>(snap.load_seconds * 1e3))}});
  } else {
    LogEvent(LogLevel::kError, "model_failed",
             {{"model", snap.spec.name}, {"path", snap.spec.path}, {"error", snap.error}});
  }
  UpdateHealth();
}

bool Server::Ready() const {
  if (shutting_down_.load()) return false;
  if (!registry_->AllSettled()) return false;
  for (const ModelSnapshot& s : registry_->List()) {
    if (s.state == ModelState::kReady) return true;
  }
  return false;
}

void Server::UpdateHealth() {
  if (grpc_server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  if (health == nullptr) return;
  const bool settled = registry_->AllSettled() && !shutting_down_.load();
  bool any_ready = false, embed_ready = false, generate_ready = false;
  for (const ModelSnapshot& s : registry_->List()) {
    if (s.state != ModelState::kReady) continue;
    any_ready = true;
    for (engine::ModelTask t : s.model->description().tasks) {
      if (t == engine::ModelTask::kEmbed) embed_ready = true;
      if (t == engine::ModelTask::kGenerate) generate_ready = true;
    }
  }
  health->SetServingStatus("", settled && any_ready);
  health->SetServingStatus(kModelsServiceName, settled && any_ready);
  health->SetServingStatus(kEmbeddingServiceName, settled && embed_ready);
  health->SetServingStatus(kGenerationServiceName, settled && generate_ready);
}

void Server::Shutdown(double grace_s) {
  {
    std::lock_guard<std::mutex> lock(shutdown_mu_);
    if (shutdown_done_ || grpc_server_ == nullptr) {
      shutdown_done_ = true;
      shutdown_cv_.notify_all();
      return;
    }
  }
  if (!shutting_down_.exchange(true)) {
    LogEvent(LogLevel::kInfo, "shutdown_begin", {{"grace_s", absl::StrCat(grace_s)}});
    // Tell load balancers first and refuse new model work (UNAVAILABLE, so
    // clients retry elsewhere), then let in-flight calls finish. gRPC's own
    // Shutdown() runs only after the drain: it closes a connection once its
    // GOAWAY is acknowledged, which can cut off a response still being written.
    grpc_server_->GetHealthCheckService()->Shutdown();
    registry_->SetDraining();
    const absl::Time deadline = absl::Now() + absl::Seconds(grace_s);
    const int left = observer_->WaitIdle(deadline);
    if (left > 0) {
      LogEvent(LogLevel::kWarning, "shutdown_grace_expired",
               {{"cancelled_calls", absl::StrCat(left)}});
    }
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc_server_->Wait();
    if (exporter_) exporter_->Shutdown();
    LogEvent(LogLevel::kInfo, "shutdown_done", {});
    {
      std::lock_guard<std::mutex> lock(shutdown_mu_);
      shutdown_done_ = true;
    }
    shutdown_cv_.notify_all();
  } else {
    Wait();
  }
}

absl::Status Server::ReloadAuth() {
  if (!access_->auth_enabled()) {
    LogEvent(LogLevel::kInfo, "sighup", {{"action", "nothing to reload (no --auth_tokens_file)"}});
    return absl::OkStatus();
  }
  absl::StatusOr<size_t> n = access_->Reload();
  if (!n.ok()) {
    // The message names the file and line, never a token.
    LogEvent(LogLevel::kError, "auth_reload_failed",
             {{"error", std::string(n.status().message())}, {"kept", "previous tokens"}});
    return n.status();
  }
  LogEvent(LogLevel::kInfo, "auth_reloaded", {{"tokens", absl::StrCat(*n)}});
  return absl::OkStatus();
}

void Server::Wait() {
  std::unique_lock<std::mutex> lock(shutdown_mu_);
  shutdown_cv_.wait(lock, [this] { return shutdown_done_; });
}

}  // namespace maskserve::server
