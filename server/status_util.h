// absl::Status <-> grpc::Status. The engine and scheduler speak absl; only
// the service layer converts, keeping codes and messages intact.
#pragma once

#include <grpcpp/support/status.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace maskserve::server {

// A retry hint on `status` (server/retry_hint.h) becomes the status details:
// a serialized google.rpc.Status holding one google.rpc.RetryInfo.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The google.rpc.RetryInfo delay in serialized google.rpc.Status `details`
// (what ToGrpcStatus writes); nullopt when there is none or it is malformed.
std::optional<absl::Duration> RetryDelayFromStatusDetails(const std::string& details);

// Name of a gRPC code as Prometheus labels and logs show it: "OK", "NOT_FOUND", ...
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace maskserve::server
