#include "server/status_util.h"

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "server/retry_hint.h"

namespace maskserve::server {
namespace {

// Just enough of the protobuf wire format for google.rpc.Status { int32 code
// = 1; string message = 2; repeated google.protobuf.Any details = 3; },
// google.protobuf.Any { string type_url = 1; bytes value = 2; },
// google.rpc.RetryInfo { google.protobuf.Duration retry_delay = 1; } and
// google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; }.
constexpr char kRetryInfoTypeUrl[] = "type.googleapis.com/google.rpc.RetryInfo";

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutVarintField(int field, uint64_t v, std::string* out) {
  PutVarint(static_cast<uint64_t>(field) << 3, out);
  PutVarint(v, out);
}

void PutBytesField(int field, absl::string_view bytes, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) | 2, out);
  PutVarint(bytes.size(), out);
  out->append(bytes.data(), bytes.size());
}

bool GetVarint(absl::string_view* in, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const uint8_t b = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// Calls fn(field, wire_type, varint, bytes) for every field of `msg`; false
// on malformed input or when fn returns false.
template <typename Fn>
bool ForEachField(absl::string_view msg, Fn fn) {
  while (!msg.empty()) {
    uint64_t key = 0, v = 0;
    if (!GetVarint(&msg, &key)) return false;
    const int field = static_cast<int>(key >> 3);
    absl::string_view bytes;
    switch (key & 7) {
      case 0:
        if (!GetVarint(&msg, &v)) return false;
        break;
      case 2:
        if (!GetVarint(&msg, &v) || v > msg.size()) return false;
        bytes = msg.substr(0, v);
        msg.remove_prefix(v);
        break;
      default:
        return false;
    }
    if (!fn(field, static_cast<int>(key & 7), v, bytes)) return false;
  }
  return true;
}

std::string StatusDetailsWithRetryInfo(const absl::Status& status, absl::Duration delay) {
  const int64_t seconds = absl::IDivDuration(delay, absl::Seconds(1), &delay);
  const int64_t nanos = absl::ToInt64Nanoseconds(delay);
  std::string duration, retry_info, any, out;
  if (seconds != 0) PutVarintField(1, static_cast<uint64_t>(seconds), &duration);
  if (nanos != 0) PutVarintField(2, static_cast<uint64_t>(nanos), &duration);
  PutBytesField(1, duration, &retry_info);
  PutBytesField(1, kRetryInfoTypeUrl, &any);
  PutBytesField(2, retry_info, &any);
  PutVarintField(1, static_cast<uint64_t>(status.code()), &out);
  PutBytesField(2, status.message(), &out);
  PutBytesField(3, any, &out);
  return out;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  if (std::optional<absl::Duration> delay = RetryAfterOf(status)) {
    return grpc::Status(code, std::string(status.message()),
                        StatusDetailsWithRetryInfo(status, *delay));
  }
  return grpc::Status(code, std::string(status.message()));
}

std::optional<absl::Duration> RetryDelayFromStatusDetails(const std::string& details) {
  std::optional<absl::Duration> found;
  auto on_duration = [&](int field, int, uint64_t v, absl::string_view) {
    if (!found) found = absl::ZeroDuration();
    if (field == 1) *found += absl::Seconds(static_cast<int64_t>(v));
    if (field == 2) *found += absl::Nanoseconds(static_cast<int64_t>(v));
    return true;
  };
  auto on_retry_info = [&](int field, int wire, uint64_t, absl::string_view bytes) {
    if (field == 1 && wire == 2) return ForEachField(bytes, on_duration);
    return true;
  };
  auto on_any = [&](absl::string_view any) {
    absl::string_view type_url, value;
    const bool ok = ForEachField(any, [&](int field, int wire, uint64_t, absl::string_view b) {
      if (wire == 2 && field == 1) type_url = b;
      if (wire == 2 && field == 2) value = b;
      return true;
    });
    if (ok && type_url == kRetryInfoTypeUrl) return ForEachField(value, on_retry_info);
    return ok;
  };
  const bool ok = ForEachField(details, [&](int field, int wire, uint64_t, absl::string_view b) {
    if (field == 3 && wire == 2) return on_any(b);
    return true;
  });
  if (!ok) return std::nullopt;
  return found;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN";
  }
}

}  // namespace maskserve::server
