#include "engine/tokenizer/python_utf8_decode.h"

namespace maskserve::engine {

std::string DecodeUtf8Replace(absl::string_view bytes) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b0 = s[i];
    if (b0 < 0x80) {
      out.push_back(static_cast<char>(b0));
      ++i;
      continue;
    }
    // Sequence length and the allowed range of the second byte (Unicode
    // Table 3-7, Well-Formed UTF-8 Byte Sequences).
    int len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
    }
    if (len == 0) {  // continuation byte or invalid lead
      out.append(kReplacement);
      ++i;
      continue;
    }
    // How many bytes form a valid prefix of a sequence.
    size_t k = 1;
    while (k < static_cast<size_t>(len) && i + k < n) {
      const unsigned char b = s[i + k];
      const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (b < l || b > h) break;
      ++k;
    }
    if (k == static_cast<size_t>(len)) {
      out.append(bytes.data() + i, k);
    } else {
      out.append(kReplacement);
    }
    i += k;
  }
  return out;
}

}  // namespace maskserve::engine
