// Keys of tokenizer_config.json that only some tokenizer classes read, beyond
// what HfTokenizerConfig holds (hf_tokenizer_config.h).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace maskserve::engine {

struct TokenizerConfigExtras {
  std::optional<bool> add_bos_token;     // GPT-2, Llama
  std::optional<bool> add_eos_token;     // Llama
  std::optional<bool> add_prefix_space;  // GPT-2, RoBERTa
  std::optional<bool> legacy;            // Llama, T5 (absent or null: legacy)
  std::optional<int> extra_ids;          // T5
  std::optional<std::string> errors;     // GPT-2 bytes.decode(errors=...)
  std::optional<bool> separate_vocabs;   // Marian: target_vocab.json for the target side
};

// Reads `model_dir`/tokenizer_config.json; all fields unset when the file is
// absent. InvalidArgument naming the file when it is not a JSON object.
absl::StatusOr<TokenizerConfigExtras> ReadTokenizerConfigExtras(const std::string& model_dir);

}  // namespace maskserve::engine
