#include "engine/tokenizer/sentencepiece_tokenizer.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/tokenizer/clean_up_tokenization.h"
#include "engine/tokenizer/tokenizer_config_extras.h"
#include "engine/tokenizer/truncation.h"
#include "engine/tokenizer/utf8.h"

namespace maskserve::engine {
namespace {

constexpr const char* kModelFiles[] = {"spiece.model", "tokenizer.model",
                                       "sentencepiece.bpe.model"};

}  // namespace

absl::StatusOr<SentencePieceOptions> SentencePieceOptionsFromDirectory(
    const std::string& model_dir, const std::string& model_file) {
  SentencePieceOptions o;
  if (!model_file.empty()) {
    o.model_path = absl::StrCat(model_dir, "/", model_file);
    if (!FileExists(o.model_path)) {
      return absl::NotFoundError(absl::StrCat(o.model_path, " does not exist"));
    }
  } else {
    for (const char* f : kModelFiles) {
      if (FileExists(absl::StrCat(model_dir, "/", f))) {
        o.model_path = absl::StrCat(model_dir, "/", f);
        break;
      }
    }
    if (o.model_path.empty()) {
      return absl::NotFoundError(absl::StrCat(model_dir, ": no sentencepiece model (",
                                              absl::StrJoin(kModelFiles, ", "), ")"));
    }
  }
  auto cfg = ReadHfTokenizerConfig(model_dir);
  if (!cfg.ok()) return cfg.status();
  auto extras = ReadTokenizerConfigExtras(model_dir);
  if (!extras.ok()) return extras.status();

  const std::string& cls = cfg->tokenizer_class;
  if (cls == "T5Tokenizer" || cls == "T5TokenizerFast") {
    o.flavor = SentencePieceFlavor::kT5;
  } else if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast" ||
             cls == "CodeLlamaTokenizer" || cls == "CodeLlamaTokenizerFast") {
    o.flavor = SentencePieceFlavor::kLlama;
  } else if (!cls.empty()) {
    return absl::UnimplementedError(
        absl::StrCat(model_dir, ": sentencepiece tokenizer class ", cls, " is not supported"));
  } else {
    o.flavor = o.model_path.ends_with("/spiece.model") ? SentencePieceFlavor::kT5
                                                       : SentencePieceFlavor::kLlama;
  }
  if (extras->legacy.has_value() && !*extras->legacy) {
    return absl::UnimplementedError(
        absl::StrCat(model_dir, ": legacy=false sentencepiece tokenization is not supported"));
  }

  // Class defaults (transformers 4.31 __init__ signatures).
  if (o.flavor == SentencePieceFlavor::kT5) {
    // T5Tokenizer passes plain strings: HF strips spaces around them.
    o.bos_token = HfSpecialToken{""};
    o.eos_token = HfSpecialToken{"</s>"};
    o.unk_token = HfSpecialToken{"<unk>"};
    o.pad_token = HfSpecialToken{"<pad>"};
    o.add_bos_token = false;
    o.add_eos_token = true;
    o.extra_ids = extras->extra_ids.value_or(100);
    o.clean_up_tokenization_spaces = true;
  } else {
    o.add_bos_token = extras->add_bos_token.value_or(true);
    o.add_eos_token = extras->add_eos_token.value_or(false);
    o.clean_up_tokenization_spaces = false;
  }
  if (cfg->clean_up_tokenization_spaces) {
    o.clean_up_tokenization_spaces = *cfg->clean_up_tokenization_spaces;
  }
  o.model_max_length = static_cast<int>(cfg->model_max_length);
  const std::pair<const char*, HfSpecialToken*> roles[] = {{"bos_token", &o.bos_token},
                                                            {"eos_token", &o.eos_token},
                                                            {"unk_token", &o.unk_token},
                                                            {"pad_token", &o.pad_token}};
  for (const auto& [role, slot] : roles) {
    auto it = cfg->special_tokens.find(role);
    if (it != cfg->special_tokens.end()) {
      *slot = it->second;
      // LlamaTokenizer wraps plain-string role tokens in
      // AddedToken(lstrip=False, rstrip=False).
      if (o.flavor == SentencePieceFlavor::kLlama) slot->lstrip = slot->rstrip = false;
    }
  }
  o.additional_special_tokens = cfg->additional_special_tokens;
  if (o.flavor == SentencePieceFlavor::kT5 && o.extra_ids > 0) {
    int listed = 0;
    for (const HfSpecialToken& t : o.additional_special_tokens) {
      listed += t.content.find("extra_id") != std::string::npos;
    }
    if (o.additional_special_tokens.empty()) {
      for (int i = 0; i < o.extra_ids; ++i) {
        o.additional_special_tokens.push_back(HfSpecialToken{absl::StrCat("<extra_id_", i, ">")});
      }
    } else if (listed != o.extra_ids) {
      return absl::InvalidArgumentError(
          absl::StrCat(model_dir, ": extra_ids is ", o.extra_ids, " but ", listed,
                       " <extra_id_N> tokens are listed in additional_special_tokens"));
    }
  }
  o.added_tokens = cfg->added_tokens;
  return o;
}

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Create(
    SentencePieceOptions options) {
  if (options.extra_ids < 0 || options.extra_ids > 100000) {
    return absl::InvalidArgumentError(absl::StrCat("bad extra_ids ", options.extra_ids));
  }
  auto model = SpmModel::Load(options.model_path);
  if (!model.ok()) return model.status();
  std::unique_ptr<SentencePieceTokenizer> t(
      new SentencePieceTokenizer(std::move(options), *std::move(model)));
  const SentencePieceOptions& o = t->options_;
  t->model_size_ = t->model_->vocab_size();
  t->id_to_token_.reserve(t->model_size_ + o.extra_ids);
  for (int32_t i = 0; i < t->model_size_; ++i) t->id_to_token_.push_back(t->model_->IdToPiece(i));
  if (o.flavor == SentencePieceFlavor::kT5) {
    // T5Tokenizer: <extra_id_N> is vocab_size - 1 - N, so <extra_id_0> is last.
    for (int i = 0; i < o.extra_ids; ++i) {
      std::string token = absl::StrCat("<extra_id_", o.extra_ids - 1 - i, ">");
      t->extra_[token] = static_cast<int32_t>(t->id_to_token_.size());
      t->id_to_token_.push_back(std::move(token));
    }
  }
  for (const auto& [token, id] : o.added_tokens) {
    if (id < 0 || id > (1 << 26)) {
      return absl::InvalidArgumentError(
          absl::StrCat("added token \"", token, "\" has bad id ", id));
    }
    if (static_cast<size_t>(id) >= t->id_to_token_.size()) t->id_to_token_.resize(id + 1);
    t->id_to_token_[id] = token;
    t->added_[token] = id;
    t->added_tokens_.push_back(AddedToken{token, id, /*special=*/false, true, true});
  }
  auto resolve = [&t](const HfSpecialToken& s, std::optional<int32_t>* slot) {
    if (s.content.empty()) return;
    std::optional<int32_t> id = t->TokenToId(s.content);
    if (!id) {
      // from_pretrained adds special tokens the vocabulary lacks.
      id = static_cast<int32_t>(t->id_to_token_.size());
      t->id_to_token_.push_back(s.content);
      t->added_[s.content] = *id;
    }
    if (slot != nullptr) *slot = id;
    t->special_set_.insert(*id);
    t->special_strings_.insert(s.content);
    t->added_tokens_.push_back(AddedToken{s.content, *id, /*special=*/true, s.lstrip, s.rstrip});
  };
  resolve(o.bos_token, &t->special_ids_.bos);
  resolve(o.eos_token, &t->special_ids_.eos);
  resolve(o.unk_token, &t->special_ids_.unk);
  resolve(o.pad_token, &t->special_ids_.pad);
  for (const HfSpecialToken& s : o.additional_special_tokens) resolve(s, nullptr);
  if (o.flavor == SentencePieceFlavor::kLlama && o.add_bos_token && !t->special_ids_.bos) {
    return absl::InvalidArgumentError("add_bos_token is set but there is no bos_token");
  }
  if ((o.flavor == SentencePieceFlavor::kT5 || o.add_eos_token) && !t->special_ids_.eos) {
    return absl::InvalidArgumentError("the tokenizer appends eos but there is no eos_token");
  }
  t->unk_id_ = t->special_ids_.unk.value_or(std::max(t->model_->unk_id(), 0));
  t->matcher_ = AddedTokenMatcher(t->added_tokens_);
  return t;
}

absl::Status SentencePieceTokenizer::Tokenize(absl::string_view text,
                                              std::vector<Piece>* out) const {
  std::u32string cps;
  if (absl::Status s = DecodeUtf8(text, &cps); !s.ok()) return s;
  const auto n = static_cast<int32_t>(cps.size());
  // Byte offset of every code point, and the code point of every byte.
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
  if (matcher_.empty()) {
    if (n > 0) segs.push_back({0, n, -1});
  } else {
    matcher_.Split(cps, &segs);
  }
  std::vector<SpmPiece> pieces;
  for (const auto& seg : segs) {
    if (seg.token >= 0) {
      out->push_back({added_tokens_[seg.token].id, seg.begin, seg.end});
      continue;
    }
    const int32_t b0 = cp_byte[seg.begin];
    const int32_t b1 = cp_byte[seg.end];
    pieces.clear();
    if (absl::Status s = model_->Encode(text.substr(b0, b1 - b0), &pieces); !s.ok()) return s;
    for (const SpmPiece& p : pieces) {
      const int32_t pb = b0 + static_cast<int32_t>(std::min<uint32_t>(p.begin, b1 - b0));
      const int32_t pe =
          std::max(pb, b0 + static_cast<int32_t>(std::min<uint32_t>(p.end, b1 - b0)));
      const int32_t begin = byte_cp[pb];
      // An end inside a multi-byte character covers that character.
      const bool boundary = pe == b1 || (static_cast<unsigned char>(text[pe]) & 0xC0) != 0x80;
      const int32_t end = boundary ? byte_cp[pe] : byte_cp[pe] + 1;
      out->push_back({p.id, begin, std::max(begin, end)});
    }
  }
  return absl::OkStatus();
}

int SentencePieceTokenizer::NumSpecialTokensToAdd(bool pair) const {
  if (options_.flavor == SentencePieceFlavor::kT5) return pair ? 2 : 1;
  const int per = (options_.add_bos_token ? 1 : 0) + (options_.add_eos_token ? 1 : 0);
  return pair ? 2 * per : per;
}

absl::StatusOr<Encoding> SentencePieceTokenizer::Assemble(
    const std::vector<Piece>& a, const std::vector<Piece>* b, bool add_special_tokens,
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
    e.tokens.push_back(id_to_token_[id]);
    e.offsets.emplace_back(begin, end);
    e.type_ids.push_back(type);
  };
  const bool t5 = options_.flavor == SentencePieceFlavor::kT5;
  // Llama gives B [bos] B [eos] token type 1; T5 gives everything 0.
  const int32_t type_b = (add_special_tokens && !t5) ? 1 : 0;
  auto push_sequence = [&](const std::vector<Piece>& v, int32_t from, int32_t to, int32_t type) {
    if (add_special_tokens && !t5 && options_.add_bos_token) push(*special_ids_.bos, 0, 0, type);
    for (int32_t i = from; i < to; ++i) push(v[i].id, v[i].begin, v[i].end, type);
    if (!add_special_tokens) return;
    if (t5) {
      // T5Tokenizer._add_eos_if_not_present: a sequence already ending in
      // </s> gets no second one.
      if (to <= from || v[to - 1].id != *special_ids_.eos) push(*special_ids_.eos, 0, 0, type);
    } else if (options_.add_eos_token) {
      push(*special_ids_.eos, 0, 0, type);
    }
  };
  push_sequence(a, plan.a_front, len_a - plan.a_back, 0);
  if (pair) push_sequence(*b, plan.b_front, len_b - plan.b_back, type_b);
  return e;
}

absl::StatusOr<Encoding> SentencePieceTokenizer::Encode(absl::string_view text,
                                                        bool add_special_tokens,
                                                        const TruncationOptions& truncation) const {
  std::vector<Piece> a;
  if (absl::Status s = Tokenize(text, &a); !s.ok()) return s;
  return Assemble(a, nullptr, add_special_tokens, truncation);
}

absl::StatusOr<Encoding> SentencePieceTokenizer::EncodePair(
    absl::string_view a, absl::string_view b, bool add_special_tokens,
    const TruncationOptions& truncation) const {
  std::vector<Piece> pa, pb;
  if (absl::Status s = Tokenize(a, &pa); !s.ok()) return s;
  if (absl::Status s = Tokenize(b, &pb); !s.ok()) return s;
  return Assemble(pa, &pb, add_special_tokens, truncation);
}

absl::StatusOr<std::string> SentencePieceTokenizer::TokensToString(
    const std::vector<int32_t>& ids) const {
  // Llama/T5Tokenizer.convert_tokens_to_string: special tokens are written
  // out literally (with a space before, unless another special precedes, or
  // for Llama unless first); runs of other pieces go through sentencepiece.
  const bool t5 = options_.flavor == SentencePieceFlavor::kT5;
  std::string out;
  std::vector<int32_t> run;
  bool prev_special = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& token = id_to_token_[ids[i]];
    if (special_strings_.contains(token)) {
      if (!prev_special && (t5 || i != 0)) out.push_back(' ');
      auto text = model_->DecodeIds(run);
      if (!text.ok()) return text.status();
      out.append(*text);
      out.append(token);
      prev_special = true;
      run.clear();
    } else {
      // Ids past the model that are neither special nor added (only possible
      // for hand-made options) decode as unk, like sentencepiece.
      run.push_back(ids[i] < model_size_ ? ids[i] : std::max(model_->unk_id(), 0));
      prev_special = false;
    }
  }
  auto text = model_->DecodeIds(run);
  if (!text.ok()) return text.status();
  out.append(*text);
  return t5 ? StripPythonWhitespace(out) : out;
}

absl::StatusOr<std::string> SentencePieceTokenizer::Decode(absl::Span<const int32_t> ids,
                                                           bool skip_special_tokens) const {
  // PreTrainedTokenizer._decode: tokens added beyond the model stand alone;
  // runs of the rest go through convert_tokens_to_string; pieces joined by " ".
  std::vector<std::string> sub_texts;
  std::vector<int32_t> current;
  auto flush = [&]() -> absl::Status {
    if (current.empty()) return absl::OkStatus();
    auto text = TokensToString(current);
    if (!text.ok()) return text.status();
    sub_texts.push_back(*std::move(text));
    current.clear();
    return absl::OkStatus();
  };
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    const bool in_range = id >= 0 && static_cast<size_t>(id) < id_to_token_.size();
    const int32_t use = in_range ? id : unk_id_;
    const std::string& token = id_to_token_[use];
    if (auto it = added_.find(token); it != added_.end() && it->second == use) {
      if (absl::Status s = flush(); !s.ok()) return s;
      sub_texts.push_back(token);
      continue;
    }
    current.push_back(use);
  }
  if (absl::Status s = flush(); !s.ok()) return s;
  std::string text = absl::StrJoin(sub_texts, " ");
  if (options_.clean_up_tokenization_spaces) CleanUpTokenizationSpaces(&text);
  return text;
}

absl::StatusOr<std::string> SentencePieceTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) {
    return absl::NotFoundError(
        absl::StrCat("token id ", id, " is outside [0, ", id_to_token_.size(), ")"));
  }
  return id_to_token_[id];
}

std::optional<int32_t> SentencePieceTokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_.find(token); it != added_.end()) return it->second;
  if (auto it = extra_.find(token); it != extra_.end()) return it->second;
  const int32_t id = model_->PieceToId(token);
  if (id >= 0) return id;
  return std::nullopt;
}

}  // namespace maskserve::engine
