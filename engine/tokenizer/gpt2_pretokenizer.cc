#include "engine/tokenizer/gpt2_pretokenizer.h"

#include <utf8proc.h>

namespace maskserve::engine {

bool Gpt2IsSpace(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || c == 0x20;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool Gpt2IsLetter(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (c > 0x10FFFF) return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}

bool Gpt2IsNumber(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  if (c > 0x10FFFF) return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

namespace {

enum Class : uint8_t { kSpace, kLetter, kNumber, kOther };

Class Classify(char32_t c) {
  if (Gpt2IsSpace(c)) return kSpace;
  if (Gpt2IsLetter(c)) return kLetter;
  if (Gpt2IsNumber(c)) return kNumber;
  return kOther;
}

// Length of the contraction ('s 't 're 've 'm 'll 'd) at text[i] == '\'', or 0.
size_t Contraction(std::u32string_view text, size_t i) {
  if (i + 1 >= text.size()) return 0;
  const char32_t a = text[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= text.size()) return 0;
  const char32_t b = text[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

}  // namespace

void Gpt2PreTokenize(std::u32string_view text, std::vector<std::pair<int32_t, int32_t>>* out) {
  const size_t n = text.size();
  std::vector<Class> cls(n);
  for (size_t k = 0; k < n; ++k) cls[k] = Classify(text[k]);
  // End of the run of class `c` starting at `j`.
  auto run = [&](size_t j, Class c) {
    while (j < n && cls[j] == c) ++j;
    return j;
  };
  size_t i = 0;
  while (i < n) {
    size_t end = 0;
    if (text[i] == '\'') {
      if (const size_t len = Contraction(text, i); len > 0) end = i + len;
    }
    if (end == 0) {
      // ` ?X+` for X in letters, numbers, other: an optional literal space
      // followed by at least one X.
      const size_t j = (text[i] == ' ' && i + 1 < n) ? i + 1 : i;
      if (cls[j] != kSpace) end = run(j, cls[j]);
    }
    if (end == 0) {
      // Whitespace: `\s+(?!\S)` keeps the last space for the next word when
      // the run is followed by a non-space; `\s+` takes a lone one.
      const size_t j = run(i, kSpace);
      if (j == n || j - i == 1) {
        end = j;
      } else {
        end = j - 1;
      }
    }
    out->emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(end));
    i = end;
  }
}

}  // namespace maskserve::engine
