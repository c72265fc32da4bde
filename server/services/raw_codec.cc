#include "server/services/raw_codec.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace maskserve::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;

// Offset of the first byte that breaks UTF-8 (well-formed, no surrogates,
// no overlongs), or -1 when valid.
int64_t FirstInvalidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                          (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

absl::Status Validate(absl::string_view wire, const Descriptor& d, const std::string& prefix,
                      int depth) {
  if (depth > 32) return absl::InvalidArgumentError("request nests messages too deeply");
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(wire.data()),
                                            static_cast<int>(wire.size()));
  in.SetRecursionLimit(64);
  std::map<int, int> seen;  // field number -> occurrences so far (repeated index)
  for (;;) {
    const int tag_start = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    const int number = WireFormatLite::GetTagFieldNumber(tag);
    // What protobuf's parser refuses must be refused here too, or the typed
    // parse after a successful check would fail with no message: field
    // number 0, and tags longer than the 5 bytes a 32-bit varint needs (which
    // ReadTag would silently truncate).
    if (number == 0 || in.CurrentPosition() - tag_start > 5) {
      return absl::InvalidArgumentError("the request is not a valid protobuf message");
    }
    const FieldDescriptor* f = d.FindFieldByNumber(number);
    const auto type = WireFormatLite::GetTagWireType(tag);
    if (f == nullptr || type != WireFormatLite::WIRETYPE_LENGTH_DELIMITED ||
        (f->type() != FieldDescriptor::TYPE_STRING && f->type() != FieldDescriptor::TYPE_MESSAGE)) {
      if (!WireFormatLite::SkipField(&in, tag)) {
        return absl::InvalidArgumentError("the request is not a valid protobuf message");
      }
      continue;
    }
    uint32_t length = 0;
    std::string bytes;
    if (!in.ReadVarint32(&length) || !in.ReadString(&bytes, static_cast<int>(length))) {
      return absl::InvalidArgumentError("the request is not a valid protobuf message");
    }
    const int index = seen[number]++;
    std::string name = prefix + f->name();
    if (f->is_repeated()) absl::StrAppend(&name, "[", index, "]");
    if (f->type() == FieldDescriptor::TYPE_STRING) {
      const int64_t bad = FirstInvalidUtf8(bytes);
      if (bad >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " is not valid UTF-8 at byte ", bad));
      }
      // NUL is valid UTF-8 but no text needs it, and C-string APIs below
      // (tokenizer libraries, logs) would silently cut the text there.
      if (const size_t nul = bytes.find('\0'); nul != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(name, " contains a NUL byte at byte ", nul));
      }
    } else if (absl::Status s = Validate(bytes, *f->message_type(), name + ".", depth + 1);
               !s.ok()) {
      return s;
    }
  }
  if (!in.ConsumedEntireMessage()) {
    return absl::InvalidArgumentError("the request is not a valid protobuf message");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateUtf8Fields(absl::string_view wire, const Descriptor& descriptor) {
  return Validate(wire, descriptor, "", 0);
}

absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) {
    return absl::InvalidArgumentError("cannot read the request bytes");
  }
  std::string wire;
  wire.reserve(buffer.Length());
  for (const grpc::Slice& s : slices) {
    wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (absl::Status s = ValidateUtf8Fields(wire, *message->GetDescriptor()); !s.ok()) return s;
  if (!message->ParseFromString(wire)) {
    return absl::InvalidArgumentError("the request is not a valid protobuf message");
  }
  return absl::OkStatus();
}

grpc::Status SerializeResponse(const google::protobuf::Message& message, grpc::ByteBuffer* buffer) {
  bool own = false;
  return grpc::SerializationTraits<google::protobuf::Message>::Serialize(message, buffer, &own);
}

}  // namespace maskserve::server
