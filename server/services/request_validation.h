// Checks shared by the service handlers. Every failure is INVALID_ARGUMENT
// (or FAILED_PRECONDITION for model capabilities) with a message that names
// the request field at fault, e.g. "token_ids[2].ids[5] = 40000 is outside
// the vocabulary [0, 30522)". Kept free of gRPC so it can be fuzzed.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/loaded_model.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::server {

// The model's tokenizer, or FAILED_PRECONDITION when it has none.
absl::StatusOr<const engine::Tokenizer*> RequireTokenizer(const engine::LoadedModel& model,
                                                          const std::string& model_name);

// 1 <= n <= limit for a repeated input field.
absl::Status CheckInputCount(const char* field, int n, int limit);

// A pairs field is empty or as long as its first-text field.
absl::Status CheckPairsMatch(const char* pairs_field, int pairs, const char* field, int n);

// Every id of input `index` of `field` lies in [0, vocab_size).
absl::Status CheckIdsInVocab(const char* field, int index, absl::Span<const int32_t> ids,
                             int vocab_size);

}  // namespace maskserve::server
