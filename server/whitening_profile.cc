#include "server/whitening_profile.h"

#include <ctime>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace maskserve::server {
namespace {

void RoundToFloat(std::vector<double>& values) {
  for (double& v : values) v = static_cast<double>(static_cast<float>(v));
}

}  // namespace

bool IsValidWhiteningName(absl::string_view name) {
  if (name.empty() || name.size() > 64 || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::Status ValidateWhiteningName(absl::string_view name, absl::string_view what) {
  if (IsValidWhiteningName(name)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, " name '", name, "' is invalid: must match [A-Za-z0-9_.-]{1,64} and not be . or .."));
}

absl::StatusOr<std::shared_ptr<const StoredProfile>> StoredProfile::Create(
    WhiteningProfileInfo info, engine::WhiteningParams params) {
  if (auto s = ValidateWhiteningName(info.model, "model"); !s.ok()) return s;
  if (auto s = ValidateWhiteningName(info.name, "profile"); !s.ok()) return s;
  RoundToFloat(params.mean);
  RoundToFloat(params.eigenvalues);
  RoundToFloat(params.eigenvectors);
  auto transform = engine::WhiteningTransform::Create(params, info.k, info.beta, info.gamma);
  if (!transform.ok()) return transform.status();
  if (info.created_unix_s == 0) info.created_unix_s = static_cast<int64_t>(std::time(nullptr));
  return std::shared_ptr<const StoredProfile>(
      new StoredProfile(std::move(info), std::move(params), std::move(*transform)));
}

}  // namespace maskserve::server
