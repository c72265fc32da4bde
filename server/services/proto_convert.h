// Conversions between the public API's enums/messages and engine types.
// Unknown enum values are INVALID_ARGUMENT naming the field.
#pragma once

#include "absl/status/statusor.h"
#include "engine/attention_mask.h"
#include "engine/pooling_mode.h"
#include "maskserve/v1/common.pb.h"
#include "maskserve/v1/embedding.pb.h"
#include "maskserve/v1/models.pb.h"
#include "server/whitening_profile.h"

namespace maskserve::server {

maskserve::v1::Pooling ToProtoPooling(engine::PoolingMode mode);

// POOLING_UNSPECIFIED -> `fallback`.
absl::StatusOr<engine::PoolingMode> FromProtoPooling(maskserve::v1::Pooling pooling,
                                                     engine::PoolingMode fallback,
                                                     const char* field = "pooling");

// MASK_KIND_UNSPECIFIED -> `fallback` kind. Parameters are validated per
// sequence later (they depend on the sequence length).
absl::StatusOr<engine::MaskSpec> FromProtoMask(const maskserve::v1::MaskSpec& mask,
                                               engine::MaskKind fallback,
                                               const char* field = "mask");

maskserve::v1::MaskKind ToProtoMaskKind(engine::MaskKind kind);

// The summary ModelInfo and ListWhitening carry.
void FillWhiteningSummary(const StoredProfile& profile,
                          maskserve::v1::WhiteningProfileSummary* out);

// Profile metadata (and, with `include_parameters`, mean / eigen-pairs).
void FillWhiteningProfile(const StoredProfile& profile, bool include_parameters,
                          maskserve::v1::WhiteningProfile* out);

}  // namespace maskserve::server
