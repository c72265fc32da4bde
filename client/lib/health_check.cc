#include "client/lib/health_check.h"

#include <grpcpp/completion_queue.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace maskserve::client {
namespace {

constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// Reads a varint at *pos; false on truncation or more than 10 bytes.
bool ReadVarint(absl::string_view bytes, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= bytes.size()) return false;
    const uint8_t b = static_cast<uint8_t>(bytes[(*pos)++]);
    *value |= static_cast<uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

const char* HealthStatusName(HealthStatus status) {
  switch (status) {
    case HealthStatus::kUnknown:
      return "UNKNOWN";
    case HealthStatus::kServing:
      return "SERVING";
    case HealthStatus::kNotServing:
      return "NOT_SERVING";
    case HealthStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

std::string EncodeHealthCheckRequest(absl::string_view service) {
  std::string out;
  // proto3 omits a field holding its default value (the empty string).
  if (service.empty()) return out;
  out.push_back(static_cast<char>((1 << 3) | 2));  // field 1, length-delimited
  AppendVarint(service.size(), &out);
  out.append(service.data(), service.size());
  return out;
}

absl::StatusOr<HealthStatus> DecodeHealthCheckResponse(absl::string_view bytes) {
  uint64_t status = 0;  // absent field = UNKNOWN
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint64_t key = 0;
    if (!ReadVarint(bytes, &pos, &key)) {
      return absl::InvalidArgumentError("HealthCheckResponse: bad tag");
    }
    const uint64_t field = key >> 3;
    const int wire_type = static_cast<int>(key & 7);
    uint64_t value = 0;
    switch (wire_type) {
      case 0:  // varint
        if (!ReadVarint(bytes, &pos, &value)) {
          return absl::InvalidArgumentError("HealthCheckResponse: bad varint");
        }
        if (field == 1) status = value;
        break;
      case 1:  // 64-bit
        if (bytes.size() - pos < 8) {
          return absl::InvalidArgumentError("HealthCheckResponse: truncated");
        }
        pos += 8;
        break;
      case 2:  // length-delimited
        if (!ReadVarint(bytes, &pos, &value) || value > bytes.size() - pos) {
          return absl::InvalidArgumentError("HealthCheckResponse: truncated");
        }
        pos += value;
        break;
      case 5:  // 32-bit
        if (bytes.size() - pos < 4) {
          return absl::InvalidArgumentError("HealthCheckResponse: truncated");
        }
        pos += 4;
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("HealthCheckResponse: wire type ", wire_type));
    }
  }
  if (status > 3) return HealthStatus::kUnknown;  // a future enum value
  return static_cast<HealthStatus>(status);
}

absl::StatusOr<HealthStatus> HealthCheck(
    const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* context,
    const std::string& service) {
  const std::string request_bytes = EncodeHealthCheckRequest(service);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);

  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ByteBuffer response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(context, kCheckMethod, request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  const bool got = cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!got) return absl::InternalError("health check: completion queue shut down");
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) {
    return absl::InternalError("health check: unreadable response");
  }
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return DecodeHealthCheckResponse(bytes);
}

}  // namespace maskserve::client
