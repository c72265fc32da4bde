// libFuzzer target: byte-level BPE encoding of arbitrary bytes (small
// in-memory vocabulary and merges, RoBERTa template, tiny merge cache) must
// never crash, must fail only with InvalidArgument (bad UTF-8), and must give
// consistent parallel arrays, in-range ids and offsets, and a decode that is
// valid UTF-8 (errors="replace").
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/tokenizer/byte_level_bpe_tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace {

using maskserve::engine::BpeTemplate;
using maskserve::engine::ByteLevelBpeOptions;
using maskserve::engine::ByteLevelBpeTokenizer;
using maskserve::engine::Encoding;
using maskserve::engine::TruncationOptions;

const ByteLevelBpeTokenizer& Tok() {
  static const ByteLevelBpeTokenizer* tok = [] {
    ByteLevelBpeOptions o;
    // Byte-level characters: "Ġ" is the space, "Ã" and "©" the bytes of "é".
    o.vocab = {{"<s>", 0},  {"<pad>", 1}, {"</s>", 2},  {"<unk>", 3},  {"<mask>", 4},
               {"a", 5},    {"b", 6},     {"ab", 7},    {"Ġ", 8},      {"Ġa", 9},
               {"Ġab", 10}, {"Ã", 11},    {"©", 12},    {"Ã©", 13},    {"'", 14},
               {"s", 15},   {"'s", 16},   {"aa", 17},   {"aaa", 18},   {"Ċ", 19}};
    o.merges = {{"a", "b"}, {"Ġ", "a"}, {"Ġa", "b"}, {"Ã", "©"},
                {"'", "s"}, {"a", "a"}, {"aa", "a"}, {"Ġ", "ab"}};
    o.post_processor = BpeTemplate::kRoberta;
    o.bos_token = {"<s>", false, false};
    o.eos_token = {"</s>", false, false};
    o.sep_token = {"</s>", false, false};
    o.cls_token = {"<s>", false, false};
    o.unk_token = {"<unk>", false, false};
    o.pad_token = {"<pad>", false, false};
    o.mask_token = {"<mask>", true, false};
    o.add_prefix_space = true;
    o.cache_capacity = 64;  // small, so eviction runs too
    auto t = ByteLevelBpeTokenizer::Create(std::move(o));
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
  const ByteLevelBpeTokenizer& tok = Tok();
  auto e = tok.Encode(text, true, TruncationOptions{});
  if (e.ok() != valid) std::abort();
  Check(e, cps.size());
  if (e.ok()) {
    auto d = tok.Decode(e->ids, size % 2 == 0);
    if (!d.ok() || !maskserve::engine::DecodeUtf8(*d, &cps).ok()) std::abort();
  }
  // Any id sequence (here: the input bytes as ids) decodes to valid UTF-8.
  std::vector<int32_t> ids(data, data + std::min<size_t>(size, 64));
  for (int32_t& id : ids) id = id % (tok.vocab_size() + 2) - 1;
  auto d = tok.Decode(ids, size % 3 == 0);
  if (!d.ok() || !maskserve::engine::DecodeUtf8(*d, &cps).ok()) std::abort();
  TruncationOptions t;
  t.max_length = 6 + static_cast<int>(size % 8);
  const std::string a = text.substr(0, size / 2), b = text.substr(size / 2);
  auto p = tok.EncodePair(a, b, true, t);
  std::u32string ca, cb;
  (void)maskserve::engine::DecodeUtf8(a, &ca);
  (void)maskserve::engine::DecodeUtf8(b, &cb);
  Check(p, std::max(ca.size(), cb.size()));
  return 0;
}
