// maskserve.v1.Generation: text generation and SimBERT-style paraphrase.
#pragma once

#include "maskserve/v1/generation.grpc.pb.h"
#include "server/config.h"
#include "server/model_registry.h"

namespace maskserve::server {

class GenerationService final : public maskserve::v1::Generation::CallbackService {
 public:
  GenerationService(const ModelRegistry* registry, const ServerOptions* options)
      : registry_(registry), options_(options) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const maskserve::v1::GenerateRequest* request,
                                     maskserve::v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<maskserve::v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const maskserve::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Paraphrase(grpc::CallbackServerContext* context,
                                       const maskserve::v1::ParaphraseRequest* request,
                                       maskserve::v1::ParaphraseResponse* response) override;

 private:
  const ModelRegistry* registry_;
  const ServerOptions* options_;
};

}  // namespace maskserve::server
