// Cross-cutting per-RPC work, done once for every service: a request id
// (from x-request-id metadata, or generated and inserted into the call's
// metadata so handlers and logs share it, and echoed back to the client),
// access control (server/auth/access_control.h), one access-log line per
// call, the request count / latency metrics, and the `retry-after-ms`
// trailer of a status carrying a retry hint.
//
// Access control runs when the client's metadata arrives, before any
// handler. A call refused by authentication or authorisation is cancelled
// with its status there and then (UNAUTHENTICATED / PERMISSION_DENIED reach
// the client whatever the handler does). Every refusal is also left for the
// handler to see (CallAdmission below), so maskserve handlers finish at once
// without doing any work; a call refused by a limit is finished that way,
// which lets its RESOURCE_EXHAUSTED carry the retry hint. The authorization
// metadata is removed from what handlers see, and no log line contains it.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <functional>
#include <utility>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace grpc {
class ServerContextBase;
}

namespace maskserve::server {

class AccessController;

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
  // `observer` and `access` may be null (no metrics / admit everything);
  // both must outlive the server. `accepting_work` (may be empty) says whether
  // new Embedding / Generation calls are taken (UNAVAILABLE while draining);
  // it is asked once per call, when the call arrives.
  explicit RequestInterceptorFactory(RpcObserver* observer, AccessController* access = nullptr,
                                     std::function<absl::Status()> accepting_work = {})
      : observer_(observer), access_(access), accepting_(std::move(accepting_work)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  RpcObserver* observer_;
  AccessController* access_;
  std::function<absl::Status()> accepting_;
};

// The access-control verdict on the call: OK, or the status its handler
// must finish with at once (UNAUTHENTICATED, PERMISSION_DENIED, or
// RESOURCE_EXHAUSTED with a retry hint). OK when no interceptor ran.
absl::Status CallAdmission(const grpc::ServerContextBase& context);

// The request id of the call (always present once the interceptor ran).
std::string RequestIdOf(const grpc::ServerContextBase& context);

}  // namespace maskserve::server
