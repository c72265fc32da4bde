// Server configuration: absl flags, an optional JSON config file and
// MASKSERVE_* environment variables, merged into one ServerOptions.
// Precedence: command line > environment > config file > built-in default.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/cpu_budget.h"

namespace maskserve::server {

// One --model name=path entry.
struct ModelSpec {
  // Name clients use ([A-Za-z0-9_.-]{1,64}).
  std::string name;
  // HuggingFace checkpoint directory.
  std::string path;
};

struct ServerOptions {
  // Address the gRPC and metrics listeners bind to.
  std::string bind = "0.0.0.0";
  // gRPC port (0 = pick a free port and log it).
  int port = 50051;
  // Prometheus /metrics, /healthz, /readyz port (0 = pick a free port, -1 = off).
  int metrics_port = 9090;
  // Models to serve; empty = the generated demo model named "demo".
  std::vector<ModelSpec> models;
  // Where whitening profiles and the generated demo model live.
  std::string data_dir = "maskserve-data";
  // Embedding batching workers per model (0 = automatic, server/engine_threads.h:
  // 2 when the CPU budget has 2+ cores, each with half of it; generation keeps all).
  int workers = 0;
  // oneDNN/OpenMP threads per worker (0 = CPU budget / workers).
  int intra_op_threads = 0;
  // Compute precision: "float32", "bfloat16" or "auto" (bf16 where AMX exists).
  std::string dtype = "float32";
  // Largest request or response message in bytes.
  int64_t max_message_bytes = 64 << 20;
  // Most inputs (texts or id lists) in one Embed/Tokenize request.
  int max_inputs_per_request = 512;
  // Most tokens (after tokenisation, summed over inputs) in one request.
  int max_tokens_per_request = 131072;
  // Largest max_new_tokens a Generate request may ask for.
  int max_new_tokens = 4096;
  // Dynamic batching: most inputs in one engine batch.
  int max_batch_size = 32;
  // Dynamic batching: most real (unpadded) tokens in one engine batch.
  int max_batch_tokens = 16384;
  // Dynamic batching: longest time the oldest queued input waits for a batch.
  int64_t max_queue_delay_us = 2000;
  // Pending inputs per model beyond which requests get RESOURCE_EXHAUSTED.
  int max_queue_size = 4096;
  // Paged KV-cache pool size per generative model, in bytes.
  int64_t kv_cache_bytes = 512ll << 20;
  // On SIGTERM/SIGINT: how long in-flight requests may take to finish.
  double shutdown_grace_s = 30;
  // Close each client connection (GOAWAY) after this many seconds, 0 = never,
  // so clients balancing over a headless Service re-resolve its DNS name and
  // start using replicas added by scale-out.
  double max_connection_age_s = 0;
  // Minimum log level: debug, info, warn, error.
  std::string log_level = "info";
  // Serve gRPC server reflection.
  bool reflection = true;
  // TLS for gRPC: PEM certificate chain and its private key (both or neither).
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
  std::string tls_client_ca_file;
  // Serve the metrics port over HTTPS with the gRPC certificate (needs tls_cert_file).
  bool metrics_tls = false;
  // Bearer tokens and their scopes (server/auth/token_store.h); empty = no
  // authentication. Re-read on SIGHUP.
  std::string auth_tokens_file;
  // With authentication on: grpc.health.v1 needs no token.
  bool auth_open_health = true;
  // With authentication on: server reflection needs no token.
  bool auth_open_reflection = false;
  // Per principal (token; client address without authentication): most calls
  // in flight, 0 = unlimited. A token's own max_concurrent= overrides it.
  int limit_concurrency = 0;
  // Per principal: sustained calls per second, 0 = unlimited (token: rps=).
  double limit_rps = 0;
  // Per principal: calls allowed at once above the rate, 0 = max(1, rps) (token: burst=).
  double limit_burst = 0;
  // Refuse an Embed at once with RESOURCE_EXHAUSTED when the batching queue
  // ahead of it would outlast its deadline (instead of queueing it to expire).
  bool shed_on_deadline = true;
  // CPU cores this process may use (detected, not a flag).
  CpuBudget cpu;
};

// Parses argv (absl flags) and merges the config file / environment.
// Unknown flags and invalid values are errors naming the flag.
absl::StatusOr<ServerOptions> ParseServerOptions(int argc, char** argv);

// Checks ranges and model specs; messages name the flag.
absl::Status ValidateServerOptions(const ServerOptions& options);

// Parses "name=path" (or a bare path, named after its directory).
absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& text);

}  // namespace maskserve::server
