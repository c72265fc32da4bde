// maskserve.v1.Embedding: sentence embeddings, tokenisation, whitening.
// Handlers validate the request and map it onto the engine; they never block
// a gRPC thread on model compute.
#pragma once

#include "maskserve/v1/embedding.grpc.pb.h"
#include "server/config.h"
#include "server/model_registry.h"
#include "server/scheduler/worker_pool.h"

#include <functional>

namespace maskserve::server {

class EmbeddingService final : public maskserve::v1::Embedding::CallbackService {
 public:
  // `pool` runs the CPU work of handlers; all three must outlive the service.
  EmbeddingService(const ModelRegistry* registry, const ServerOptions* options, WorkerPool* pool)
      : registry_(registry), options_(options), pool_(pool) {}

  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const maskserve::v1::EmbedRequest* request,
                                  maskserve::v1::EmbedResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const maskserve::v1::TokenizeRequest* request,
                                     maskserve::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const maskserve::v1::DetokenizeRequest* request,
                                       maskserve::v1::DetokenizeResponse* response) override;
  grpc::ServerReadReactor<maskserve::v1::FitWhiteningRequest>* FitWhitening(
      grpc::CallbackServerContext* context, maskserve::v1::WhiteningProfile* response) override;
  grpc::ServerUnaryReactor* GetWhitening(grpc::CallbackServerContext* context,
                                         const maskserve::v1::GetWhiteningRequest* request,
                                         maskserve::v1::WhiteningProfile* response) override;
  grpc::ServerUnaryReactor* ListWhitening(grpc::CallbackServerContext* context,
                                          const maskserve::v1::ListWhiteningRequest* request,
                                          maskserve::v1::ListWhiteningResponse* response) override;
  grpc::ServerUnaryReactor* DeleteWhitening(
      grpc::CallbackServerContext* context, const maskserve::v1::DeleteWhiteningRequest* request,
      maskserve::v1::DeleteWhiteningResponse* response) override;
  grpc::ServerUnaryReactor* ImportWhitening(
      grpc::CallbackServerContext* context, const maskserve::v1::ImportWhiteningRequest* request,
      maskserve::v1::WhiteningProfile* response) override;

 private:
  // Runs `work` on the pool and finishes the call with its status.
  grpc::ServerUnaryReactor* RunOnPool(grpc::CallbackServerContext* context,
                                      std::function<absl::Status()> work);
  absl::Status DoTokenize(grpc::CallbackServerContext* context,
                          const maskserve::v1::TokenizeRequest* request,
                          maskserve::v1::TokenizeResponse* response);
  absl::Status DoDetokenize(const maskserve::v1::DetokenizeRequest* request,
                            maskserve::v1::DetokenizeResponse* response);

  const ModelRegistry* registry_;
  const ServerOptions* options_;
  WorkerPool* pool_;
};

}  // namespace maskserve::server
