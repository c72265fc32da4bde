#include "engine/generation_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;

// An optional integer key; null counts as absent.
absl::StatusOr<std::optional<int64_t>> OptionalId(const json& j, const char* key,
                                                  absl::string_view source) {
  if (!j.contains(key) || j[key].is_null()) return std::optional<int64_t>();
  if (!j[key].is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": key \"", key, "\" must be an integer"));
  }
  return std::optional<int64_t>(j[key].get<int64_t>());
}

}  // namespace

absl::StatusOr<GenerationConfig> ParseGenerationConfig(absl::string_view text,
                                                       absl::string_view source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": invalid JSON"));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  GenerationConfig g;
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const json& e = j["eos_token_id"];
    std::vector<int64_t> ids;
    if (e.is_number_integer()) {
      ids.push_back(e.get<int64_t>());
    } else if (e.is_array()) {
      for (const json& v : e) {
        if (!v.is_number_integer()) {
          return absl::InvalidArgumentError(absl::StrCat(
              source, ": key \"eos_token_id\" must be an integer or a list of integers"));
        }
        ids.push_back(v.get<int64_t>());
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": key \"eos_token_id\" must be an integer or a list of integers"));
    }
    g.eos_token_ids = std::move(ids);
  }
  for (const auto& [key, dst] :
       {std::pair<const char*, std::optional<int64_t>*>{"pad_token_id", &g.pad_token_id},
        {"bos_token_id", &g.bos_token_id},
        {"decoder_start_token_id", &g.decoder_start_token_id}}) {
    absl::StatusOr<std::optional<int64_t>> v = OptionalId(j, key, source);
    if (!v.ok()) return v.status();
    *dst = *v;
  }
  if (j.contains("_from_model_config") && j["_from_model_config"].is_boolean()) {
    g.from_model_config = j["_from_model_config"].get<bool>();
  }
  return g;
}

absl::StatusOr<std::optional<GenerationConfig>> LoadGenerationConfig(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<GenerationConfig>();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<GenerationConfig> g = ParseGenerationConfig(ss.str(), path.string());
  if (!g.ok()) return g.status();
  return std::optional<GenerationConfig>(std::move(*g));
}

}  // namespace maskserve::engine
