// Python's bytes.decode("utf-8", errors="replace"): byte-level tokenizers
// produce arbitrary byte strings, and HF decodes them this way.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace maskserve::engine {

// Valid UTF-8 of `bytes`, each maximal ill-formed subsequence (Unicode's
// "maximal subpart" practice, which CPython follows) replaced by one U+FFFD:
// a lone continuation or invalid lead byte gives one U+FFFD per byte, a
// truncated sequence one U+FFFD for the whole valid prefix.
std::string DecodeUtf8Replace(absl::string_view bytes);

}  // namespace maskserve::engine
