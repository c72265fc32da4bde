#include "server/request_interceptor.h"

#include <grpcpp/server_context.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/logging.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

std::string NewRequestId() {
  // Random 64-bit prefix per process + a counter: unique and cheap.
  static const uint64_t prefix = [] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }();
  static std::atomic<uint64_t> counter{0};
  return absl::StrFormat("%016x-%06x", prefix, counter.fetch_add(1) & 0xffffff);
}

bool ValidRequestId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

class RequestInterceptor : public grpc::experimental::Interceptor {
 public:
  RequestInterceptor(grpc::experimental::ServerRpcInfo* info, RpcObserver* observer)
      : info_(info), observer_(observer), start_(std::chrono::steady_clock::now()) {
    SplitMethod(info->method(), &service_, &method_);
    if (observer_ != nullptr) observer_->OnRpcStart(service_, method_);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      auto* md = methods->GetRecvInitialMetadata();
      auto it = md->find(kRequestIdKey);
      if (it != md->end() &&
          ValidRequestId(absl::string_view(it->second.data(), it->second.size()))) {
        request_id_.assign(it->second.data(), it->second.size());
      } else {
        if (it != md->end()) md->erase(it);
        request_id_ = NewRequestId();
        // string_refs into members: they live as long as the call.
        md->emplace(grpc::string_ref(kRequestIdKey), grpc::string_ref(request_id_));
      }
      peer_ = info_->server_context()->peer();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        !logged_start_) {
      // The first request message has arrived: the handler runs next.
      logged_start_ = true;
      LogEvent(LogLevel::kDebug, "rpc_start",
               {{"request_id", request_id_}, {"service", service_}, {"method", method_}});
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      if (!request_id_.empty()) {
        methods->GetSendInitialMetadata()->emplace(kRequestIdKey, request_id_);
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status st = methods->GetSendStatus();
      code_ = st.error_code();
      message_ = st.error_message();
      done_ = true;
    }
    methods->Proceed();
  }

  ~RequestInterceptor() override {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    // A call the client cancelled never reaches PRE_SEND_STATUS.
    const grpc::StatusCode status = done_ ? code_ : grpc::StatusCode::CANCELLED;
    const char* code = GrpcCodeName(status);
    if (observer_ != nullptr) {
      observer_->OnRpcDone(service_, method_, static_cast<int>(status), seconds);
    }
    const bool failed = done_ && code_ != grpc::StatusCode::OK;
    LogEvent(failed ? LogLevel::kWarning : LogLevel::kInfo, "rpc",
             {{"request_id", request_id_},
              {"service", service_},
              {"method", method_},
              {"code", code},
              {"duration_ms", absl::StrFormat("%.3f", seconds * 1e3)},
              {"peer", peer_},
              {"error", failed ? message_ : std::string()}});
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  RpcObserver* observer_;
  std::chrono::steady_clock::time_point start_;
  std::string service_, method_, request_id_, peer_, message_;
  grpc::StatusCode code_ = grpc::StatusCode::OK;
  bool done_ = false;
  bool logged_start_ = false;
};

}  // namespace

void SplitMethod(absl::string_view full, std::string* service, std::string* method) {
  if (!full.empty() && full[0] == '/') full.remove_prefix(1);
  const size_t slash = full.find('/');
  if (slash == absl::string_view::npos) {
    *service = std::string(full);
    method->clear();
    return;
  }
  *service = std::string(full.substr(0, slash));
  *method = std::string(full.substr(slash + 1));
}

grpc::experimental::Interceptor* RequestInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RequestInterceptor(info, observer_);
}

std::string RequestIdOf(const grpc::ServerContextBase& context) {
  const auto& md = context.client_metadata();
  auto it = md.find(kRequestIdKey);
  if (it == md.end()) return std::string();
  return std::string(it->second.data(), it->second.size());
}

}  // namespace maskserve::server
