// Fuzzes request validation on untrusted wire bytes, the way a raw method
// sees them: ValidateUtf8Fields for each request type that carries user
// text, then the typed parse, then the checks and conversions that run
// before any model work (pooling and mask enums, MaskSpec parameters against
// a sequence length, input counts, pair counts, ids against a vocabulary).
// Invariants: nothing crashes; every refusal is INVALID_ARGUMENT (or
// FAILED_PRECONDITION for capabilities) with a message. (A message
// ValidateUtf8Fields accepts may still fail the typed parse, e.g. a packed
// repeated int field with a torn varint: ParseRequest answers that with
// INVALID_ARGUMENT too.)
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "engine/attention_mask.h"
#include "maskserve/v1/embedding.pb.h"
#include "maskserve/v1/generation.pb.h"
#include "server/services/proto_convert.h"
#include "server/services/raw_codec.h"
#include "server/services/request_validation.h"

namespace {

namespace pb = maskserve::v1;
using maskserve::engine::MaskKind;

void ExpectRefusal(const absl::Status& s) {
  if (s.ok()) return;
  if (s.code() != absl::StatusCode::kInvalidArgument &&
      s.code() != absl::StatusCode::kFailedPrecondition) {
    std::abort();
  }
  if (s.message().empty()) std::abort();
}

void CheckMask(const pb::MaskSpec& proto, int seq_len) {
  auto mask = maskserve::server::FromProtoMask(proto, MaskKind::kBidirectional);
  ExpectRefusal(mask.status());
  if (!mask.ok()) return;
  // Bounded lengths: MaterializeMask is quadratic.
  seq_len = 1 + seq_len % 48;
  ExpectRefusal(mask->Validate(seq_len));
  auto m = maskserve::engine::MaterializeMask(*mask, seq_len);
  ExpectRefusal(m.status());
  if (m.ok() && m->size() != static_cast<size_t>(seq_len) * seq_len) std::abort();
}

void CheckIds(const char* field, const google::protobuf::RepeatedPtrField<pb::TokenIds>& inputs,
              int vocab) {
  for (int i = 0; i < inputs.size() && i < 64; ++i) {
    const auto& ids = inputs[i].ids();
    ExpectRefusal(maskserve::server::CheckIdsInVocab(
        field, i, absl::MakeConstSpan(ids.data(), ids.size()), vocab));
  }
}

// Validates `wire` as a `Message` the way ParseRequest does; true when it parsed.
template <typename Message>
bool Parse(const std::string& wire, Message* out) {
  const absl::Status s = maskserve::server::ValidateUtf8Fields(wire, *Message::descriptor());
  ExpectRefusal(s);
  return s.ok() && out->ParseFromString(wire);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int which = data[0] % 5;
  const int seq_len = data[1];
  const std::string wire(reinterpret_cast<const char*>(data + 2), size - 2);
  const int vocab = 1 + seq_len * 7;
  switch (which) {
    case 0: {
      pb::EmbedRequest r;
      if (!Parse(wire, &r)) return 0;
      const int n = r.texts_size() > 0 ? r.texts_size() : r.token_ids_size();
      ExpectRefusal(maskserve::server::CheckInputCount("texts", n, 8));
      ExpectRefusal(maskserve::server::CheckPairsMatch("text_pairs", r.text_pairs_size(), "texts",
                                                       r.texts_size()));
      ExpectRefusal(maskserve::server::FromProtoPooling(r.pooling(),
                                                        maskserve::engine::PoolingMode::kCls)
                        .status());
      CheckIds("token_ids", r.token_ids(), vocab);
      CheckMask(r.mask(), seq_len);
      break;
    }
    case 1: {
      pb::TokenizeRequest r;
      if (!Parse(wire, &r)) return 0;
      ExpectRefusal(maskserve::server::CheckInputCount("texts", r.texts_size(), 8));
      ExpectRefusal(maskserve::server::CheckPairsMatch("text_pairs", r.text_pairs_size(), "texts",
                                                       r.texts_size()));
      break;
    }
    case 2: {
      pb::FitWhiteningRequest r;
      if (!Parse(wire, &r)) return 0;
      ExpectRefusal(maskserve::server::FromProtoPooling(
                        r.pooling(), maskserve::engine::PoolingMode::kFirstLastAvg)
                        .status());
      break;
    }
    case 3: {
      pb::GenerateRequest r;
      if (!Parse(wire, &r)) return 0;
      CheckMask(r.mask(), seq_len);
      const auto& ids = r.prompt_ids();
      ExpectRefusal(maskserve::server::CheckIdsInVocab(
          "prompt_ids", 0, absl::MakeConstSpan(ids.data(), ids.size()), vocab));
      break;
    }
    default: {
      pb::ParaphraseRequest r;
      if (!Parse(wire, &r)) return 0;
      ExpectRefusal(maskserve::server::FromProtoPooling(r.pooling(),
                                                        maskserve::engine::PoolingMode::kCls)
                        .status());
      break;
    }
  }
  return 0;
}
