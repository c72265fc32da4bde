// maskserve.v1.Models: lists configured models and their state.
#pragma once

#include "maskserve/v1/models.grpc.pb.h"
#include "server/model_registry.h"

namespace maskserve::server {

// Fills a ModelInfo from a registry snapshot (used by Models and tests).
void FillModelInfo(const ModelSnapshot& snap, maskserve::v1::ModelInfo* info);

class ModelsService final : public maskserve::v1::Models::CallbackService {
 public:
  explicit ModelsService(const ModelRegistry* registry) : registry_(registry) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const maskserve::v1::ListModelsRequest* request,
                                       maskserve::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const maskserve::v1::GetModelRequest* request,
                                     maskserve::v1::ModelInfo* response) override;

 private:
  const ModelRegistry* registry_;
};

}  // namespace maskserve::server
