// HuggingFace generation_config.json: the generation defaults a checkpoint
// declares next to config.json. Only what the engine's generative models
// report is read (eos / pad / bos / decoder start ids); sampling knobs are
// request parameters, not model facts.
//
// `_from_model_config`: transformers 4.31 rebuilds the generation config
// from config.json at every generate() call when this flag is true, so a
// hand-edited file (e.g. stories260K's eos_token_id [1, 2], where config.json
// says 2) is ignored by HF. We keep the file's values (they are what the
// checkpoint's author declared; llama2.c stops stories260K on BOS = 1) and
// expose the flag so callers can tell.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace maskserve::engine {

struct GenerationConfig {
  // eos_token_id (an int or a list); nullopt when absent or null.
  std::optional<std::vector<int64_t>> eos_token_ids;
  std::optional<int64_t> pad_token_id;            // pad_token_id
  std::optional<int64_t> bos_token_id;            // bos_token_id
  std::optional<int64_t> decoder_start_token_id;  // decoder_start_token_id
  bool from_model_config = false;                 // "_from_model_config": true
};

// Parses generation_config.json text; errors name `source` and the key.
absl::StatusOr<GenerationConfig> ParseGenerationConfig(absl::string_view json,
                                                       absl::string_view source);

// <dir>/generation_config.json, or nullopt when the file does not exist.
absl::StatusOr<std::optional<GenerationConfig>> LoadGenerationConfig(const std::string& dir);

}  // namespace maskserve::engine
