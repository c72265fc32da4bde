// Cross-cutting per-RPC work, done once for every service: a request id
// (from x-request-id metadata, or generated and inserted into the call's
// metadata so handlers and logs share it, and echoed back to the client),
// one access-log line per call, and the request count / latency metrics.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace maskserve::server {

// Metadata key carrying the request id in both directions.
inline constexpr char kRequestIdKey[] = "x-request-id";

// Observes finished RPCs (the metrics side; no gRPC types in the signature).
struct RpcObserver {
  virtual ~RpcObserver() = default;
  virtual void OnRpcStart(absl::string_view service, absl::string_view method) = 0;
  // `code` is the gRPC status code number (CANCELLED when the client went away).
  virtual void OnRpcDone(absl::string_view service, absl::string_view method, int code,
                         double seconds) = 0;
};

// Splits "/maskserve.v1.Models/ListModels" into ("maskserve.v1.Models", "ListModels").
void SplitMethod(absl::string_view full, std::string* service, std::string* method);

class RequestInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `observer` may be null; it must outlive the server.
  explicit RequestInterceptorFactory(RpcObserver* observer) : observer_(observer) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  RpcObserver* observer_;
};

// The request id of the call (always present once the interceptor ran).
std::string RequestIdOf(const grpc::ServerContextBase& context);

}  // namespace maskserve::server
