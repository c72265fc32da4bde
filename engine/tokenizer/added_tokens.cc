#include "engine/tokenizer/added_tokens.h"

#include <algorithm>

#include "engine/tokenizer/utf8.h"

namespace maskserve::engine {

bool IsPythonSpace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].content.empty()) continue;
    Entry e;
    // Contents come from config files we already parsed as UTF-8; a bad one
    // simply never matches.
    if (!DecodeUtf8(tokens[i].content, &e.text).ok()) continue;
    e.index = static_cast<int32_t>(i);
    e.lstrip = tokens[i].lstrip;
    e.rstrip = tokens[i].rstrip;
    tokens_.push_back(std::move(e));
  }
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const Entry& a, const Entry& b) { return a.text < b.text; });
  for (const Entry& e : tokens_) {
    if (first_chars_.find(e.text[0]) == std::u32string::npos) first_chars_.push_back(e.text[0]);
  }
}

int32_t AddedTokenMatcher::MatchForLowercase(std::u32string_view text, size_t pos) const {
  if (first_chars_.find(text[pos]) == std::u32string::npos) return 0;
  const std::u32string_view rest = text.substr(pos);
  for (const Entry& e : tokens_) {
    if (rest.substr(0, e.text.size()) == e.text) return static_cast<int32_t>(e.text.size());
  }
  return 0;
}

void AddedTokenMatcher::Split(std::u32string_view text, std::vector<Segment>* out) const {
  out->clear();
  const int32_t n = static_cast<int32_t>(text.size());
  std::vector<Segment> raw;
  int32_t text_start = 0;
  int32_t i = 0;
  while (i < n) {
    int32_t best_len = 0, best = -1;
    if (first_chars_.find(text[i]) != std::u32string::npos) {
      const std::u32string_view rest = text.substr(i);
      for (size_t t = 0; t < tokens_.size(); ++t) {
        const auto len = static_cast<int32_t>(tokens_[t].text.size());
        if (len > best_len && rest.substr(0, len) == tokens_[t].text) {
          best_len = len;
          best = static_cast<int32_t>(t);
        }
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    if (text_start < i) raw.push_back({text_start, i, -1});
    raw.push_back({i, i + best_len, best});
    i += best_len;
    text_start = i;
  }
  if (text_start < n) raw.push_back({text_start, n, -1});

  // Strip whitespace of text next to added tokens, as HF does.
  for (size_t k = 0; k < raw.size(); ++k) {
    if (raw[k].token < 0) continue;
    const Entry& e = tokens_[raw[k].token];
    if (e.rstrip && k + 1 < raw.size() && raw[k + 1].token < 0) {
      Segment& r = raw[k + 1];
      while (r.begin < r.end && IsPythonSpace(text[r.begin])) ++r.begin;
    }
    if (e.lstrip && k > 0 && raw[k - 1].token < 0) {
      Segment& l = raw[k - 1];
      while (l.begin < l.end && IsPythonSpace(text[l.end - 1])) --l.end;
    }
  }
  for (Segment& s : raw) {
    if (s.token >= 0) {
      s.token = tokens_[s.token].index;
      out->push_back(s);
    } else if (s.begin < s.end) {
      out->push_back(s);
    }
  }
}

}  // namespace maskserve::engine
