// Short lowercase names of the API enums for command lines and human output
// ("mean" <-> POOLING_MEAN), shared by the CLI, the load generator and the
// whitening JSON format.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "maskserve/v1/common.pb.h"
#include "maskserve/v1/generation.pb.h"
#include "maskserve/v1/models.pb.h"

namespace maskserve::client {

// "cls", "mean", "first_last_avg", "max", "last_token"; "default" for
// UNSPECIFIED.
std::string PoolingName(maskserve::v1::Pooling pooling);
// Accepts the short names (case-insensitive, '-' for '_') and the full enum
// names ("POOLING_MEAN").
absl::StatusOr<maskserve::v1::Pooling> ParsePooling(absl::string_view name);

// "loading", "ready", "failed", "unspecified".
std::string ModelStateName(maskserve::v1::ModelState state);
// "embed", "generate".
std::string TaskName(maskserve::v1::Task task);
// "bidirectional", "causal", "unilm", "local", "dilated", "strided".
std::string MaskKindName(maskserve::v1::MaskKind kind);
// "greedy", "sample", "beam"; "default" for UNSPECIFIED.
absl::StatusOr<maskserve::v1::Strategy> ParseStrategy(absl::string_view name);
// "length", "stop_token", "stop_string", "cancelled".
std::string FinishReasonName(maskserve::v1::FinishReason reason);

// Mask spec of the command line: KIND[:ARGS][+causal] with
//   bidirectional | causal | unilm[:PREFIX_LEN] | local:WINDOW |
//   dilated:RATE | strided:WINDOW:RATE
// e.g. "local:64+causal" = sliding-window causal attention.
absl::StatusOr<maskserve::v1::MaskSpec> ParseMaskSpec(absl::string_view spec);

}  // namespace maskserve::client
