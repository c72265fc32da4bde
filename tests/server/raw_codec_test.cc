// ValidateUtf8Fields: the first bad byte of any string field, however deep,
// is reported with its field path and index; NUL bytes and malformed wire
// bytes are refused too.
#include "server/services/raw_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "maskserve/v1/embedding.pb.h"
#include "maskserve/v1/generation.pb.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;
using ::testing::HasSubstr;

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

// `base` plus a length-delimited field `number` holding `bytes`.
std::string WithString(const google::protobuf::Message& base, int number, const std::string& bytes) {
  return absl::StrCat(base.SerializeAsString(), Varint(static_cast<uint64_t>(number) << 3 | 2),
                      Varint(bytes.size()), bytes);
}

TEST(RawCodecTest, NamesTheFieldIndexAndByte) {
  pb::EmbedRequest e;
  e.set_model("m");
  e.add_texts("fine");
  const auto& d = *pb::EmbedRequest::descriptor();
  EXPECT_TRUE(ValidateUtf8Fields(e.SerializeAsString(), d).ok());
  absl::Status s = ValidateUtf8Fields(WithString(e, 2, "ab\xff"), d);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "texts[1] is not valid UTF-8 at byte 2");
  // Overlong encodings and surrogates are not UTF-8.
  EXPECT_EQ(ValidateUtf8Fields(WithString(e, 2, "\xc0\xaf"), d).message(),
            "texts[1] is not valid UTF-8 at byte 0");
  EXPECT_EQ(ValidateUtf8Fields(WithString(e, 2, "x\xed\xa0\x80"), d).message(),
            "texts[1] is not valid UTF-8 at byte 1");
  EXPECT_EQ(ValidateUtf8Fields(WithString(e, 2, std::string("ok\0", 3)), d).message(),
            "texts[1] contains a NUL byte at byte 2");
  // Nested: GenerateRequest.stop is repeated, the MaskSpec's fields are not strings.
  pb::GenerateRequest g;
  g.set_model("m");
  g.add_stop()->push_back('a');
  EXPECT_EQ(ValidateUtf8Fields(WithString(g, pb::GenerateRequest::kStopFieldNumber, "\x80"),
                               *pb::GenerateRequest::descriptor())
                .message(),
            "stop[1] is not valid UTF-8 at byte 0");
}

TEST(RawCodecTest, MalformedWireIsInvalidArgument) {
  const auto& d = *pb::EmbedRequest::descriptor();
  for (const std::string& wire : {std::string("\x0a\xff\xff\xff", 4), std::string("\x12\x05" "ab", 4),
                                  std::string("\xff", 1),
                                  // field number 0; a 6-byte tag (found by the fuzzer)
                                  std::string("\x05\x00\x00\x00\x00", 5),
                                  std::string("\xf5\xfe\x92\xdd\xf7\x03\x0a\x03\x02\x03\x6a\x08"
                                              "\x08\x06\x20\x42\x28\x03\x30\x01",
                                              20)}) {
    absl::Status s = ValidateUtf8Fields(wire, d);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr("not a valid protobuf message"));
  }
}

}  // namespace
}  // namespace maskserve::server
