// What an HF model directory says about its tokenizer outside the vocabulary
// files: tokenizer_config.json, special_tokens_map.json and added_tokens.json,
// merged the way from_pretrained merges them (special_tokens_map.json wins).
// Shared by every tokenizer kind's loader.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace maskserve::engine {

// A special token as written in the config: a plain string or an AddedToken
// object ({"content": ..., "lstrip": ..., "rstrip": ...}).
struct HfSpecialToken {
  std::string content;
  bool lstrip = true;  // plain strings make HF strip both neighbours
  bool rstrip = true;
};

struct HfTokenizerConfig {
  std::string tokenizer_class;        // e.g. "BertTokenizer"; empty when absent
  std::optional<bool> do_lower_case;  // absent: the class default
  bool strip_accents_set = false;     // key present with a bool value
  bool strip_accents = false;         // its value (null/absent: follow lower-casing)
  std::optional<bool> tokenize_chinese_chars;
  std::optional<bool> do_basic_tokenize;
  std::optional<bool> clean_up_tokenization_spaces;
  std::vector<std::string> never_split;
  int64_t model_max_length = 0;  // 0 when absent or HF's "unbounded" 1e30
  // Role tokens by HF attribute name: "unk_token", "cls_token", "sep_token",
  // "pad_token", "mask_token", "bos_token", "eos_token".
  std::map<std::string, HfSpecialToken> special_tokens;
  std::vector<HfSpecialToken> additional_special_tokens;
  std::vector<std::pair<std::string, int32_t>> added_tokens;  // added_tokens.json
};

// Reads the three files from `model_dir`; missing files are fine (defaults),
// malformed JSON is InvalidArgument naming the file.
absl::StatusOr<HfTokenizerConfig> ReadHfTokenizerConfig(const std::string& model_dir);

// Whole file; NotFound / Internal naming the path on failure.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

bool FileExists(const std::string& path);

}  // namespace maskserve::engine
