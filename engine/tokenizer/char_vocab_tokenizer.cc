#include "engine/tokenizer/char_vocab_tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/hf_tokenizer_config.h"
#include "engine/tokenizer/truncation.h"
#include "engine/tokenizer/utf8.h"

namespace maskserve::engine {

absl::StatusOr<std::vector<std::string>> ParseVocabLines(absl::string_view contents) {
  std::u32string check;
  if (absl::Status s = DecodeUtf8(contents, &check); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary: ", s.message()));
  }
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < contents.size()) {
    size_t nl = contents.find('\n', start);
    if (nl == absl::string_view::npos) nl = contents.size();
    lines.emplace_back(contents.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

absl::StatusOr<std::unique_ptr<CharVocabTokenizer>> CharVocabTokenizer::FromFile(
    const std::string& path, CharVocabOptions options) {
  auto contents = ReadFileToString(path);
  if (!contents.ok()) return contents.status();
  auto vocab = ParseVocabLines(*contents);
  if (!vocab.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", vocab.status().message()));
  options.vocab = *std::move(vocab);
  auto t = Create(std::move(options));
  if (!t.ok()) return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  return t;
}

absl::StatusOr<std::unique_ptr<CharVocabTokenizer>> CharVocabTokenizer::Create(
    CharVocabOptions options) {
  if (options.vocab.empty()) return absl::InvalidArgumentError("character vocabulary is empty");
  if (options.unk_token.empty()) return absl::InvalidArgumentError("an unk token is required");
  if (std::find(options.vocab.begin(), options.vocab.end(), options.unk_token) ==
      options.vocab.end()) {
    options.vocab.push_back(options.unk_token);
  }
  std::unique_ptr<CharVocabTokenizer> t(new CharVocabTokenizer(std::move(options)));
  const CharVocabOptions& o = t->options_;
  for (size_t i = 0; i < o.vocab.size(); ++i) {
    t->ids_.try_emplace(o.vocab[i], static_cast<int32_t>(i));  // first occurrence wins
  }
  auto role = [&t](const std::string& token, std::optional<int32_t>* slot) {
    if (token.empty()) return;
    if (auto id = t->TokenToId(token)) {
      *slot = id;
      t->special_set_.insert(*id);
    }
  };
  role(o.pad_token, &t->special_ids_.pad);
  role(o.bos_token, &t->special_ids_.bos);
  role(o.eos_token, &t->special_ids_.eos);
  role(o.unk_token, &t->special_ids_.unk);
  t->unk_id_ = *t->special_ids_.unk;
  if (o.add_bos && !t->special_ids_.bos) return absl::InvalidArgumentError("add_bos without a bos token");
  if (o.add_eos && !t->special_ids_.eos) return absl::InvalidArgumentError("add_eos without an eos token");
  return t;
}

absl::Status CharVocabTokenizer::Tokenize(absl::string_view text, std::vector<Piece>* out) const {
  std::u32string cps;
  if (absl::Status s = DecodeUtf8(text, &cps); !s.ok()) return s;
  std::string ch;
  for (size_t k = 0; k < cps.size(); ++k) {
    if (IsPythonSpace(cps[k])) continue;
    ch.clear();
    AppendUtf8(cps[k], &ch);
    auto it = ids_.find(ch);
    const auto pos = static_cast<int32_t>(k);
    out->push_back({it != ids_.end() ? it->second : unk_id_, pos, pos + 1});
  }
  return absl::OkStatus();
}

int CharVocabTokenizer::NumSpecialTokensToAdd(bool pair) const {
  const int per = (options_.add_bos ? 1 : 0) + (options_.add_eos ? 1 : 0);
  return pair ? 2 * per : per;
}

absl::StatusOr<Encoding> CharVocabTokenizer::Assemble(const std::vector<Piece>& a,
                                                      const std::vector<Piece>* b,
                                                      bool add_special_tokens,
                                                      const TruncationOptions& truncation) const {
  const bool pair = b != nullptr;
  const int32_t num_special = add_special_tokens ? NumSpecialTokensToAdd(pair) : 0;
  const auto len_a = static_cast<int32_t>(a.size());
  const int32_t len_b = pair ? static_cast<int32_t>(b->size()) : -1;
  const TruncationPlan plan = PlanTruncation(len_a, len_b, num_special, truncation);
  Encoding e;
  e.num_tokens_untruncated = len_a + std::max(len_b, 0) + num_special;
  e.truncated = plan.truncated();
  auto push = [&](int32_t id, int32_t begin, int32_t end, int32_t type) {
    e.ids.push_back(id);
    e.tokens.push_back(options_.vocab[id]);
    e.offsets.emplace_back(begin, end);
    e.type_ids.push_back(type);
  };
  auto sequence = [&](const std::vector<Piece>& v, int32_t from, int32_t to, int32_t type) {
    if (add_special_tokens && options_.add_bos) push(*special_ids_.bos, 0, 0, type);
    for (int32_t i = from; i < to; ++i) push(v[i].id, v[i].begin, v[i].end, type);
    if (add_special_tokens && options_.add_eos) push(*special_ids_.eos, 0, 0, type);
  };
  sequence(a, plan.a_front, len_a - plan.a_back, 0);
  if (pair) sequence(*b, plan.b_front, len_b - plan.b_back, add_special_tokens ? 1 : 0);
  return e;
}

absl::StatusOr<Encoding> CharVocabTokenizer::Encode(absl::string_view text, bool add_special_tokens,
                                                    const TruncationOptions& truncation) const {
  std::vector<Piece> a;
  if (absl::Status s = Tokenize(text, &a); !s.ok()) return s;
  return Assemble(a, nullptr, add_special_tokens, truncation);
}

absl::StatusOr<Encoding> CharVocabTokenizer::EncodePair(absl::string_view a, absl::string_view b,
                                                        bool add_special_tokens,
                                                        const TruncationOptions& truncation) const {
  std::vector<Piece> pa, pb;
  if (absl::Status s = Tokenize(a, &pa); !s.ok()) return s;
  if (absl::Status s = Tokenize(b, &pb); !s.ok()) return s;
  return Assemble(pa, &pb, add_special_tokens, truncation);
}

absl::StatusOr<std::string> CharVocabTokenizer::Decode(absl::Span<const int32_t> ids,
                                                       bool skip_special_tokens) const {
  std::string text;
  bool first = true;
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    const bool in_range = id >= 0 && static_cast<size_t>(id) < options_.vocab.size();
    if (!first) text.append(options_.decode_separator);
    text.append(options_.vocab[in_range ? id : unk_id_]);
    first = false;
  }
  return text;
}

absl::StatusOr<std::string> CharVocabTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= options_.vocab.size()) {
    return absl::NotFoundError(
        absl::StrCat("token id ", id, " is outside [0, ", options_.vocab.size(), ")"));
  }
  return options_.vocab[id];
}

std::optional<int32_t> CharVocabTokenizer::TokenToId(absl::string_view token) const {
  if (auto it = ids_.find(token); it != ids_.end()) return it->second;
  return std::nullopt;
}

}  // namespace maskserve::engine
