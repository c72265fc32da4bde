#include "engine/tokenizer/marian_tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/tokenizer/byte_level_bpe_tokenizer.h"
#include "engine/tokenizer/clean_up_tokenization.h"
#include "engine/tokenizer/tokenizer_config_extras.h"
#include "engine/tokenizer/truncation.h"
#include "engine/tokenizer/utf8.h"

namespace maskserve::engine {
namespace {

constexpr absl::string_view kSpieceUnderline = "\xE2\x96\x81";  // U+2581

absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> ReadVocab(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> v = ParseVocabJson(*text);
  if (!v.ok()) {
    return absl::Status(v.status().code(), absl::StrCat(path, ": ", v.status().message()));
  }
  return v;
}

// End (exclusive) of a ">>.+?<<" match starting at byte i, or npos.
size_t LanguageCodeEnd(absl::string_view text, size_t i) {
  if (text.substr(i, 2) != ">>") return absl::string_view::npos;
  // `.+?`: at least one character other than a newline, then the first "<<".
  for (size_t j = i + 2; j < text.size(); ++j) {
    if (text[j] == '\n') return absl::string_view::npos;
    if (j >= i + 3 && text[j] == '<' && j + 1 < text.size() && text[j + 1] == '<') return j + 2;
  }
  return absl::string_view::npos;
}

}  // namespace

absl::StatusOr<MarianTokenizerOptions> MarianTokenizerOptionsFromDirectory(
    const std::string& model_dir, bool target_side) {
  MarianTokenizerOptions o;
  o.source_spm = model_dir + "/source.spm";
  o.target_spm = model_dir + "/target.spm";
  for (const std::string& f : {o.source_spm, o.target_spm}) {
    if (!FileExists(f)) return absl::NotFoundError(absl::StrCat(f, " does not exist"));
  }
  absl::StatusOr<HfTokenizerConfig> cfg = ReadHfTokenizerConfig(model_dir);
  if (!cfg.ok()) return cfg.status();
  absl::StatusOr<TokenizerConfigExtras> extras = ReadTokenizerConfigExtras(model_dir);
  if (!extras.ok()) return extras.status();
  absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> vocab =
      ReadVocab(model_dir + "/vocab.json");
  if (!vocab.ok()) return vocab.status();
  o.vocab = *std::move(vocab);
  o.separate_vocabs = extras->separate_vocabs.value_or(false);
  if (o.separate_vocabs) {
    absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> tv =
        ReadVocab(model_dir + "/target_vocab.json");
    if (!tv.ok()) return tv.status();
    o.target_vocab = *std::move(tv);
  }
  o.target_side = target_side;
  const std::pair<const char*, HfSpecialToken*> roles[] = {
      {"eos_token", &o.eos_token}, {"unk_token", &o.unk_token}, {"pad_token", &o.pad_token}};
  for (const auto& [role, slot] : roles) {
    auto it = cfg->special_tokens.find(role);
    if (it != cfg->special_tokens.end()) *slot = it->second;
  }
  o.additional_special_tokens = cfg->additional_special_tokens;
  if (cfg->model_max_length > 0) o.model_max_length = static_cast<int>(cfg->model_max_length);
  if (cfg->clean_up_tokenization_spaces) {
    o.clean_up_tokenization_spaces = *cfg->clean_up_tokenization_spaces;
  }
  return o;
}

absl::StatusOr<std::unique_ptr<MarianTokenizer>> MarianTokenizer::Create(
    MarianTokenizerOptions options) {
  std::unique_ptr<MarianTokenizer> t(new MarianTokenizer(std::move(options)));
  const MarianTokenizerOptions& o = t->options_;
  auto build = [](const std::vector<std::pair<std::string, int32_t>>& entries,
                  Vocab* v) -> absl::Status {
    for (const auto& [token, id] : entries) {
      if (id < 0 || id > (1 << 26)) {
        return absl::InvalidArgumentError(absl::StrCat("token \"", token, "\" has bad id ", id));
      }
      v->ids[token] = id;
      if (static_cast<size_t>(id) >= v->tokens.size()) v->tokens.resize(id + 1);
      v->tokens[id] = token;
    }
    return absl::OkStatus();
  };
  Vocab source;
  if (absl::Status s = build(o.vocab, &source); !s.ok()) return s;
  Vocab target;
  if (o.separate_vocabs) {
    if (absl::Status s = build(o.target_vocab, &target); !s.ok()) return s;
  } else {
    target = source;
  }
  t->encode_vocab_ = o.target_side ? target : source;
  t->decode_vocab_ = std::move(target);
  t->id_to_token_ = t->encode_vocab_.tokens;
  absl::StatusOr<std::unique_ptr<SpmModel>> enc =
      SpmModel::Load(o.target_side ? o.target_spm : o.source_spm);
  if (!enc.ok()) return enc.status();
  t->encode_spm_ = *std::move(enc);
  absl::StatusOr<std::unique_ptr<SpmModel>> dec = SpmModel::Load(o.target_spm);
  if (!dec.ok()) return dec.status();
  t->decode_spm_ = *std::move(dec);

  auto resolve = [&t](const HfSpecialToken& s, std::optional<int32_t>* slot) -> absl::Status {
    if (s.content.empty()) return absl::OkStatus();
    auto it = t->encode_vocab_.ids.find(s.content);
    if (it == t->encode_vocab_.ids.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("special token \"", s.content, "\" is not in the vocabulary"));
    }
    if (slot != nullptr) *slot = it->second;
    t->special_set_.insert(it->second);
    t->special_strings_.insert(s.content);
    t->specials_.push_back(AddedToken{s.content, it->second, /*special=*/true, s.lstrip, s.rstrip});
    return absl::OkStatus();
  };
  for (const auto& [tok, slot] : {std::pair<const HfSpecialToken*, std::optional<int32_t>*>{
                                      &o.eos_token, &t->special_ids_.eos},
                                  {&o.unk_token, &t->special_ids_.unk},
                                  {&o.pad_token, &t->special_ids_.pad}}) {
    if (absl::Status s = resolve(*tok, slot); !s.ok()) return s;
  }
  for (const HfSpecialToken& s : o.additional_special_tokens) {
    if (absl::Status st = resolve(s, nullptr); !st.ok()) return st;
  }
  if (!t->special_ids_.eos || !t->special_ids_.unk) {
    return absl::InvalidArgumentError("Marian tokenizer needs eos and unk tokens");
  }
  t->unk_id_ = *t->special_ids_.unk;
  t->matcher_ = AddedTokenMatcher(t->specials_);
  return t;
}

int32_t MarianTokenizer::IdOf(const std::string& token) const {
  auto it = encode_vocab_.ids.find(token);
  return it == encode_vocab_.ids.end() ? unk_id_ : it->second;
}

absl::Status MarianTokenizer::TokenizeSegment(absl::string_view text,
                                              const std::vector<int32_t>& cp_byte,
                                              const std::vector<int32_t>& byte_cp, int32_t begin,
                                              int32_t end, std::vector<Piece>* out) const {
  const absl::string_view seg =
      text.substr(cp_byte[begin], static_cast<size_t>(cp_byte[end] - cp_byte[begin]));
  const int32_t base = cp_byte[begin];
  // remove_language_code: a code at the very start is kept as a token; every
  // code is removed from the text sentencepiece sees.
  std::string stripped;
  std::vector<int32_t> orig;  // original byte of each byte of `stripped`
  size_t i = 0;
  while (i < seg.size()) {
    const size_t e = LanguageCodeEnd(seg, i);
    if (e != absl::string_view::npos) {
      if (i == 0) {
        const std::string code(seg.substr(0, e));
        out->push_back({IdOf(code), byte_cp[base], byte_cp[base + e], code});
      }
      i = e;
      continue;
    }
    stripped.push_back(seg[i]);
    orig.push_back(base + static_cast<int32_t>(i));
    ++i;
  }
  orig.push_back(base + static_cast<int32_t>(seg.size()));
  if (stripped.empty()) return absl::OkStatus();
  std::vector<SpmPiece> pieces;
  if (absl::Status s = encode_spm_->Encode(stripped, &pieces); !s.ok()) return s;
  const int32_t n = static_cast<int32_t>(stripped.size());
  for (const SpmPiece& p : pieces) {
    const int32_t pb = std::min<int32_t>(static_cast<int32_t>(p.begin), n);
    const int32_t pe = std::max(pb, std::min<int32_t>(static_cast<int32_t>(p.end), n));
    std::string token;
    if (p.id == encode_spm_->unk_id()) {
      // sentencepiece returns the surface of an unknown piece.
      token = stripped.substr(pb, pe - pb);
    } else {
      token = encode_spm_->IdToPiece(p.id);
    }
    const int32_t ob = orig[pb];
    const int32_t oe = orig[pe];
    const int32_t cb = byte_cp[ob];
    const bool boundary = oe == static_cast<int32_t>(text.size()) ||
                          (static_cast<unsigned char>(text[oe]) & 0xC0) != 0x80;
    const int32_t ce = boundary ? byte_cp[oe] : byte_cp[oe] + 1;
    out->push_back({IdOf(token), cb, std::max(cb, ce), std::move(token)});
  }
  return absl::OkStatus();
}

absl::Status MarianTokenizer::Tokenize(absl::string_view text, std::vector<Piece>* out) const {
  std::u32string cps;
  if (absl::Status s = DecodeUtf8(text, &cps); !s.ok()) return s;
  const auto n = static_cast<int32_t>(cps.size());
  std::vector<int32_t> cp_byte(n + 1);
  std::vector<int32_t> byte_cp(text.size() + 1);
  int32_t pos = 0;
  for (int32_t k = 0; k < n; ++k) {
    cp_byte[k] = pos;
    const char32_t c = cps[k];
    const int len = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    for (int j = 0; j < len; ++j) byte_cp[pos + j] = k;
    pos += len;
  }
  cp_byte[n] = pos;
  byte_cp[pos] = n;
  std::vector<AddedTokenMatcher::Segment> segs;
  if (n > 0) matcher_.Split(cps, &segs);
  for (const auto& seg : segs) {
    if (seg.token >= 0) {
      out->push_back({specials_[seg.token].id, seg.begin, seg.end, specials_[seg.token].content});
      continue;
    }
    if (absl::Status s = TokenizeSegment(text, cp_byte, byte_cp, seg.begin, seg.end, out);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Encoding> MarianTokenizer::Assemble(const std::vector<Piece>& a,
                                                   const std::vector<Piece>* b,
                                                   bool add_special_tokens,
                                                   const TruncationOptions& truncation) const {
  const bool pair = b != nullptr;
  const int32_t num_special = add_special_tokens ? 1 : 0;
  const auto len_a = static_cast<int32_t>(a.size());
  const int32_t len_b = pair ? static_cast<int32_t>(b->size()) : -1;
  const TruncationPlan plan = PlanTruncation(len_a, len_b, num_special, truncation);
  Encoding e;
  e.num_tokens_untruncated = len_a + std::max(len_b, 0) + num_special;
  e.truncated = plan.truncated();
  auto push = [&](int32_t id, const std::string& token, int32_t begin, int32_t end, int32_t type) {
    e.ids.push_back(id);
    e.tokens.push_back(token);
    e.offsets.emplace_back(begin, end);
    e.type_ids.push_back(type);
  };
  for (int32_t i = plan.a_front; i < len_a - plan.a_back; ++i) {
    push(a[i].id, a[i].token, a[i].begin, a[i].end, 0);
  }
  if (pair) {
    for (int32_t i = plan.b_front; i < len_b - plan.b_back; ++i) {
      push((*b)[i].id, (*b)[i].token, (*b)[i].begin, (*b)[i].end, 1);
    }
  }
  if (add_special_tokens) push(*special_ids_.eos, options_.eos_token.content, 0, 0, pair ? 1 : 0);
  return e;
}

absl::StatusOr<Encoding> MarianTokenizer::Encode(absl::string_view text, bool add_special_tokens,
                                                 const TruncationOptions& truncation) const {
  std::vector<Piece> a;
  if (absl::Status s = Tokenize(text, &a); !s.ok()) return s;
  return Assemble(a, nullptr, add_special_tokens, truncation);
}

absl::StatusOr<Encoding> MarianTokenizer::EncodePair(absl::string_view a, absl::string_view b,
                                                     bool add_special_tokens,
                                                     const TruncationOptions& truncation) const {
  std::vector<Piece> pa, pb;
  if (absl::Status s = Tokenize(a, &pa); !s.ok()) return s;
  if (absl::Status s = Tokenize(b, &pb); !s.ok()) return s;
  return Assemble(pa, &pb, add_special_tokens, truncation);
}

absl::StatusOr<std::string> MarianTokenizer::Decode(absl::Span<const int32_t> ids,
                                                    bool skip_special_tokens) const {
  // convert_ids_to_tokens (target vocabulary; unknown ids -> unk_token),
  // then MarianTokenizer.convert_tokens_to_string with target.spm.
  std::string out;
  std::vector<std::string> run;
  auto flush = [&]() -> absl::Status {
    absl::StatusOr<std::string> text = decode_spm_->DecodePieces(run);
    if (!text.ok()) return text.status();
    out.append(*text);
    run.clear();
    return absl::OkStatus();
  };
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    const bool known = id >= 0 && static_cast<size_t>(id) < decode_vocab_.tokens.size() &&
                       !decode_vocab_.tokens[id].empty();
    const std::string& token = known ? decode_vocab_.tokens[id] : options_.unk_token.content;
    if (special_strings_.contains(token)) {
      if (absl::Status s = flush(); !s.ok()) return s;
      absl::StrAppend(&out, token, " ");
    } else {
      run.push_back(token);
    }
  }
  if (absl::Status s = flush(); !s.ok()) return s;
  ReplaceAllInPlace(&out, kSpieceUnderline, " ");
  std::string text = StripPythonWhitespace(out);
  if (options_.clean_up_tokenization_spaces) CleanUpTokenizationSpaces(&text);
  return text;
}

absl::StatusOr<std::string> MarianTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) {
    return absl::NotFoundError(
        absl::StrCat("token id ", id, " is outside [0, ", id_to_token_.size(), ")"));
  }
  return id_to_token_[id];
}

std::optional<int32_t> MarianTokenizer::TokenToId(absl::string_view token) const {
  auto it = encode_vocab_.ids.find(token);
  if (it == encode_vocab_.ids.end()) return std::nullopt;
  return it->second;
}

}  // namespace maskserve::engine
