// Small helpers every service handler shares.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/model_registry.h"

namespace maskserve::server {

// The READY model a request names in its `field` (usually "model"):
// INVALID_ARGUMENT when empty, NOT_FOUND when unknown, UNAVAILABLE while
// loading, FAILED_PRECONDITION when its load failed.
absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> ResolveModel(
    const ModelRegistry& registry, const std::string& name, const char* field = "model");

// Whether a handler may start work on the call: the request interceptor's
// verdict (CallAdmission: access control, and the drain check made when the
// call arrived), or the registry's drain check now when no interceptor ran
// (UNAVAILABLE while shutting down).
absl::Status AdmitCall(const grpc::ServerContextBase& context, const ModelRegistry& registry);

// Finishes a unary callback RPC with `status` and returns its reactor.
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const grpc::Status& status);
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const absl::Status& status);

// The call's deadline; InfiniteFuture when the client set none.
absl::Time DeadlineOf(const grpc::CallbackServerContext& context);

// Wall microseconds from `start` to now (timing breakdowns in responses).
int64_t MicrosSince(absl::Time start);

// UNIMPLEMENTED with a message saying what is missing.
absl::Status NotYetImplemented(const char* rpc, const char* what);

}  // namespace maskserve::server
