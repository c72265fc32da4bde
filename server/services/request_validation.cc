#include "server/services/request_validation.h"

#include "absl/strings/str_cat.h"

namespace maskserve::server {

absl::StatusOr<const engine::Tokenizer*> RequireTokenizer(const engine::LoadedModel& model,
                                                          const std::string& model_name) {
  if (model.tokenizer() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", model_name, "' has no tokenizer files; send token_ids instead"));
  }
  return model.tokenizer();
}

absl::Status CheckInputCount(const char* field, int n, int limit) {
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(field, " must not be empty"));
  if (n > limit) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", n, " inputs; the limit is ",
                                                   limit, " (--max_inputs_per_request)"));
  }
  return absl::OkStatus();
}

absl::Status CheckPairsMatch(const char* pairs_field, int pairs, const char* field, int n) {
  if (pairs != 0 && pairs != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        pairs_field, " has ", pairs, " entries; it must be empty or match ", field, " (", n, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckIdsInVocab(const char* field, int index, absl::Span<const int32_t> ids,
                             int vocab_size) {
  for (size_t j = 0; j < ids.size(); ++j) {
    if (ids[j] < 0 || ids[j] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", index, "].ids[", j, "] = ", ids[j],
                                                     " is outside the vocabulary [0, ", vocab_size,
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace maskserve::server
