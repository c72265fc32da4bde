// HF slow-tokenizer handling of added/special token strings inside the text
// (PreTrainedTokenizer.tokenize in transformers 4.31): such strings are cut
// out exactly and case-sensitively before the model's own tokenization, so
// "is [MASK]." gives [MASK] rather than "[ mask ] .".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace maskserve::engine {

struct AddedToken {
  std::string content;  // exact UTF-8 text to match
  int32_t id = 0;       // id it encodes to
  bool special = true;  // one of all_special_tokens (dropped by skip_special_tokens)
  // Strip Python whitespace from the neighbouring text on that side. HF does
  // both for special tokens given as plain strings (the from_pretrained case),
  // and follows AddedToken(lstrip/rstrip) otherwise.
  bool lstrip = true;
  bool rstrip = true;
};

// Splits a code-point sequence into text and added-token segments.
class AddedTokenMatcher {
 public:
  // A piece of the input: [begin, end) code points; `token` indexes the
  // constructor's vector, or is -1 for ordinary text.
  struct Segment {
    int32_t begin = 0;
    int32_t end = 0;
    int32_t token = -1;
  };

  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  bool empty() const { return tokens_.empty(); }

  // HF Trie.split: leftmost, then longest match; then neighbour stripping.
  // Text segments that end up empty are dropped.
  void Split(std::u32string_view text, std::vector<Segment>* out) const;

  // Length of the token that HF's lower-casing regex
  // `(tok1|tok2|...)|(.+?)` protects at `pos` (first match in sorted order),
  // or 0 when none matches there.
  int32_t MatchForLowercase(std::u32string_view text, size_t pos) const;

 private:
  struct Entry {
    std::u32string text;
    int32_t index;  // into the constructor's vector
    bool lstrip;
    bool rstrip;
  };
  std::vector<Entry> tokens_;   // sorted by text (= Python's sorted order)
  std::u32string first_chars_;  // first code point of every token, for a quick reject
};

// Python str.isspace() (what str.strip() and str.split() use).
bool IsPythonSpace(char32_t cp);

}  // namespace maskserve::engine
