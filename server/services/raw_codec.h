// Request parsing that reports invalid UTF-8 the way the API promises.
// proto3 `string` fields must hold UTF-8, and protobuf's C++ parser rejects a
// message whose strings are not — gRPC would then answer with an opaque
// status and no message. Methods that take user text are therefore
// registered "raw": the bytes are checked here first, field by field, so a
// bad input gets INVALID_ARGUMENT naming it ("texts[3] is not valid UTF-8 at
// byte 7"), and only valid bytes reach the typed parser.
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace maskserve::server {

// Checks every string field (recursively through sub-messages) of the
// serialized message `wire` of type `descriptor`. INVALID_ARGUMENT names the
// field path, the repeated index and the byte offset of the first bad byte
// (invalid UTF-8, or a NUL byte); a malformed wire encoding is
// INVALID_ARGUMENT too.
absl::Status ValidateUtf8Fields(absl::string_view wire,
                                const google::protobuf::Descriptor& descriptor);

// ValidateUtf8Fields, then parses into `message`.
absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message);

// Serializes a response for a raw method.
grpc::Status SerializeResponse(const google::protobuf::Message& message, grpc::ByteBuffer* buffer);

}  // namespace maskserve::server
