#include "engine/tokenizer/wordpiece_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/python_unicode.h"
#include "engine/tokenizer/truncation.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

// What BasicTokenizer._clean_text / _tokenize_chinese_chars / str.split make
// of a character.
enum CharClass : uint8_t {
  kKeep = 0,
  kDrop = 1,   // NUL, U+FFFD, category C* except \t \n \r
  kSpace = 2,  // word separator: BERT whitespace (\t \n \r Zs) and Python's split() (Zl, Zp)
  kCjk = 4,    // CJK ideograph: a word of its own
};

struct AsciiTables {
  std::array<uint8_t, 128> cls{};
  std::array<bool, 128> punct{};
  std::array<char32_t, 128> lower{};
  AsciiTables() {
    for (int c = 0; c < 128; ++c) {
      cls[c] = kKeep;
      if (c == '\t' || c == '\n' || c == '\r' || c == ' ') {
        cls[c] = kSpace;
      } else if (c < 0x20 || c == 0x7F) {
        cls[c] = kDrop;
      }
      // HF treats all non-alphanumeric printable ASCII as punctuation.
      punct[c] = (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
                 (c >= 123 && c <= 126);
      lower[c] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    }
  }
};
const AsciiTables& Ascii() {
  static const AsciiTables* t = new AsciiTables();
  return *t;
}

bool IsChineseChar(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

uint8_t Classify(char32_t c) {
  if (c < 128) return Ascii().cls[c];
  if (c == 0xFFFD) return kDrop;
  switch (PythonCategory(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
      return kDrop;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
      return kSpace;
    default:
      return IsChineseChar(c) ? kCjk : kKeep;
  }
}

bool IsPunct(char32_t c) {
  if (c < 128) return Ascii().punct[c];
  const utf8proc_category_t cat = PythonCategory(c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

// Python's str.lower() of one character, except U+0130 (handled by caller).
char32_t ToLower(char32_t c) {
  if (c < 128) return Ascii().lower[c];
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

// Canonical (NFD) decomposition of one character; returns its length.
int Decompose(char32_t c, utf8proc_int32_t (&buf)[16]) {
  int boundclass = 0;
  const utf8proc_ssize_t m = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 16,
                                                     UTF8PROC_DECOMPOSE, &boundclass);
  if (m <= 0 || m > 16) {
    buf[0] = static_cast<utf8proc_int32_t>(c);
    return 1;
  }
  return static_cast<int>(m);
}

// In-place replace of every `from` by `to`, scanning left to right like str.replace.
void ReplaceAll(std::string* s, absl::string_view from, absl::string_view to) {
  if (s->find(from.data(), 0, from.size()) == std::string::npos) return;
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

// Python str.strip() on UTF-8 text.
std::string StripPython(const std::string& s) {
  std::u32string cps;
  if (!DecodeUtf8(s, &cps).ok()) return s;
  size_t b = 0, e = cps.size();
  while (b < e && IsPythonSpace(cps[b])) ++b;
  while (e > b && IsPythonSpace(cps[e - 1])) --e;
  if (b == 0 && e == cps.size()) return s;
  return EncodeUtf8(std::u32string_view(cps).substr(b, e - b));
}

int32_t CountCodePoints(absl::string_view s) {
  int32_t n = 0;
  for (char ch : s) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
  return n;
}

}  // namespace

struct WordPieceTokenizer::Scratch {
  std::u32string cps;  // decoded input
  std::u32string low;  // after HF's lower-casing pass
  std::vector<int32_t> low_org;
  std::vector<AddedTokenMatcher::Segment> segs;
  std::u32string word;  // current whitespace-separated word
  std::vector<int32_t> word_org;
  std::u32string norm;  // word after NFC or NFD + accent stripping
  std::vector<int32_t> norm_org;
  std::vector<utf8proc_int32_t> tmp;
  std::vector<int32_t> tmp_org;
  std::string bytes;  // UTF-8 of the word WordPiece works on
  std::vector<int32_t> byte_pos;
  std::string cont;  // continuing_subword_prefix + rest of the word
};

// ---------------------------------------------------------------------------
// Loading

absl::StatusOr<std::vector<std::string>> ParseVocabTxt(absl::string_view contents) {
  std::u32string check;
  if (absl::Status s = DecodeUtf8(contents, &check); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("vocab.txt: ", s.message()));
  }
  std::vector<std::string> vocab;
  size_t i = 0;
  const size_t n = contents.size();
  while (i < n) {
    size_t j = i;
    while (j < n && contents[j] != '\n' && contents[j] != '\r') ++j;
    vocab.emplace_back(contents.substr(i, j - i));
    if (j < n && contents[j] == '\r' && j + 1 < n && contents[j + 1] == '\n') ++j;
    i = j + 1;
  }
  return vocab;
}

namespace {

using json = nlohmann::json;

struct JsonWordPiece {
  std::vector<std::string> vocab;
  std::optional<std::string> unk_token;
  std::optional<std::string> prefix;
  std::optional<int> max_chars;
  std::optional<bool> lowercase;
  std::optional<bool> strip_accents;
  std::optional<bool> chinese;
  std::optional<bool> cleanup;
  std::vector<std::pair<std::string, int32_t>> plain_added;
  std::vector<std::string> special_added;
};

absl::StatusOr<JsonWordPiece> ParseTokenizerJson(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  JsonWordPiece r;
  try {
    json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("model") || !j["model"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a tokenizer.json"));
    }
    const json& model = j["model"];
    if (model.value("type", std::string()) != "WordPiece") {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": model.type is \"", model.value("type", std::string()), "\", not \"WordPiece\""));
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab missing"));
    }
    std::vector<bool> seen;
    for (const auto& [token, id] : model["vocab"].items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 26)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": bad id for \"", token, "\""));
      }
      const auto i = static_cast<size_t>(id.get<int64_t>());
      if (i >= r.vocab.size()) r.vocab.resize(i + 1), seen.resize(i + 1);
      if (seen[i]) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": id ", i, " used twice"));
      }
      seen[i] = true;
      r.vocab[i] = token;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      r.unk_token = model["unk_token"].get<std::string>();
    }
    if (model.contains("continuing_subword_prefix") &&
        model["continuing_subword_prefix"].is_string()) {
      r.prefix = model["continuing_subword_prefix"].get<std::string>();
    }
    if (model.contains("max_input_chars_per_word") &&
        model["max_input_chars_per_word"].is_number_integer()) {
      r.max_chars = model["max_input_chars_per_word"].get<int>();
    }
    if (j.contains("normalizer") && j["normalizer"].is_object() &&
        j["normalizer"].value("type", std::string()) == "BertNormalizer") {
      const json& nz = j["normalizer"];
      if (nz.contains("lowercase") && nz["lowercase"].is_boolean())
        r.lowercase = nz["lowercase"].get<bool>();
      if (nz.contains("strip_accents") && nz["strip_accents"].is_boolean()) {
        r.strip_accents = nz["strip_accents"].get<bool>();
      }
      if (nz.contains("handle_chinese_chars") && nz["handle_chinese_chars"].is_boolean()) {
        r.chinese = nz["handle_chinese_chars"].get<bool>();
      }
    }
    if (j.contains("decoder") && j["decoder"].is_object() && j["decoder"].contains("cleanup") &&
        j["decoder"]["cleanup"].is_boolean()) {
      r.cleanup = j["decoder"]["cleanup"].get<bool>();
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& t : j["added_tokens"]) {
        if (!t.is_object() || !t.contains("content") || !t["content"].is_string() ||
            !t.contains("id") || !t["id"].is_number_integer()) {
          continue;
        }
        const std::string content = t["content"].get<std::string>();
        if (t.value("special", false)) {
          r.special_added.push_back(content);
        } else {
          r.plain_added.emplace_back(content, t["id"].get<int32_t>());
        }
      }
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return r;
}

}  // namespace

absl::StatusOr<WordPieceOptions> WordPieceOptionsFromDirectory(const std::string& model_dir,
                                                               WordPieceSource source) {
  const std::string txt = model_dir + "/vocab.txt";
  const std::string tj = model_dir + "/tokenizer.json";
  if (source == WordPieceSource::kAuto) {
    if (FileExists(txt)) {
      source = WordPieceSource::kVocabTxt;
    } else if (FileExists(tj)) {
      source = WordPieceSource::kTokenizerJson;
    } else {
      return absl::NotFoundError(
          absl::StrCat(model_dir, ": no vocab.txt or tokenizer.json for a WordPiece tokenizer"));
    }
  }
  WordPieceOptions o;
  std::optional<JsonWordPiece> js;
  if (source == WordPieceSource::kVocabTxt) {
    auto contents = ReadFileToString(txt);
    if (!contents.ok()) return contents.status();
    auto vocab = ParseVocabTxt(*contents);
    if (!vocab.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, "/", vocab.status().message()));
    }
    o.vocab = *std::move(vocab);
  } else {
    auto parsed = ParseTokenizerJson(tj);
    if (!parsed.ok()) return parsed.status();
    js = *std::move(parsed);
    o.vocab = std::move(js->vocab);
    if (js->unk_token) o.unk_token.content = *js->unk_token;
    if (js->prefix) o.continuing_subword_prefix = *js->prefix;
    if (js->max_chars) o.max_input_chars_per_word = *js->max_chars;
    if (js->lowercase) o.do_lower_case = *js->lowercase;
    if (js->strip_accents) o.strip_accents = *js->strip_accents;
    if (js->chinese) o.tokenize_chinese_chars = *js->chinese;
    if (js->cleanup) o.clean_up_tokenization_spaces = *js->cleanup;
    o.added_tokens = js->plain_added;
  }

  auto cfg = ReadHfTokenizerConfig(model_dir);
  if (!cfg.ok()) return cfg.status();
  if (cfg->do_lower_case) o.do_lower_case = *cfg->do_lower_case;
  if (cfg->strip_accents_set) o.strip_accents = cfg->strip_accents;
  if (cfg->tokenize_chinese_chars) o.tokenize_chinese_chars = *cfg->tokenize_chinese_chars;
  if (cfg->do_basic_tokenize) o.do_basic_tokenize = *cfg->do_basic_tokenize;
  if (cfg->clean_up_tokenization_spaces) {
    o.clean_up_tokenization_spaces = *cfg->clean_up_tokenization_spaces;
  }
  o.never_split = cfg->never_split;
  o.model_max_length = static_cast<int>(cfg->model_max_length);
  const std::pair<const char*, HfSpecialToken*> roles[] = {
      {"unk_token", &o.unk_token}, {"cls_token", &o.cls_token},   {"sep_token", &o.sep_token},
      {"pad_token", &o.pad_token}, {"mask_token", &o.mask_token}, {"bos_token", &o.bos_token},
      {"eos_token", &o.eos_token}};
  for (const auto& [role, slot] : roles) {
    auto it = cfg->special_tokens.find(role);
    if (it != cfg->special_tokens.end()) *slot = it->second;
  }
  o.additional_special_tokens = cfg->additional_special_tokens;
  if (js && o.additional_special_tokens.empty()) {
    // tokenizer.json alone: special added tokens that play no role are
    // additional special tokens.
    for (const std::string& s : js->special_added) {
      bool is_role = false;
      for (const auto& [role, slot] : roles) is_role |= slot->content == s;
      if (!is_role) o.additional_special_tokens.push_back(HfSpecialToken{s});
    }
  }
  for (const auto& added : cfg->added_tokens) o.added_tokens.push_back(added);
  return o;
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Create(
    WordPieceOptions options) {
  if (options.vocab.empty()) return absl::InvalidArgumentError("WordPiece vocabulary is empty");
  if (options.max_input_chars_per_word <= 0) {
    return absl::InvalidArgumentError("max_input_chars_per_word must be positive");
  }
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer(std::move(options)));
  const WordPieceOptions& o = t->options_;
  t->strip_accents_ = o.strip_accents.value_or(o.do_lower_case);
  t->id_to_token_ = o.vocab;
  t->vocab_.reserve(o.vocab.size());
  for (size_t i = 0; i < o.vocab.size(); ++i) {
    // Later duplicates win, as in HF's load_vocab dict.
    t->vocab_[o.vocab[i]] = static_cast<int32_t>(i);
    t->max_piece_chars_ = std::max(t->max_piece_chars_, CountCodePoints(o.vocab[i]));
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
    t->added_tokens_.push_back(AddedToken{s.content, *id, /*special=*/true, s.lstrip, s.rstrip});
  };
  resolve(o.unk_token, &t->special_ids_.unk);
  resolve(o.cls_token, &t->special_ids_.cls);
  resolve(o.sep_token, &t->special_ids_.sep);
  resolve(o.pad_token, &t->special_ids_.pad);
  resolve(o.mask_token, &t->special_ids_.mask);
  resolve(o.bos_token, &t->special_ids_.bos);
  resolve(o.eos_token, &t->special_ids_.eos);
  for (const HfSpecialToken& s : o.additional_special_tokens) resolve(s, nullptr);
  if (!t->special_ids_.unk) return absl::InvalidArgumentError("WordPiece needs an unk token");
  t->unk_id_ = *t->special_ids_.unk;
  t->matcher_ = AddedTokenMatcher(t->added_tokens_);
  t->never_split_.insert(o.never_split.begin(), o.never_split.end());
  return t;
}

// ---------------------------------------------------------------------------
// Encoding

absl::Status WordPieceTokenizer::Tokenize(absl::string_view text, std::vector<Piece>* out) const {
  Scratch s;
  if (absl::Status st = DecodeUtf8(text, &s.cps); !st.ok()) return st;
  const auto n = static_cast<int32_t>(s.cps.size());
  // HF lower-cases everything but added-token strings before splitting them
  // out, one character at a time (so no final-sigma context), when the
  // tokenizer has do_lower_case (which needs do_basic_tokenize).
  const bool lower = options_.do_basic_tokenize && options_.do_lower_case;
  s.low.reserve(n + 8);
  s.low_org.reserve(n + 8);
  for (int32_t i = 0; i < n;) {
    const char32_t c = s.cps[i];
    if (!lower) {
      s.low.push_back(c);
      s.low_org.push_back(i++);
      continue;
    }
    if (!matcher_.empty()) {
      if (const int32_t len = matcher_.MatchForLowercase(s.cps, i); len > 0) {
        for (int32_t k = 0; k < len; ++k, ++i) {
          s.low.push_back(s.cps[i]);
          s.low_org.push_back(i);
        }
        continue;
      }
    }
    if (c == 0x130) {  // 'İ'.lower() == 'i̇'
      s.low.push_back('i');
      s.low_org.push_back(i);
      s.low.push_back(0x307);
      s.low_org.push_back(i);
    } else {
      s.low.push_back(ToLower(c));
      s.low_org.push_back(i);
    }
    ++i;
  }
  if (matcher_.empty()) {
    s.segs.assign(1, {0, static_cast<int32_t>(s.low.size()), -1});
  } else {
    matcher_.Split(s.low, &s.segs);
  }
  for (const auto& seg : s.segs) {
    if (seg.begin >= seg.end) continue;
    if (seg.token >= 0) {
      out->push_back(
          {added_tokens_[seg.token].id, s.low_org[seg.begin], s.low_org[seg.end - 1] + 1});
    } else {
      BasicTokenize(s.low, s.low_org, seg.begin, seg.end, &s, out);
    }
  }
  return absl::OkStatus();
}

void WordPieceTokenizer::BasicTokenize(const std::u32string& text, const std::vector<int32_t>& org,
                                       int32_t begin, int32_t end, Scratch* s,
                                       std::vector<Piece>* out) const {
  s->word.clear();
  s->word_org.clear();
  auto flush = [&]() {
    if (s->word.empty()) return;
    ProcessWord(s, out);
    s->word.clear();
    s->word_org.clear();
  };
  const bool basic = options_.do_basic_tokenize;
  const bool chinese = options_.tokenize_chinese_chars;
  for (int32_t i = begin; i < end; ++i) {
    const char32_t c = text[i];
    if (!basic) {
      if (IsPythonSpace(c)) {
        flush();
      } else {
        s->word.push_back(c);
        s->word_org.push_back(org[i]);
      }
      continue;
    }
    const uint8_t cls = Classify(c);
    if (cls == kDrop) continue;
    if (cls == kSpace) {
      flush();
      continue;
    }
    if (cls == kCjk && chinese) {
      flush();
      s->word.push_back(c);
      s->word_org.push_back(org[i]);
      flush();
      continue;
    }
    s->word.push_back(c);
    s->word_org.push_back(org[i]);
  }
  flush();
}

void WordPieceTokenizer::ProcessWord(Scratch* s, std::vector<Piece>* out) const {
  const char32_t* w = s->word.data();
  const int32_t* o = s->word_org.data();
  auto n = static_cast<int32_t>(s->word.size());
  if (!options_.do_basic_tokenize) {
    WordPiece(w, o, n, s, out);
    return;
  }
  if (!never_split_.empty()) {
    const std::string utf8 = EncodeUtf8(s->word);
    if (never_split_.contains(utf8)) {
      out->push_back({TokenToId(utf8).value_or(unk_id_), o[0], o[n - 1] + 1});
      return;
    }
  }
  const bool ascii =
      std::all_of(s->word.begin(), s->word.end(), [](char32_t c) { return c < 0x80; });
  if (!ascii) {
    // HF: NFC of the text, then (after lower-casing) NFD and drop Mn when
    // stripping accents. NFD(NFC(x)) == NFD(x), so NFC only matters when not
    // stripping.
    s->tmp.clear();
    s->tmp_org.clear();
    utf8proc_int32_t buf[16];
    for (int32_t k = 0; k < n; ++k) {
      const int m =
          w[k] < 0x80 ? (buf[0] = static_cast<utf8proc_int32_t>(w[k]), 1) : Decompose(w[k], buf);
      for (int j = 0; j < m; ++j) {
        s->tmp.push_back(buf[j]);
        s->tmp_org.push_back(o[k]);
      }
    }
    // Canonical ordering of combining marks (stable by combining class).
    for (size_t i = 1; i < s->tmp.size(); ++i) {
      const int ccc = CombiningClass(static_cast<char32_t>(s->tmp[i]));
      if (ccc == 0) continue;
      for (size_t j = i; j > 0 && CombiningClass(static_cast<char32_t>(s->tmp[j - 1])) > ccc; --j) {
        std::swap(s->tmp[j - 1], s->tmp[j]);
        std::swap(s->tmp_org[j - 1], s->tmp_org[j]);
      }
    }
    s->norm.clear();
    s->norm_org.clear();
    if (strip_accents_) {
      for (size_t i = 0; i < s->tmp.size(); ++i) {
        const auto c = static_cast<char32_t>(s->tmp[i]);
        if (PythonCategory(c) == UTF8PROC_CATEGORY_MN) continue;
        s->norm.push_back(c);
        s->norm_org.push_back(s->tmp_org[i]);
      }
    } else {
      const auto len = static_cast<size_t>(utf8proc_normalize_utf32(
          s->tmp.data(), static_cast<utf8proc_ssize_t>(s->tmp.size()), UTF8PROC_COMPOSE));
      // Each composed character starts where its decomposition started.
      size_t cum = 0;
      for (size_t j = 0; j < len && cum < s->tmp_org.size(); ++j) {
        const auto c = static_cast<char32_t>(s->tmp[j]);
        s->norm.push_back(c);
        s->norm_org.push_back(s->tmp_org[cum]);
        cum += c < 0x80 ? 1 : Decompose(c, buf);
      }
    }
    w = s->norm.data();
    o = s->norm_org.data();
    n = static_cast<int32_t>(s->norm.size());
  }
  int32_t start = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (!IsPunct(w[i])) continue;
    if (start < i) WordPiece(w + start, o + start, i - start, s, out);
    WordPiece(w + i, o + i, 1, s, out);
    start = i + 1;
  }
  if (start < n) WordPiece(w + start, o + start, n - start, s, out);
}

void WordPieceTokenizer::WordPiece(const char32_t* w, const int32_t* org, int32_t n, Scratch* s,
                                   std::vector<Piece>* out) const {
  if (n > options_.max_input_chars_per_word) {
    out->push_back({unk_id_, org[0], org[n - 1] + 1});
    return;
  }
  std::string& bytes = s->bytes;
  std::vector<int32_t>& pos = s->byte_pos;
  bytes.clear();
  pos.clear();
  for (int32_t k = 0; k < n; ++k) {
    pos.push_back(static_cast<int32_t>(bytes.size()));
    AppendUtf8(w[k], &bytes);
  }
  pos.push_back(static_cast<int32_t>(bytes.size()));
  const std::string& prefix = options_.continuing_subword_prefix;
  const size_t first = out->size();
  int32_t start = 0;
  while (start < n) {
    int32_t end = std::min(n, start + max_piece_chars_);
    int32_t id = -1;
    if (start == 0) {
      for (; end > start; --end) {
        auto it = vocab_.find(absl::string_view(bytes.data(), pos[end]));
        if (it != vocab_.end()) {
          id = it->second;
          break;
        }
      }
    } else {
      s->cont.assign(prefix);
      s->cont.append(bytes, pos[start], std::string::npos);
      for (; end > start; --end) {
        auto it =
            vocab_.find(absl::string_view(s->cont.data(), prefix.size() + pos[end] - pos[start]));
        if (it != vocab_.end()) {
          id = it->second;
          break;
        }
      }
    }
    if (id < 0) {
      out->resize(first);
      out->push_back({unk_id_, org[0], org[n - 1] + 1});
      return;
    }
    out->push_back({id, org[start], org[end - 1] + 1});
    start = end;
  }
}

int WordPieceTokenizer::NumSpecialTokensToAdd(bool pair) const {
  const int cls = special_ids_.cls ? 1 : 0;
  const int sep = special_ids_.sep ? 1 : 0;
  return cls + sep + (pair ? sep : 0);
}

absl::StatusOr<Encoding> WordPieceTokenizer::Assemble(const std::vector<Piece>& a,
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
  const size_t total = static_cast<size_t>(e.num_tokens_untruncated);
  e.ids.reserve(total);
  e.tokens.reserve(total);
  e.offsets.reserve(total);
  e.type_ids.reserve(total);
  auto push = [&](int32_t id, int32_t begin, int32_t end, int32_t type) {
    e.ids.push_back(id);
    e.tokens.push_back(id_to_token_[id]);
    e.offsets.emplace_back(begin, end);
    e.type_ids.push_back(type);
  };
  auto push_special = [&](const std::optional<int32_t>& id, int32_t type) {
    if (add_special_tokens && id) push(*id, 0, 0, type);
  };
  auto push_range = [&](const std::vector<Piece>& v, int32_t from, int32_t to, int32_t type) {
    for (int32_t i = from; i < to; ++i) push(v[i].id, v[i].begin, v[i].end, type);
  };
  // Without special tokens HF gives every token type 0, pairs included.
  const int32_t type_b = add_special_tokens ? 1 : 0;
  push_special(special_ids_.cls, 0);
  push_range(a, plan.a_front, len_a - plan.a_back, 0);
  push_special(special_ids_.sep, 0);
  if (pair) {
    push_range(*b, plan.b_front, len_b - plan.b_back, type_b);
    push_special(special_ids_.sep, type_b);
  }
  return e;
}

absl::StatusOr<Encoding> WordPieceTokenizer::Encode(absl::string_view text, bool add_special_tokens,
                                                    const TruncationOptions& truncation) const {
  std::vector<Piece> a;
  if (absl::Status s = Tokenize(text, &a); !s.ok()) return s;
  return Assemble(a, nullptr, add_special_tokens, truncation);
}

absl::StatusOr<Encoding> WordPieceTokenizer::EncodePair(absl::string_view a, absl::string_view b,
                                                        bool add_special_tokens,
                                                        const TruncationOptions& truncation) const {
  std::vector<Piece> pa, pb;
  if (absl::Status s = Tokenize(a, &pa); !s.ok()) return s;
  if (absl::Status s = Tokenize(b, &pb); !s.ok()) return s;
  return Assemble(pa, &pb, add_special_tokens, truncation);
}

// ---------------------------------------------------------------------------
// Decoding and lookups

absl::StatusOr<std::string> WordPieceTokenizer::Decode(absl::Span<const int32_t> ids,
                                                       bool skip_special_tokens) const {
  // HF _decode: tokens added beyond the vocabulary stand alone; runs of
  // ordinary tokens go through convert_tokens_to_string; pieces joined by " ".
  std::vector<std::string> sub_texts;
  std::string current;
  bool have_current = false;
  auto flush = [&]() {
    if (!have_current) return;
    ReplaceAll(&current, " ##", "");
    sub_texts.push_back(StripPython(current));
    current.clear();
    have_current = false;
  };
  const std::string& unk = id_to_token_[unk_id_];
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    const bool in_range = id >= 0 && static_cast<size_t>(id) < id_to_token_.size();
    const std::string& token = in_range ? id_to_token_[id] : unk;
    if (in_range && added_.contains(token) && added_.at(token) == id) {
      flush();
      sub_texts.push_back(token);
      continue;
    }
    if (have_current) current.push_back(' ');
    current.append(token);
    have_current = true;
  }
  flush();
  std::string text;
  for (size_t i = 0; i < sub_texts.size(); ++i) {
    if (i > 0) text.push_back(' ');
    text.append(sub_texts[i]);
  }
  if (options_.clean_up_tokenization_spaces) {
    static constexpr std::pair<absl::string_view, absl::string_view> kCleanups[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kCleanups) ReplaceAll(&text, from, to);
  }
  return text;
}

absl::StatusOr<std::string> WordPieceTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) {
    return absl::NotFoundError(
        absl::StrCat("token id ", id, " is outside [0, ", id_to_token_.size(), ")"));
  }
  return id_to_token_[id];
}

std::optional<int32_t> WordPieceTokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_.find(token); it != added_.end()) return it->second;
  if (auto it = vocab_.find(token); it != vocab_.end()) return it->second;
  return std::nullopt;
}

}  // namespace maskserve::engine
