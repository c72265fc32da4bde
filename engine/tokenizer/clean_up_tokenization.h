// Text post-processing shared by the slow tokenizers' decode (transformers
// 4.31 PreTrainedTokenizer): clean_up_tokenization and Python's str.strip().
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace maskserve::engine {

// HF clean_up_tokenization: " ." -> ".", " ?" -> "?", " !" -> "!", " ," -> ",",
// " ' " -> "'", " n't" -> "n't", " 'm" -> "'m", " 's" -> "'s", " 've" -> "'ve",
// " 're" -> "'re", applied one after the other like chained str.replace.
void CleanUpTokenizationSpaces(std::string* text);

// str.replace(from, to): left to right, non-overlapping.
void ReplaceAllInPlace(std::string* s, absl::string_view from, absl::string_view to);

// Python str.strip() (str.isspace() characters) of UTF-8 text; text that is
// not valid UTF-8 is returned unchanged.
std::string StripPythonWhitespace(const std::string& s);

}  // namespace maskserve::engine
