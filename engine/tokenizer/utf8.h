// Strict UTF-8 decoding and encoding shared by all tokenizers. Tokenizers work
// on code points (offsets are code-point indices, as in Python strings), and
// reject malformed input up front instead of guessing what it meant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace maskserve::engine {

// Decodes `text` into `out` (cleared first). Rejects truncated sequences,
// overlong forms, surrogates and values above U+10FFFF with
// InvalidArgument "text is not valid UTF-8 at byte N" (N = offset of the
// first byte of the bad sequence).
absl::Status DecodeUtf8(absl::string_view text, std::u32string* out);

// Appends the UTF-8 encoding of `cp` (assumed valid) to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// UTF-8 encoding of a code-point sequence.
std::string EncodeUtf8(std::u32string_view cps);

}  // namespace maskserve::engine
