// The standard grpc.health.v1.Health/Check call without the health .proto
// (Debian ships no generated health stubs): the two one-field messages are
// encoded by hand in protobuf wire format and sent through grpc::GenericStub.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace maskserve::client {

// HealthCheckResponse.ServingStatus, same numeric values.
enum class HealthStatus {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3,  // Only sent by Watch; kept for completeness.
};

// "SERVING", "NOT_SERVING", ... as in the proto.
const char* HealthStatusName(HealthStatus status);

// Wire encoding of HealthCheckRequest{string service = 1}.
std::string EncodeHealthCheckRequest(absl::string_view service);

// Parses HealthCheckResponse{ServingStatus status = 1}; unknown fields are
// skipped, malformed input is INVALID_ARGUMENT.
absl::StatusOr<HealthStatus> DecodeHealthCheckResponse(absl::string_view bytes);

// One Check call on `channel` with an already prepared context (deadline,
// metadata). A server without the health service yields UNIMPLEMENTED, an
// unknown service NOT_FOUND.
absl::StatusOr<HealthStatus> HealthCheck(
    const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* context,
    const std::string& service);

}  // namespace maskserve::client
