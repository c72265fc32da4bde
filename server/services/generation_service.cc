#include "server/services/generation_service.h"

#include "server/services/service_util.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;

constexpr char kNeeds[] = "the generation engine (KV cache, decoding, continuous batching)";

// A server-streaming call that ends with a status before writing anything.
class FinishedWriter : public grpc::ServerWriteReactor<pb::GenerateStreamResponse> {
 public:
  explicit FinishedWriter(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                      const pb::GenerateRequest* request,
                                                      pb::GenerateResponse* /*response*/) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return FinishUnary(context, model.status());
  return FinishUnary(context, NotYetImplemented("Generate", kNeeds));
}

grpc::ServerWriteReactor<pb::GenerateStreamResponse>* GenerationService::GenerateStream(
    grpc::CallbackServerContext* /*context*/, const pb::GenerateRequest* request) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return new FinishedWriter(ToGrpcStatus(model.status()));
  return new FinishedWriter(ToGrpcStatus(NotYetImplemented("GenerateStream", kNeeds)));
}

grpc::ServerUnaryReactor* GenerationService::Paraphrase(grpc::CallbackServerContext* context,
                                                        const pb::ParaphraseRequest* request,
                                                        pb::ParaphraseResponse* /*response*/) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return FinishUnary(context, model.status());
  return FinishUnary(context, NotYetImplemented("Paraphrase", kNeeds));
}

}  // namespace maskserve::server
