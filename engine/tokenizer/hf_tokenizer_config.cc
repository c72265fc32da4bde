#include "engine/tokenizer/hf_tokenizer_config.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;

constexpr const char* kRoles[] = {"unk_token",  "cls_token", "sep_token", "pad_token",
                                  "mask_token", "bos_token", "eos_token"};

std::optional<HfSpecialToken> ParseSpecial(const json& v) {
  if (v.is_string()) return HfSpecialToken{v.get<std::string>(), true, true};
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    HfSpecialToken t;
    t.content = v["content"].get<std::string>();
    t.lstrip = v.value("lstrip", false);
    t.rstrip = v.value("rstrip", false);
    return t;
  }
  return std::nullopt;
}

void ReadSpecials(const json& j, HfTokenizerConfig* config) {
  for (const char* role : kRoles) {
    if (!j.contains(role)) continue;
    if (j[role].is_null()) {
      config->special_tokens.erase(role);
    } else if (auto t = ParseSpecial(j[role])) {
      config->special_tokens[role] = *t;
    }
  }
  if (j.contains("additional_special_tokens") && j["additional_special_tokens"].is_array()) {
    config->additional_special_tokens.clear();
    for (const json& v : j["additional_special_tokens"]) {
      if (auto t = ParseSpecial(v)) config->additional_special_tokens.push_back(*t);
    }
  }
}

std::optional<bool> OptBool(const json& j, const char* key) {
  if (j.contains(key) && j[key].is_boolean()) return j[key].get<bool>();
  return std::nullopt;
}

// nullopt when the file is absent; discarded json on a parse error.
absl::StatusOr<std::optional<json>> ReadJson(const std::string& path) {
  if (!FileExists(path)) return std::optional<json>();
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  return std::optional<json>(std::move(j));
}

absl::Status ParseInto(const std::string& dir, HfTokenizerConfig* config) {
  auto cfg = ReadJson(dir + "/tokenizer_config.json");
  if (!cfg.ok()) return cfg.status();
  if (cfg->has_value()) {
    const json& j = **cfg;
    if (j.contains("tokenizer_class") && j["tokenizer_class"].is_string()) {
      config->tokenizer_class = j["tokenizer_class"].get<std::string>();
    }
    config->do_lower_case = OptBool(j, "do_lower_case");
    if (auto s = OptBool(j, "strip_accents")) {
      config->strip_accents_set = true;
      config->strip_accents = *s;
    }
    config->tokenize_chinese_chars = OptBool(j, "tokenize_chinese_chars");
    config->do_basic_tokenize = OptBool(j, "do_basic_tokenize");
    config->clean_up_tokenization_spaces = OptBool(j, "clean_up_tokenization_spaces");
    if (j.contains("never_split") && j["never_split"].is_array()) {
      for (const json& v : j["never_split"]) {
        if (v.is_string()) config->never_split.push_back(v.get<std::string>());
      }
    }
    if (j.contains("model_max_length") && j["model_max_length"].is_number()) {
      const double m = j["model_max_length"].get<double>();
      // HF writes int(1e30) for "no limit".
      config->model_max_length = (m > 0 && m < 1e9) ? static_cast<int64_t>(m) : 0;
    }
    ReadSpecials(j, config);
  }
  auto map = ReadJson(dir + "/special_tokens_map.json");
  if (!map.ok()) return map.status();
  if (map->has_value()) ReadSpecials(**map, config);

  auto added = ReadJson(dir + "/added_tokens.json");
  if (!added.ok()) return added.status();
  if (added->has_value()) {
    for (const auto& [token, id] : (*added)->items()) {
      if (!id.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, "/added_tokens.json: id of \"", token, "\" is not an integer"));
      }
      config->added_tokens.emplace_back(token, id.get<int32_t>());
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading ", path));
  return std::move(ss).str();
}

absl::StatusOr<HfTokenizerConfig> ReadHfTokenizerConfig(const std::string& model_dir) {
  HfTokenizerConfig config;
  try {
    absl::Status s = ParseInto(model_dir, &config);
    if (!s.ok()) return s;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_dir, ": bad tokenizer config: ", e.what()));
  }
  return config;
}

}  // namespace maskserve::engine
