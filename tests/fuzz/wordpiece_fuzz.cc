// libFuzzer target: WordPiece encoding of arbitrary bytes must never crash,
// and must either fail with InvalidArgument (bad UTF-8) or produce
// consistent parallel arrays with in-range offsets.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/tokenizer/utf8.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"

namespace {

using maskserve::engine::Encoding;
using maskserve::engine::TruncationOptions;
using maskserve::engine::WordPieceOptions;
using maskserve::engine::WordPieceTokenizer;

const WordPieceTokenizer& Tok() {
  static const WordPieceTokenizer* tok = [] {
    WordPieceOptions o;
    o.vocab = {"[PAD]",
               "[UNK]",
               "[CLS]",
               "[SEP]",
               "[MASK]",
               "the",
               "a",
               "##s",
               "##ing",
               "un",
               "##aff",
               "##able",
               "hello",
               "world",
               ",",
               ".",
               "!",
               "[",
               "]",
               "e",
               "##e",
               "\xe4\xbd\xa0",
               "\xe1\x84\x8b",
               "##\xe1\x85\xa1",
               "i",
               "##i"};
    o.max_input_chars_per_word = 20;
    auto t = WordPieceTokenizer::Create(std::move(o));
    if (!t.ok()) std::abort();
    return t->release();
  }();
  return *tok;
}

void Check(const absl::StatusOr<Encoding>& e, size_t text_cps) {
  if (!e.ok()) {
    if (e.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return;
  }
  const size_t n = e->ids.size();
  if (e->tokens.size() != n || e->offsets.size() != n || e->type_ids.size() != n) std::abort();
  for (const auto& [b, en] : e->offsets) {
    if (b < 0 || en < b || static_cast<size_t>(en) > text_cps) std::abort();
  }
  for (int32_t id : e->ids) {
    if (id < 0 || id >= Tok().vocab_size()) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::u32string cps;
  const bool valid = maskserve::engine::DecodeUtf8(text, &cps).ok();
  const WordPieceTokenizer& tok = Tok();
  auto e = tok.Encode(text, true, TruncationOptions{});
  if (e.ok() != valid) std::abort();
  Check(e, cps.size());
  if (e.ok()) {
    auto d = tok.Decode(e->ids, size % 2 == 0);
    if (!d.ok()) std::abort();
  }
  // A pair split in the middle, truncated to a small length.
  TruncationOptions t;
  t.max_length = 8 + static_cast<int>(size % 8);
  t.side = size % 3 == 0 ? TruncationOptions::Side::kLeft : TruncationOptions::Side::kRight;
  const std::string a = text.substr(0, size / 2), b = text.substr(size / 2);
  auto p = tok.EncodePair(a, b, true, t);
  Check(p, std::max(a.size(), b.size()));
  return 0;
}
