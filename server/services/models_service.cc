#include "server/services/models_service.h"

#include "server/request_interceptor.h"
#include "server/services/proto_convert.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;

pb::ModelState ToProtoState(ModelState s) {
  switch (s) {
    case ModelState::kLoading:
      return pb::MODEL_STATE_LOADING;
    case ModelState::kReady:
      return pb::MODEL_STATE_READY;
    case ModelState::kFailed:
      return pb::MODEL_STATE_FAILED;
  }
  return pb::MODEL_STATE_UNSPECIFIED;
}

}  // namespace

void FillModelInfo(const ModelSnapshot& snap, pb::ModelInfo* info) {
  info->set_name(snap.spec.name);
  info->set_path(snap.spec.path);
  info->set_state(ToProtoState(snap.state));
  info->set_error(snap.error);
  if (snap.model == nullptr) return;
  const engine::ModelDescription& d = snap.model->description();
  info->set_architecture(d.architecture);
  for (engine::ModelTask t : d.tasks) {
    info->add_tasks(t == engine::ModelTask::kEmbed ? pb::TASK_EMBED : pb::TASK_GENERATE);
  }
  info->set_max_sequence_length(d.max_sequence_length);
  info->set_dtype(engine::ComputeDtypeName(d.dtype));
  info->set_hidden_size(d.hidden_size);
  info->set_vocab_size(d.vocab_size);
  info->set_num_layers(d.num_layers);
  info->set_num_heads(d.num_heads);
  info->set_num_parameters(d.num_parameters);
  info->set_default_pooling(ToProtoPooling(d.default_pooling));
  info->add_supported_masks(pb::MASK_KIND_BIDIRECTIONAL);
}

void ModelsService::Fill(const ModelSnapshot& snap, pb::ModelInfo* info) const {
  FillModelInfo(snap, info);
  for (const auto& p : whitening_->List(snap.spec.name)) {
    FillWhiteningSummary(*p, info->add_whitening_profiles());
  }
}

grpc::ServerUnaryReactor* ModelsService::ListModels(grpc::CallbackServerContext* context,
                                                    const pb::ListModelsRequest* /*request*/,
                                                    pb::ListModelsResponse* response) {
  if (absl::Status s = CallAdmission(*context); !s.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  for (const ModelSnapshot& snap : registry_->List()) Fill(snap, response->add_models());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ModelsService::GetModel(grpc::CallbackServerContext* context,
                                                  const pb::GetModelRequest* request,
                                                  pb::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CallAdmission(*context); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (request->name().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name must be set"));
    return reactor;
  }
  absl::StatusOr<ModelSnapshot> snap = registry_->Get(request->name());
  if (!snap.ok()) {
    reactor->Finish(ToGrpcStatus(snap.status()));
    return reactor;
  }
  Fill(*snap, response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace maskserve::server
