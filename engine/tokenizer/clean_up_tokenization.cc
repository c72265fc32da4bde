#include "engine/tokenizer/clean_up_tokenization.h"

#include <utility>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/utf8.h"

namespace maskserve::engine {

void ReplaceAllInPlace(std::string* s, absl::string_view from, absl::string_view to) {
  if (from.empty() || s->find(from.data(), 0, from.size()) == std::string::npos) return;
  std::string out;
  out.reserve(s->size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s->find(from.data(), pos, from.size());
    if (hit == std::string::npos) break;
    out.append(*s, pos, hit - pos);
    out.append(to.data(), to.size());
    pos = hit + from.size();
  }
  out.append(*s, pos, std::string::npos);
  *s = std::move(out);
}

void CleanUpTokenizationSpaces(std::string* text) {
  static constexpr std::pair<absl::string_view, absl::string_view> kCleanups[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kCleanups) ReplaceAllInPlace(text, from, to);
}

std::string StripPythonWhitespace(const std::string& s) {
  std::u32string cps;
  if (!DecodeUtf8(s, &cps).ok()) return s;
  size_t b = 0, e = cps.size();
  while (b < e && IsPythonSpace(cps[b])) ++b;
  while (e > b && IsPythonSpace(cps[e - 1])) --e;
  if (b == 0 && e == cps.size()) return s;
  return EncodeUtf8(std::u32string_view(cps).substr(b, e - b));
}

}  // namespace maskserve::engine
