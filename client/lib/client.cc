#include "client/lib/client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace maskserve::client {
namespace {

absl::StatusOr<std::string> ReadPemFile(const std::string& path,
                                        const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", what, " file '",
                                            path, "'"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeCredentials(
    const ClientOptions& options) {
  const bool tls = options.use_tls || !options.tls_root_ca_file.empty() ||
                   !options.tls_cert_file.empty() ||
                   !options.tls_key_file.empty();
  if (!tls) return grpc::InsecureChannelCredentials();
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "mutual TLS needs both a client certificate and its key");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_root_ca_file.empty()) {
    auto ca = ReadPemFile(options.tls_root_ca_file, "TLS root CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    auto cert = ReadPemFile(options.tls_cert_file, "TLS client certificate");
    if (!cert.ok()) return cert.status();
    auto key = ReadPemFile(options.tls_key_file, "TLS client key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

// Multiplies by a uniform factor in [0.8, 1.2] so that clients failing
// together do not retry in lock-step.
absl::Duration Jitter(absl::Duration d) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> factor(0.8, 1.2);
  return d * factor(rng);
}

}  // namespace

absl::Status ToAbslStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share the canonical numbering.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(
    const ClientOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("client target is empty");
  }
  if (options.max_retries < 0) {
    return absl::InvalidArgumentError("max_retries must be >= 0");
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes must be > 0");
  }
  for (const auto& [key, value] : options.metadata) {
    if (key.empty() || absl::StartsWithIgnoreCase(key, "grpc-")) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid metadata key '", key, "'"));
    }
  }
  const std::string& lb = options.load_balancing_policy;
  if (!lb.empty() && lb != "pick_first" && lb != "round_robin") {
    return absl::InvalidArgumentError(absl::StrCat(
        "load balancing policy must be pick_first or round_robin, got '", lb, "'"));
  }
  auto creds = MakeCredentials(options);
  if (!creds.ok()) return creds.status();

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.tls_server_name_override.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name_override);
  }
  if (!lb.empty()) args.SetLoadBalancingPolicyName(lb);
  if (options.own_connection) {
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  auto channel = grpc::CreateCustomChannel(options.target, *creds, args);
  if (channel == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a channel to ", options.target));
  }
  return std::unique_ptr<Client>(new Client(options, std::move(channel)));
}

Client::Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      models_(v1::Models::NewStub(channel_)),
      embedding_(v1::Embedding::NewStub(channel_)),
      generation_(v1::Generation::NewStub(channel_)) {}

absl::Time Client::DeadlineFor(const CallOptions& call) const {
  const absl::Duration budget = call.deadline.value_or(options_.default_deadline);
  if (budget == absl::InfiniteDuration()) return absl::InfiniteFuture();
  return absl::Now() + budget;
}

void Client::PrepareContext(grpc::ClientContext* ctx, const CallOptions& call,
                            absl::Time deadline) const {
  if (deadline != absl::InfiniteFuture()) {
    ctx->set_deadline(absl::ToChronoTime(deadline));
  }
  if (!options_.bearer_token.empty()) {
    ctx->AddMetadata("authorization",
                     absl::StrCat("Bearer ", options_.bearer_token));
  }
  // gRPC rejects upper-case keys; HTTP/2 header names are case-insensitive
  // anyway, so normalise instead of failing the call.
  for (const auto* list : {&options_.metadata, &call.metadata}) {
    for (const auto& [key, value] : *list) {
      ctx->AddMetadata(absl::AsciiStrToLower(key), value);
    }
  }
}

bool Client::BackoffBeforeRetry(int retry, absl::Time deadline) const {
  if (retry >= options_.max_retries) return false;
  absl::Duration wait = options_.initial_backoff;
  for (int i = 0; i < retry && wait < options_.max_backoff; ++i) wait *= 2;
  wait = Jitter(std::min(wait, options_.max_backoff));
  // A retry that could not start before the deadline would only turn the
  // real error into DEADLINE_EXCEEDED.
  if (absl::Now() + wait >= deadline) return false;
  absl::SleepFor(wait);
  return true;
}

template <typename Response, typename Rpc>
absl::StatusOr<Response> Client::CallUnary(const CallOptions& call,
                                           bool idempotent, Rpc&& rpc) {
  const absl::Time deadline = DeadlineFor(call);
  for (int retry = 0;; ++retry) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, call, deadline);
    Response response;
    const grpc::Status status = rpc(&ctx, &response);
    if (status.ok()) return response;
    if (!idempotent || status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        !BackoffBeforeRetry(retry, deadline)) {
      return ToAbslStatus(status);
    }
  }
}

absl::StatusOr<v1::ListModelsResponse> Client::ListModels(
    const CallOptions& call) {
  v1::ListModelsRequest request;
  return CallUnary<v1::ListModelsResponse>(
      call, true, [&](grpc::ClientContext* ctx, v1::ListModelsResponse* out) {
        return models_->ListModels(ctx, request, out);
      });
}

absl::StatusOr<v1::ModelInfo> Client::GetModel(const std::string& name,
                                               const CallOptions& call) {
  v1::GetModelRequest request;
  request.set_name(name);
  return CallUnary<v1::ModelInfo>(
      call, true, [&](grpc::ClientContext* ctx, v1::ModelInfo* out) {
        return models_->GetModel(ctx, request, out);
      });
}

absl::StatusOr<v1::EmbedResponse> Client::Embed(const v1::EmbedRequest& request,
                                                const CallOptions& call) {
  return CallUnary<v1::EmbedResponse>(
      call, true, [&](grpc::ClientContext* ctx, v1::EmbedResponse* out) {
        return embedding_->Embed(ctx, request, out);
      });
}

absl::StatusOr<v1::TokenizeResponse> Client::Tokenize(
    const v1::TokenizeRequest& request, const CallOptions& call) {
  return CallUnary<v1::TokenizeResponse>(
      call, true, [&](grpc::ClientContext* ctx, v1::TokenizeResponse* out) {
        return embedding_->Tokenize(ctx, request, out);
      });
}

absl::StatusOr<v1::DetokenizeResponse> Client::Detokenize(
    const v1::DetokenizeRequest& request, const CallOptions& call) {
  return CallUnary<v1::DetokenizeResponse>(
      call, true, [&](grpc::ClientContext* ctx, v1::DetokenizeResponse* out) {
        return embedding_->Detokenize(ctx, request, out);
      });
}

absl::StatusOr<v1::WhiteningProfile> Client::FitWhitening(
    const std::string& model, const std::string& profile,
    const FitWhiteningParams& params, const TextSource& next_batch,
    const FitProgressCallback& progress, const CallOptions& call) {
  if (!next_batch) return absl::InvalidArgumentError("FitWhitening: no text source");
  const absl::Time deadline = DeadlineFor(call);

  v1::FitWhiteningRequest first;
  first.set_model(model);
  first.set_profile(profile);
  first.set_k(params.k);
  if (params.beta) first.set_beta(*params.beta);
  if (params.gamma) first.set_gamma(*params.gamma);
  first.set_pooling(params.pooling);
  first.set_truncate(params.truncate);
  // The first batch rides on the header message. It is kept until a write
  // went through, so that a connection failure before that can be retried.
  auto batch = next_batch();
  if (!batch.ok()) return batch.status();
  for (std::string& text : *batch) first.add_texts(std::move(text));

  for (int retry = 0;; ++retry) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, call, deadline);
    v1::WhiteningProfile response;
    auto writer = embedding_->FitWhitening(&ctx, &response);
    int64_t texts_sent = 0;
    int64_t batches_sent = 0;
    absl::Status source_error;
    if (writer->Write(first)) {
      texts_sent += first.texts_size();
      ++batches_sent;
      if (progress) progress(texts_sent, batches_sent);
      while (true) {
        auto more = next_batch();
        if (!more.ok()) {
          source_error = more.status();
          ctx.TryCancel();
          break;
        }
        if (more->empty()) break;
        v1::FitWhiteningRequest message;
        for (std::string& text : *more) message.add_texts(std::move(text));
        // A failed write means the call is over; Finish says why.
        if (!writer->Write(message)) break;
        texts_sent += message.texts_size();
        ++batches_sent;
        if (progress) progress(texts_sent, batches_sent);
      }
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    if (!source_error.ok()) return source_error;
    if (status.ok()) return response;
    if (batches_sent > 0 ||
        status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        !BackoffBeforeRetry(retry, deadline)) {
      return ToAbslStatus(status);
    }
  }
}

absl::StatusOr<v1::WhiteningProfile> Client::GetWhitening(
    const v1::GetWhiteningRequest& request, const CallOptions& call) {
  return CallUnary<v1::WhiteningProfile>(
      call, true, [&](grpc::ClientContext* ctx, v1::WhiteningProfile* out) {
        return embedding_->GetWhitening(ctx, request, out);
      });
}

absl::StatusOr<v1::ListWhiteningResponse> Client::ListWhitening(
    const std::string& model, const CallOptions& call) {
  v1::ListWhiteningRequest request;
  request.set_model(model);
  return CallUnary<v1::ListWhiteningResponse>(
      call, true, [&](grpc::ClientContext* ctx, v1::ListWhiteningResponse* out) {
        return embedding_->ListWhitening(ctx, request, out);
      });
}

absl::StatusOr<v1::DeleteWhiteningResponse> Client::DeleteWhitening(
    const std::string& model, const std::string& profile,
    const CallOptions& call) {
  v1::DeleteWhiteningRequest request;
  request.set_model(model);
  request.set_profile(profile);
  // UNAVAILABLE means the call did not reach the handler (or the server went
  // away mid-call); deleting twice leaves the same state.
  return CallUnary<v1::DeleteWhiteningResponse>(
      call, true,
      [&](grpc::ClientContext* ctx, v1::DeleteWhiteningResponse* out) {
        return embedding_->DeleteWhitening(ctx, request, out);
      });
}

absl::StatusOr<v1::WhiteningProfile> Client::ImportWhitening(
    const v1::ImportWhiteningRequest& request, const CallOptions& call) {
  return CallUnary<v1::WhiteningProfile>(
      call, request.overwrite(),
      [&](grpc::ClientContext* ctx, v1::WhiteningProfile* out) {
        return embedding_->ImportWhitening(ctx, request, out);
      });
}

absl::StatusOr<v1::GenerateResponse> Client::Generate(
    const v1::GenerateRequest& request, const CallOptions& call) {
  return CallUnary<v1::GenerateResponse>(
      call, true, [&](grpc::ClientContext* ctx, v1::GenerateResponse* out) {
        return generation_->Generate(ctx, request, out);
      });
}

absl::Status Client::GenerateStream(const v1::GenerateRequest& request,
                                    const GenerateStreamCallback& on_message,
                                    const CallOptions& call) {
  const absl::Time deadline = DeadlineFor(call);
  for (int retry = 0;; ++retry) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, call, deadline);
    auto reader = generation_->GenerateStream(&ctx, request);
    v1::GenerateStreamResponse message;
    int64_t received = 0;
    bool cancelled = false;
    while (reader->Read(&message)) {
      ++received;
      if (on_message && !on_message(message)) {
        cancelled = true;
        ctx.TryCancel();
        break;
      }
    }
    const grpc::Status status = reader->Finish();
    if (cancelled) return absl::CancelledError("stream cancelled by the caller");
    if (status.ok()) return absl::OkStatus();
    // Once the caller has seen output a retry would repeat it.
    if (received > 0 || status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        !BackoffBeforeRetry(retry, deadline)) {
      return ToAbslStatus(status);
    }
  }
}

absl::StatusOr<v1::ParaphraseResponse> Client::Paraphrase(
    const v1::ParaphraseRequest& request, const CallOptions& call) {
  return CallUnary<v1::ParaphraseResponse>(
      call, true, [&](grpc::ClientContext* ctx, v1::ParaphraseResponse* out) {
        return generation_->Paraphrase(ctx, request, out);
      });
}

absl::StatusOr<HealthStatus> Client::Health(const std::string& service,
                                            const CallOptions& call) {
  const absl::Time deadline = DeadlineFor(call);
  for (int retry = 0;; ++retry) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, call, deadline);
    auto result = HealthCheck(channel_, &ctx, service);
    if (result.ok() || result.status().code() != absl::StatusCode::kUnavailable ||
        !BackoffBeforeRetry(retry, deadline)) {
      return result;
    }
  }
}

absl::StatusOr<TextSource> FileTextSource(const std::string& path,
                                          int batch_size) {
  if (batch_size <= 0) return absl::InvalidArgumentError("batch size must be > 0");
  auto in = std::make_shared<std::ifstream>(path);
  if (!*in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  return TextSource([in, batch_size, path]()
                        -> absl::StatusOr<std::vector<std::string>> {
    std::vector<std::string> batch;
    std::string line;
    while (static_cast<int>(batch.size()) < batch_size &&
           std::getline(*in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      batch.push_back(std::move(line));
    }
    if (in->bad()) return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
    return batch;
  });
}

TextSource VectorTextSource(std::vector<std::string> texts, int batch_size) {
  auto data = std::make_shared<std::vector<std::string>>(std::move(texts));
  auto next = std::make_shared<size_t>(0);
  const size_t step = static_cast<size_t>(std::max(1, batch_size));
  return [data, next, step]() -> absl::StatusOr<std::vector<std::string>> {
    const size_t end = std::min(data->size(), *next + step);
    std::vector<std::string> batch(data->begin() + *next, data->begin() + end);
    *next = end;
    return batch;
  };
}

}  // namespace maskserve::client
