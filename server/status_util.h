// absl::Status <-> grpc::Status. The engine and scheduler speak absl; only
// the service layer converts, keeping codes and messages intact.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace maskserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Name of a gRPC code as Prometheus labels and logs show it: "OK", "NOT_FOUND", ...
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace maskserve::server
