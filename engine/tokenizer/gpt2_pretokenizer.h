// GPT-2's pre-tokenization, the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// applied with re.findall (Python `regex` module), implemented by hand
// because no available regex library has \p{...} classes. Matches tile the
// text: every code point belongs to exactly one piece.
//   \s     the Unicode White_Space property (what `regex` uses; unlike
//          str.isspace() it excludes U+001C..U+001F)
//   \p{L}  general categories Lu Ll Lt Lm Lo, \p{N}: Nd Nl No (utf8proc,
//          Unicode 15; the `regex` module's own tables can differ only on
//          code points assigned after that)
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace maskserve::engine {

// Appends the [begin, end) code-point spans of the matches, in order.
void Gpt2PreTokenize(std::u32string_view text, std::vector<std::pair<int32_t, int32_t>>* out);

// The classes the pattern uses.
bool Gpt2IsSpace(char32_t c);
bool Gpt2IsLetter(char32_t c);
bool Gpt2IsNumber(char32_t c);

}  // namespace maskserve::engine
