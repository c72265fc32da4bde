// A "retry after" hint carried on an absl::Status (RESOURCE_EXHAUSTED from a
// full queue, a predicted deadline miss or a rate limit) from where it is
// decided to where the call finishes. ToGrpcStatus turns it into a standard
// google.rpc.RetryInfo in the status details, and the request interceptor
// mirrors it as the trailing metadata `retry-after-ms` (whole milliseconds),
// so any client can read it without the googleapis protos.
#pragma once

#include <optional>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace maskserve::server {

// Trailing metadata key with the hint in whole milliseconds (>= 1).
inline constexpr char kRetryAfterMsKey[] = "retry-after-ms";

// Attaches `delay` (clamped to [1 ms, 1 h]) to a non-OK `status`.
absl::Status WithRetryAfter(absl::Status status, absl::Duration delay);

// The hint attached by WithRetryAfter, if any.
std::optional<absl::Duration> RetryAfterOf(const absl::Status& status);

}  // namespace maskserve::server
