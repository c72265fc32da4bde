#include "engine/tokenizer/tokenizer_config_extras.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/hf_tokenizer_config.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {

absl::StatusOr<TokenizerConfigExtras> ReadTokenizerConfigExtras(const std::string& model_dir) {
  TokenizerConfigExtras extras;
  const std::string path = model_dir + "/tokenizer_config.json";
  if (!FileExists(path)) return extras;
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  try {
    const auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
    }
    auto get_bool = [&j](const char* key, std::optional<bool>* out) {
      if (j.contains(key) && j[key].is_boolean()) *out = j[key].get<bool>();
    };
    get_bool("add_bos_token", &extras.add_bos_token);
    get_bool("add_eos_token", &extras.add_eos_token);
    get_bool("add_prefix_space", &extras.add_prefix_space);
    get_bool("legacy", &extras.legacy);
    get_bool("separate_vocabs", &extras.separate_vocabs);
    if (j.contains("extra_ids") && j["extra_ids"].is_number_integer()) {
      extras.extra_ids = j["extra_ids"].get<int>();
    }
    if (j.contains("errors") && j["errors"].is_string()) {
      extras.errors = j["errors"].get<std::string>();
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return extras;
}

}  // namespace maskserve::engine
