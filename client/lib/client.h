// C++ client for the maskserve v1 API (Models, Embedding, Generation) plus the
// standard grpc.health.v1 check. Wraps the generated stubs so callers get
// absl::StatusOr results, one place for deadlines, TLS, auth metadata and
// retries of idempotent unary calls on UNAVAILABLE.
//
// Thread-safe: one Client may be shared by any number of threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/health_check.h"
#include "maskserve/v1/embedding.grpc.pb.h"
#include "maskserve/v1/generation.grpc.pb.h"
#include "maskserve/v1/models.grpc.pb.h"

namespace maskserve::client {

struct ClientOptions {
  // host:port (or any gRPC target URI) of the server.
  std::string target = "localhost:50051";
  // Overall budget of one logical call, retries included; InfiniteDuration()
  // sets no deadline.
  absl::Duration default_deadline = absl::Seconds(30);
  // Extra attempts after an UNAVAILABLE failure of an idempotent unary call.
  int max_retries = 3;
  // Wait before the first retry; doubled per retry (with jitter).
  absl::Duration initial_backoff = absl::Milliseconds(100);
  // Upper bound of the wait between retries.
  absl::Duration max_backoff = absl::Seconds(2);
  // Use TLS; implied when any tls_* file below is set.
  bool use_tls = false;
  // PEM file of root CAs to trust; empty = the system roots.
  std::string tls_root_ca_file;
  // PEM client certificate chain for mutual TLS (needs tls_key_file too).
  std::string tls_cert_file;
  // PEM private key of tls_cert_file.
  std::string tls_key_file;
  // Expected server name in the certificate when it differs from the target
  // host (tests, IP targets).
  std::string tls_server_name_override;
  // Sent as `authorization: Bearer <token>` on every call when non-empty.
  std::string bearer_token;
  // Largest message sent or received, in bytes (embeddings of big batches
  // and exported whitening profiles exceed gRPC's 4 MiB default).
  int max_message_bytes = 64 << 20;
  // Metadata added to every call, e.g. {"x-request-id", "..."}; keys are
  // sent lower-cased and must not start with "grpc-".
  std::vector<std::pair<std::string, std::string>> metadata;
  // gRPC load-balancing policy over the addresses `target` resolves to:
  // "" or "pick_first" (gRPC's default: one connection) or "round_robin"
  // (a connection to every address, calls spread over them; use it with a
  // Kubernetes headless Service, dns:///maskserve-headless.<ns>.svc:50051).
  std::string load_balancing_policy;
  // Give this client its own TCP connection even when another Client in the
  // process targets the same server (load generators spreading load).
  bool own_connection = false;
};

// Per-call overrides.
struct CallOptions {
  // Overrides ClientOptions::default_deadline when set.
  std::optional<absl::Duration> deadline;
  // Added after ClientOptions::metadata (e.g. a per-request x-request-id).
  std::vector<std::pair<std::string, std::string>> metadata;
};

// Hyper-parameters of FitWhitening besides model and profile name.
struct FitWhiteningParams {
  // Output dimensions; 0 = hidden size.
  int k = 0;
  // Mean-shift weight in [0, 1]; unset = server default (1).
  std::optional<float> beta;
  // Variance-scaling exponent in [0, 1]; unset = server default (1).
  std::optional<float> gamma;
  // Pooling to fit with; UNSPECIFIED = server default (FIRST_LAST_AVG).
  v1::Pooling pooling = v1::POOLING_UNSPECIFIED;
  // Truncate over-long texts instead of failing.
  bool truncate = false;
};

// Supplies FitWhitening's texts one batch at a time so a corpus of any size
// streams with bounded memory. Returns the next batch; an empty batch ends
// the stream; an error aborts the call with that error.
using TextSource = std::function<absl::StatusOr<std::vector<std::string>>()>;

// Called after each batch was handed to gRPC with the running totals.
using FitProgressCallback =
    std::function<void(int64_t texts_sent, int64_t batches_sent)>;

// Called for every GenerateStream message; return false to cancel the call
// (GenerateStream then returns CANCELLED).
using GenerateStreamCallback =
    std::function<bool(const v1::GenerateStreamResponse&)>;

class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      const ClientOptions& options);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Models.
  absl::StatusOr<v1::ListModelsResponse> ListModels(
      const CallOptions& call = {});
  absl::StatusOr<v1::ModelInfo> GetModel(const std::string& name,
                                         const CallOptions& call = {});

  // Embedding.
  absl::StatusOr<v1::EmbedResponse> Embed(const v1::EmbedRequest& request,
                                          const CallOptions& call = {});
  absl::StatusOr<v1::TokenizeResponse> Tokenize(
      const v1::TokenizeRequest& request, const CallOptions& call = {});
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(
      const v1::DetokenizeRequest& request, const CallOptions& call = {});
  // Streams every batch of `next_batch` (the first message carries model,
  // profile and params). Retried on UNAVAILABLE only while no message has
  // been written yet.
  absl::StatusOr<v1::WhiteningProfile> FitWhitening(
      const std::string& model, const std::string& profile,
      const FitWhiteningParams& params, const TextSource& next_batch,
      const FitProgressCallback& progress = nullptr,
      const CallOptions& call = {});
  absl::StatusOr<v1::WhiteningProfile> GetWhitening(
      const v1::GetWhiteningRequest& request, const CallOptions& call = {});
  absl::StatusOr<v1::ListWhiteningResponse> ListWhitening(
      const std::string& model, const CallOptions& call = {});
  absl::StatusOr<v1::DeleteWhiteningResponse> DeleteWhitening(
      const std::string& model, const std::string& profile,
      const CallOptions& call = {});
  // Retried only with overwrite = true (a retry after a lost success would
  // otherwise fail with ALREADY_EXISTS).
  absl::StatusOr<v1::WhiteningProfile> ImportWhitening(
      const v1::ImportWhiteningRequest& request, const CallOptions& call = {});

  // Generation.
  absl::StatusOr<v1::GenerateResponse> Generate(
      const v1::GenerateRequest& request, const CallOptions& call = {});
  // Calls on_message for each streamed delta. Retried on UNAVAILABLE only
  // while no message has arrived.
  absl::Status GenerateStream(const v1::GenerateRequest& request,
                              const GenerateStreamCallback& on_message,
                              const CallOptions& call = {});
  absl::StatusOr<v1::ParaphraseResponse> Paraphrase(
      const v1::ParaphraseRequest& request, const CallOptions& call = {});

  // grpc.health.v1.Health/Check for `service` ("" = the whole server).
  absl::StatusOr<HealthStatus> Health(const std::string& service = "",
                                      const CallOptions& call = {});

  // The underlying channel (e.g. to wait for it to connect).
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }

 private:
  Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel);

  // Deadline of a logical call that starts now.
  absl::Time DeadlineFor(const CallOptions& call) const;
  void PrepareContext(grpc::ClientContext* ctx, const CallOptions& call,
                      absl::Time deadline) const;
  // Sleeps before retry number `retry` (0-based) and returns true, or
  // returns false when no retry is left or the wait would pass `deadline`.
  bool BackoffBeforeRetry(int retry, absl::Time deadline) const;

  // Runs `rpc(ctx, &response)` with retries when `idempotent`.
  template <typename Response, typename Rpc>
  absl::StatusOr<Response> CallUnary(const CallOptions& call, bool idempotent,
                                     Rpc&& rpc);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::unique_ptr<v1::Embedding::Stub> embedding_;
  std::unique_ptr<v1::Generation::Stub> generation_;
};

// grpc::Status -> absl::Status, same code and message.
absl::Status ToAbslStatus(const grpc::Status& status);

// Reads a file with one text per line (blank lines skipped, trailing '\r'
// removed) and hands out batches of up to batch_size lines. The file is read
// lazily, so memory stays bounded by one batch.
absl::StatusOr<TextSource> FileTextSource(const std::string& path,
                                          int batch_size);

// Hands out `texts` in batches of up to batch_size.
TextSource VectorTextSource(std::vector<std::string> texts, int batch_size);

}  // namespace maskserve::client
