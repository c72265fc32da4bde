// maskserve.v1.Models: lists configured models and their state.
#pragma once

#include "maskserve/v1/models.grpc.pb.h"
#include "server/model_registry.h"
#include "server/whitening_store.h"

namespace maskserve::server {

// Fills a ModelInfo from a registry snapshot (used by Models and tests).
void FillModelInfo(const ModelSnapshot& snap, maskserve::v1::ModelInfo* info);

class ModelsService final : public maskserve::v1::Models::CallbackService {
 public:
  // `whitening` lists each model's profiles; both must outlive the service.
  ModelsService(const ModelRegistry* registry, const WhiteningStore* whitening)
      : registry_(registry), whitening_(whitening) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const maskserve::v1::ListModelsRequest* request,
                                       maskserve::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const maskserve::v1::GetModelRequest* request,
                                     maskserve::v1::ModelInfo* response) override;

 private:
  void Fill(const ModelSnapshot& snap, maskserve::v1::ModelInfo* info) const;

  const ModelRegistry* registry_;
  const WhiteningStore* whitening_;
};

}  // namespace maskserve::server
