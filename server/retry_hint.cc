#include "server/retry_hint.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace maskserve::server {
namespace {

constexpr char kPayloadUrl[] = "maskserve.dev/retry-after-ms";

}  // namespace

absl::Status WithRetryAfter(absl::Status status, absl::Duration delay) {
  if (status.ok()) return status;
  const int64_t ms =
      std::clamp<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(delay, absl::Milliseconds(1))),
                          1, 3600 * 1000);
  status.SetPayload(kPayloadUrl, absl::Cord(absl::StrCat(ms)));
  return status;
}

std::optional<absl::Duration> RetryAfterOf(const absl::Status& status) {
  auto payload = status.GetPayload(kPayloadUrl);
  if (!payload) return std::nullopt;
  int64_t ms = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &ms) || ms < 1) return std::nullopt;
  return absl::Milliseconds(ms);
}

}  // namespace maskserve::server
