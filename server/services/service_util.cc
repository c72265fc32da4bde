#include "server/services/service_util.h"

#include "absl/strings/str_cat.h"
#include "server/request_interceptor.h"
#include "server/status_util.h"

namespace maskserve::server {

absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> ResolveModel(
    const ModelRegistry& registry, const std::string& name, const char* field) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " must be set"));
  return registry.GetReady(name);
}

absl::Status AdmitCall(const grpc::ServerContextBase& context, const ModelRegistry& registry) {
  if (absl::Status s = CallAdmission(context); !s.ok()) return s;
  // Behind the request interceptor (it sets the request id) the drain was
  // decided when the call arrived, so a call that arrived before the drain is
  // served; without it, decide now.
  if (!RequestIdOf(context).empty()) return absl::OkStatus();
  return registry.AcceptingWork();
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const absl::Status& status) {
  return FinishUnary(context, ToGrpcStatus(status));
}

absl::Status NotYetImplemented(const char* rpc, const char* what) {
  return absl::UnimplementedError(
      absl::StrCat(rpc, " is not implemented in this build: it needs ", what, "."));
}

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto d = context.deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

int64_t MicrosSince(absl::Time start) { return absl::ToInt64Microseconds(absl::Now() - start); }

}  // namespace maskserve::server
