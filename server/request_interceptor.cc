#include "server/request_interceptor.h"

#include <grpc/grpc.h>
#include <grpcpp/server_context.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "server/auth/access_control.h"
#include "server/logging.h"
#include "server/retry_hint.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

// Where the interceptor leaves its verdict for the handler, in the call's
// client metadata ("<code>:<retry_ms>:<message>"). A value the client sent
// under this key is removed first, so it can never be forged.
constexpr char kAdmissionKey[] = "x-maskserve-admission";
constexpr char kAuthorizationKey[] = "authorization";

// Removes every entry of `key`.
void EraseKey(std::multimap<grpc::string_ref, grpc::string_ref>* md, const char* key) {
  auto range = md->equal_range(key);
  md->erase(range.first, range.second);
}

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
  RequestInterceptor(grpc::experimental::ServerRpcInfo* info, RpcObserver* observer,
                     AccessController* access, const std::function<absl::Status()>* accepting)
      : info_(info), observer_(observer), access_(access), accepting_(accepting),
        start_(std::chrono::steady_clock::now()) {
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
      Admit(md);
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
      if (!refused_) {
        code_ = st.error_code();
        message_ = st.error_message();
        done_ = true;
      }
      if (!st.error_details().empty()) {
        if (std::optional<absl::Duration> delay = RetryDelayFromStatusDetails(st.error_details())) {
          methods->GetSendTrailingMetadata()->emplace(
              kRetryAfterMsKey, absl::StrCat(absl::ToInt64Milliseconds(*delay)));
        }
      }
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
              {"principal", decision_.principal},
              {"error", failed ? message_ : std::string()}});
  }

 private:
  // Access control on the client's initial metadata (see the header).
  void Admit(std::multimap<grpc::string_ref, grpc::string_ref>* md) {
    EraseKey(md, kAdmissionKey);
    std::optional<absl::string_view> authorization;
    std::string auth_value;
    auto it = md->find(kAuthorizationKey);
    if (it != md->end()) {
      auth_value.assign(it->second.data(), it->second.size());
      authorization = auth_value;
    }
    // Handlers never see the token.
    EraseKey(md, kAuthorizationKey);
    if (access_ != nullptr) {
      decision_ = access_->Admit(info_->method(), authorization, peer_);
      // Overwrite the secret before the string is freed.
      std::fill(auth_value.begin(), auth_value.end(), '\0');
      if (!decision_.status.ok()) return Refuse(decision_.status, md);
    }
    // Model work is refused from the moment a drain begins, decided here, when
    // the call arrives: a call that arrived before (its request may still be
    // uploading) is in flight, and the drain waits for it.
    if (accepting_ != nullptr && *accepting_ &&
        (service_ == "maskserve.v1.Embedding" || service_ == "maskserve.v1.Generation")) {
      if (absl::Status s = (*accepting_)(); !s.ok()) return Refuse(s, md);
    }
  }

  // Records `status` as the call's verdict for its handler (CallAdmission).
  void Refuse(const absl::Status& status, std::multimap<grpc::string_ref, grpc::string_ref>* md) {
    refused_ = true;
    done_ = true;
    code_ = static_cast<grpc::StatusCode>(status.code());
    message_ = std::string(status.message());
    const std::optional<absl::Duration> retry = RetryAfterOf(status);
    admission_ = absl::StrCat(static_cast<int>(code_), ":",
                              retry ? absl::ToInt64Milliseconds(*retry) : 0, ":", message_);
    md->emplace(grpc::string_ref(kAdmissionKey), grpc::string_ref(admission_));
    if (code_ != grpc::StatusCode::RESOURCE_EXHAUSTED ||
        !absl::StartsWith(service_, "maskserve.v1.")) {
      // Refused whatever the handler does (health and reflection have none of ours).
      grpc_call_cancel_with_status(info_->server_context()->c_call(),
                                   static_cast<grpc_status_code>(code_), message_.c_str(),
                                   nullptr);
    }
  }

  grpc::experimental::ServerRpcInfo* info_;
  RpcObserver* observer_;
  AccessController* access_;
  const std::function<absl::Status()>* accepting_;
  std::chrono::steady_clock::time_point start_;
  std::string service_, method_, request_id_, peer_, message_;
  // The verdict; its permit holds the call's concurrency slot until the
  // interceptor is destroyed with the call.
  AccessDecision decision_;
  std::string admission_;
  grpc::StatusCode code_ = grpc::StatusCode::OK;
  bool done_ = false;
  bool refused_ = false;
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
  return new RequestInterceptor(info, observer_, access_, &accepting_);
}

absl::Status CallAdmission(const grpc::ServerContextBase& context) {
  const auto& md = context.client_metadata();
  auto it = md.find(kAdmissionKey);
  if (it == md.end()) return absl::OkStatus();
  const absl::string_view v(it->second.data(), it->second.size());
  std::vector<absl::string_view> parts = absl::StrSplit(v, absl::MaxSplits(':', 2));
  int code = 0;
  int64_t retry_ms = 0;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &code) ||
      !absl::SimpleAtoi(parts[1], &retry_ms) || code <= 0 || code > 16) {
    return absl::InternalError("malformed admission verdict");
  }
  absl::Status s(static_cast<absl::StatusCode>(code), parts[2]);
  if (retry_ms > 0) s = WithRetryAfter(std::move(s), absl::Milliseconds(retry_ms));
  return s;
}

std::string RequestIdOf(const grpc::ServerContextBase& context) {
  const auto& md = context.client_metadata();
  auto it = md.find(kRequestIdKey);
  if (it == md.end()) return std::string();
  return std::string(it->second.data(), it->second.size());
}

}  // namespace maskserve::server
