#include "engine/tokenizer/byte_level_bpe_tokenizer.h"

#include <algorithm>
#include <functional>
#include <queue>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <mutex>
#include "engine/tokenizer/clean_up_tokenization.h"
#include "engine/tokenizer/gpt2_pretokenizer.h"
#include "engine/tokenizer/python_utf8_decode.h"
#include "engine/tokenizer/tokenizer_config_extras.h"
#include "engine/tokenizer/truncation.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the other 68
// to U+0100.. in byte order, so every byte string is a printable string.
std::array<char32_t, 256> BytesToUnicode() {
  std::array<char32_t, 256> m{};
  std::array<bool, 256> printable{};
  for (int b = 0; b < 256; ++b) {
    printable[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  }
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) m[b] = printable[b] ? static_cast<char32_t>(b) : next++;
  return m;
}

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Python str.split() of one line (code points that are str.isspace()).
std::vector<std::string> SplitPythonWhitespace(absl::string_view line) {
  std::vector<std::string> parts;
  std::u32string cps;
  if (!DecodeUtf8(line, &cps).ok()) {
    parts.emplace_back(line);  // not UTF-8: HF would have failed to read the file
    return parts;
  }
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && IsPythonSpace(cps[i])) ++i;
    size_t j = i;
    while (j < cps.size() && !IsPythonSpace(cps[j])) ++j;
    if (j > i) parts.push_back(EncodeUtf8(std::u32string_view(cps).substr(i, j - i)));
    i = j;
  }
  return parts;
}

// What tokenizer.json contributes to the options.
struct JsonBpe {
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::optional<bool> add_prefix_space;
  std::string post_processor;  // its "type", or ""
  std::vector<std::pair<std::string, int32_t>> plain_added;
  std::vector<std::string> special_added;
};

bool HasByteLevel(const json& pre) {
  if (!pre.is_object()) return false;
  const std::string type = pre.value("type", std::string());
  if (type == "ByteLevel") return true;
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    for (const json& p : pre["pretokenizers"]) {
      if (HasByteLevel(p)) return true;
    }
  }
  return false;
}

std::optional<bool> ByteLevelPrefixSpace(const json& pre) {
  if (!pre.is_object()) return std::nullopt;
  if (pre.value("type", std::string()) == "ByteLevel" && pre.contains("add_prefix_space") &&
      pre["add_prefix_space"].is_boolean()) {
    return pre["add_prefix_space"].get<bool>();
  }
  if (pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    for (const json& p : pre["pretokenizers"]) {
      if (auto v = ByteLevelPrefixSpace(p)) return v;
    }
  }
  return std::nullopt;
}

absl::StatusOr<JsonBpe> ParseTokenizerJson(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  JsonBpe r;
  try {
    const json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("model") || !j["model"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a tokenizer.json"));
    }
    const json& model = j["model"];
    if (model.value("type", std::string()) != "BPE") {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": model.type is \"", model.value("type", std::string()), "\", not \"BPE\""));
    }
    if (!j.contains("pre_tokenizer") || !HasByteLevel(j["pre_tokenizer"])) {
      return absl::UnimplementedError(
          absl::StrCat(path, ": only byte-level BPE (a ByteLevel pre_tokenizer) is supported"));
    }
    r.add_prefix_space = ByteLevelPrefixSpace(j["pre_tokenizer"]);
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab missing"));
    }
    for (const auto& [token, id] : model["vocab"].items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 26)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": bad id for \"", token, "\""));
      }
      r.vocab.emplace_back(token, id.get<int32_t>());
    }
    if (model.contains("merges") && model["merges"].is_array()) {
      for (const json& m : model["merges"]) {
        if (m.is_string()) {
          auto parts = SplitPythonWhitespace(m.get<std::string>());
          if (parts.size() == 2) {
            r.merges.emplace_back(parts[0], parts[1]);
          } else {
            r.merges.emplace_back();  // keeps the rank, never matches
          }
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
          r.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        } else {
          r.merges.emplace_back();
        }
      }
    }
    if (j.contains("post_processor") && j["post_processor"].is_object()) {
      r.post_processor = j["post_processor"].value("type", std::string());
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

// ---------------------------------------------------------------------------
// Loading

absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> ParseVocabJson(
    absl::string_view contents) {
  std::vector<std::pair<std::string, int32_t>> vocab;
  try {
    const json j = json::parse(contents.begin(), contents.end(), nullptr,
                               /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError("vocab.json: not a JSON object");
    }
    vocab.reserve(j.size());
    for (const auto& [token, id] : j.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 26)) {
        return absl::InvalidArgumentError(absl::StrCat("vocab.json: bad id for \"", token, "\""));
      }
      vocab.emplace_back(token, id.get<int32_t>());
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("vocab.json: ", e.what()));
  }
  // A byte-level BPE needs at least its 256 byte symbols; an empty table is a
  // damaged file, and would turn every input into out-of-vocabulary pieces.
  if (vocab.empty()) return absl::InvalidArgumentError("vocab.json: no tokens");
  return vocab;
}

std::vector<std::pair<std::string, std::string>> ParseMergesTxt(absl::string_view contents) {
  std::vector<absl::string_view> lines;
  size_t start = 0;
  while (true) {
    const size_t nl = contents.find('\n', start);
    if (nl == absl::string_view::npos) {
      lines.push_back(contents.substr(start));
      break;
    }
    lines.push_back(contents.substr(start, nl - start));
    start = nl + 1;
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (size_t i = 1; i + 1 < lines.size(); ++i) {
    auto parts = SplitPythonWhitespace(lines[i]);
    if (parts.size() == 2) {
      merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
    } else {
      merges.emplace_back();  // a key HF's pairs never equal
    }
  }
  return merges;
}

absl::StatusOr<ByteLevelBpeOptions> ByteLevelBpeOptionsFromDirectory(const std::string& model_dir) {
  ByteLevelBpeOptions o;
  const std::string vocab_path = model_dir + "/vocab.json";
  const std::string merges_path = model_dir + "/merges.txt";
  std::optional<JsonBpe> js;
  if (FileExists(vocab_path) && FileExists(merges_path)) {
    auto vtext = ReadFileToString(vocab_path);
    if (!vtext.ok()) return vtext.status();
    auto vocab = ParseVocabJson(*vtext);
    if (!vocab.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, "/", vocab.status().message()));
    }
    o.vocab = *std::move(vocab);
    auto mtext = ReadFileToString(merges_path);
    if (!mtext.ok()) return mtext.status();
    o.merges = ParseMergesTxt(*mtext);
  } else if (FileExists(model_dir + "/tokenizer.json")) {
    auto parsed = ParseTokenizerJson(model_dir + "/tokenizer.json");
    if (!parsed.ok()) return parsed.status();
    js = *std::move(parsed);
    o.vocab = std::move(js->vocab);
    o.merges = std::move(js->merges);
  } else {
    return absl::NotFoundError(absl::StrCat(
        model_dir, ": no vocab.json + merges.txt or tokenizer.json for a byte-level BPE tokenizer"));
  }

  auto cfg = ReadHfTokenizerConfig(model_dir);
  if (!cfg.ok()) return cfg.status();
  auto extras = ReadTokenizerConfigExtras(model_dir);
  if (!extras.ok()) return extras.status();
  const std::string& cls = cfg->tokenizer_class;
  if (cls.starts_with("Roberta") || cls.starts_with("Bart") || cls.starts_with("Longformer") ||
      (cls.empty() && js && js->post_processor == "RobertaProcessing")) {
    o.post_processor = BpeTemplate::kRoberta;
  } else if (cls.empty() || cls.starts_with("GPT2")) {
    o.post_processor = BpeTemplate::kGpt2;
    if (cls.empty() && js && js->post_processor == "TemplateProcessing") {
      return absl::UnimplementedError(absl::StrCat(
          model_dir, ": tokenizer.json with a TemplateProcessing post-processor and no "
                     "tokenizer_class is not supported"));
    }
  } else {
    return absl::UnimplementedError(
        absl::StrCat(model_dir, ": byte-level BPE tokenizer class ", cls, " is not supported"));
  }
  if (o.post_processor == BpeTemplate::kRoberta) {
    o.bos_token = HfSpecialToken{"<s>", false, false};
    o.eos_token = HfSpecialToken{"</s>", false, false};
    o.sep_token = HfSpecialToken{"</s>", false, false};
    o.cls_token = HfSpecialToken{"<s>", false, false};
    o.unk_token = HfSpecialToken{"<unk>", false, false};
    o.pad_token = HfSpecialToken{"<pad>", false, false};
    o.mask_token = HfSpecialToken{"<mask>", true, false};
  }
  if (js && js->add_prefix_space) o.add_prefix_space = *js->add_prefix_space;
  if (extras->add_prefix_space) o.add_prefix_space = *extras->add_prefix_space;
  if (extras->add_bos_token) o.add_bos_token = *extras->add_bos_token;
  if (cfg->clean_up_tokenization_spaces) {
    o.clean_up_tokenization_spaces = *cfg->clean_up_tokenization_spaces;
  }
  o.model_max_length = static_cast<int>(cfg->model_max_length);
  const std::pair<const char*, HfSpecialToken*> roles[] = {
      {"bos_token", &o.bos_token}, {"eos_token", &o.eos_token},   {"unk_token", &o.unk_token},
      {"pad_token", &o.pad_token}, {"cls_token", &o.cls_token},   {"sep_token", &o.sep_token},
      {"mask_token", &o.mask_token}};
  for (const auto& [role, slot] : roles) {
    auto it = cfg->special_tokens.find(role);
    if (it == cfg->special_tokens.end()) continue;
    const bool mask = std::string(role) == "mask_token";
    *slot = it->second;
    // Plain strings (parsed as lstrip = rstrip = true) are wrapped by both
    // classes' __init__ in AddedToken(lstrip=False, rstrip=False), RoBERTa's
    // mask in AddedToken(lstrip=True, rstrip=False).
    if (slot->lstrip && slot->rstrip) {
      slot->lstrip = mask && o.post_processor == BpeTemplate::kRoberta;
      slot->rstrip = false;
    }
  }
  o.additional_special_tokens = cfg->additional_special_tokens;
  if (js && o.additional_special_tokens.empty()) {
    for (const std::string& s : js->special_added) {
      bool is_role = false;
      for (const auto& [role, slot] : roles) is_role |= slot->content == s;
      if (!is_role) o.additional_special_tokens.push_back(HfSpecialToken{s});
    }
  }
  if (js) o.added_tokens = js->plain_added;
  for (const auto& added : cfg->added_tokens) o.added_tokens.push_back(added);
  return o;
}

// ---------------------------------------------------------------------------
// The merge cache: word bytes -> BPE symbols. Sharded so that concurrent
// encoders rarely contend; a full shard is simply cleared, which bounds memory
// without bookkeeping (the cache only saves time, results never change).

class ByteLevelBpeTokenizer::MergeCache {
 public:
  explicit MergeCache(int capacity)
      : per_shard_(std::max<size_t>(1, static_cast<size_t>(capacity) / kShards)) {}

  bool Get(absl::string_view word, std::vector<Sym>* out) {
    Shard& s = shards_[ShardOf(word)];
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(word);
    if (it == s.map.end()) return false;
    out->insert(out->end(), it->second.begin(), it->second.end());
    return true;
  }

  void Put(absl::string_view word, const Sym* syms, size_t n) {
    Shard& s = shards_[ShardOf(word)];
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.map.size() >= per_shard_) s.map.clear();
    s.map.try_emplace(word, syms, syms + n);
  }

 private:
  static constexpr size_t kShards = 16;
  struct Shard {
    std::mutex mu;  // std::, not absl::Mutex, so that TSan sees it
    absl::flat_hash_map<std::string, std::vector<Sym>> map;
  };
  static size_t ShardOf(absl::string_view word) {
    return absl::Hash<absl::string_view>{}(word) % kShards;
  }

  const size_t per_shard_;
  std::array<Shard, kShards> shards_;
};

// Words longer than this skip the cache (rare, and costly to store).
constexpr size_t kMaxCachedWordBytes = 256;

ByteLevelBpeTokenizer::ByteLevelBpeTokenizer(ByteLevelBpeOptions options)
    : options_(std::move(options)) {}

ByteLevelBpeTokenizer::~ByteLevelBpeTokenizer() = default;

int32_t ByteLevelBpeTokenizer::Intern(const std::string& s) {
  auto [it, inserted] = symbol_ids_.try_emplace(s, static_cast<int32_t>(symbols_.size()));
  if (inserted) symbols_.push_back(s);
  return it->second;
}

absl::StatusOr<std::unique_ptr<ByteLevelBpeTokenizer>> ByteLevelBpeTokenizer::Create(
    ByteLevelBpeOptions options) {
  std::unique_ptr<ByteLevelBpeTokenizer> t(new ByteLevelBpeTokenizer(std::move(options)));
  const ByteLevelBpeOptions& o = t->options_;
  for (const auto& [token, id] : o.vocab) {
    if (id < 0 || id > (1 << 26)) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary token \"", token,
                                                     "\" has bad id ", id));
    }
    // json.load keeps the last duplicate key; the decoder the last token of an id.
    t->vocab_[token] = id;
    if (static_cast<size_t>(id) >= t->id_to_token_.size()) t->id_to_token_.resize(id + 1);
    t->id_to_token_[id] = token;
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
  resolve(o.bos_token, &t->special_ids_.bos);
  resolve(o.eos_token, &t->special_ids_.eos);
  resolve(o.unk_token, &t->special_ids_.unk);
  resolve(o.sep_token, &t->special_ids_.sep);
  resolve(o.pad_token, &t->special_ids_.pad);
  resolve(o.cls_token, &t->special_ids_.cls);
  resolve(o.mask_token, &t->special_ids_.mask);
  for (const HfSpecialToken& s : o.additional_special_tokens) resolve(s, nullptr);
  if (!t->special_ids_.unk) return absl::InvalidArgumentError("byte-level BPE needs an unk token");
  t->unk_id_ = *t->special_ids_.unk;
  if (o.post_processor == BpeTemplate::kRoberta && (!t->special_ids_.cls || !t->special_ids_.sep)) {
    return absl::InvalidArgumentError("RoBERTa-style BPE needs cls and sep tokens");
  }
  if (o.post_processor == BpeTemplate::kGpt2 && o.add_bos_token && !t->special_ids_.bos) {
    return absl::InvalidArgumentError("add_bos_token is set but there is no bos_token");
  }
  t->matcher_ = AddedTokenMatcher(t->added_tokens_);

  // Symbols: the 256 byte characters, then every merge operand and result.
  const std::array<char32_t, 256> b2u = BytesToUnicode();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(b2u[b], &s);
    t->byte_symbol_[b] = t->Intern(s);
    t->byte_decoder_[b2u[b]] = static_cast<uint8_t>(b);
  }
  for (size_t r = 0; r < o.merges.size(); ++r) {
    const auto& [a, b] = o.merges[r];
    if (a.empty() || b.empty()) continue;
    const int32_t ia = t->Intern(a);
    const int32_t ib = t->Intern(b);
    const int32_t ir = t->Intern(a + b);
    // dict(zip(merges, range(...))): a repeated merge keeps its last rank.
    t->merges_[PairKey(ia, ib)] = Merge{static_cast<int32_t>(r), ir};
  }
  t->symbol_token_id_.resize(t->symbols_.size());
  for (size_t s = 0; s < t->symbols_.size(); ++s) {
    t->symbol_token_id_[s] = t->TokenToId(t->symbols_[s]).value_or(t->unk_id_);
  }
  if (o.cache_capacity > 0) t->cache_ = std::make_unique<MergeCache>(o.cache_capacity);
  return t;
}

// ---------------------------------------------------------------------------
// BPE

void ByteLevelBpeTokenizer::Bpe(absl::string_view word, std::vector<Sym>* out) const {
  const bool cacheable = cache_ != nullptr && word.size() <= kMaxCachedWordBytes;
  if (cacheable && cache_->Get(word, out)) return;
  const size_t first = out->size();
  BpeUncached(word, out);
  if (cacheable) cache_->Put(word, out->data() + first, out->size() - first);
}

void ByteLevelBpeTokenizer::BpeUncached(absl::string_view word, std::vector<Sym>* out) const {
  const auto n = static_cast<int32_t>(word.size());
  if (n == 0) return;
  // Symbols as a doubly linked list over byte positions; a merged symbol
  // lives at its left part's position.
  std::vector<Sym> sym(n);
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {byte_symbol_[static_cast<unsigned char>(word[i])], 1};
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t left;
    int32_t right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  std::vector<Candidate> pending;
  auto consider = [&](int32_t pos, std::vector<Candidate>* into) {
    if (pos < 0 || next[pos] < 0) return;
    const int32_t l = sym[pos].symbol, r = sym[next[pos]].symbol;
    auto it = merges_.find(PairKey(l, r));
    if (it != merges_.end()) into->push_back({it->second.rank, pos, l, r});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i, &pending);
  for (const Candidate& c : pending) heap.push(c);
  pending.clear();
  auto valid = [&](const Candidate& c) {
    return sym[c.pos].bytes > 0 && next[c.pos] >= 0 && sym[c.pos].symbol == c.left &&
           sym[next[c.pos]].symbol == c.right;
  };
  // GPT2Tokenizer.bpe: take the best-ranked pair present, merge all its
  // non-overlapping occurrences left to right, then look again. Pairs formed
  // during a pass wait until the pass is over, as in HF.
  while (!heap.empty()) {
    const int32_t rank = heap.top().rank;
    while (!heap.empty() && heap.top().rank == rank) {
      const Candidate c = heap.top();
      heap.pop();
      if (!valid(c)) continue;
      const int32_t right = next[c.pos];
      sym[c.pos].symbol = merges_.at(PairKey(c.left, c.right)).result;
      sym[c.pos].bytes += sym[right].bytes;
      sym[right].bytes = 0;
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      consider(prev[c.pos], &pending);
      consider(c.pos, &pending);
    }
    for (const Candidate& c : pending) heap.push(c);
    pending.clear();
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out->push_back(sym[i]);
}

// ---------------------------------------------------------------------------
// Encoding

absl::Status ByteLevelBpeTokenizer::Tokenize(absl::string_view text, std::vector<Piece>* out,
                                             std::vector<std::string>* tokens) const {
  std::u32string cps;
  if (absl::Status s = DecodeUtf8(text, &cps); !s.ok()) return s;
  // prepare_for_tokenization: GPT-2 always prepends the space when asked,
  // RoBERTa only before text that does not start with whitespace.
  bool prefix = options_.add_prefix_space;
  if (prefix && options_.post_processor == BpeTemplate::kRoberta) {
    prefix = !cps.empty() && !IsPythonSpace(cps[0]);
  }
  std::u32string work;
  std::vector<int32_t> org_begin, org_end;  // original span of each code point of `work`
  work.reserve(cps.size() + 1);
  org_begin.reserve(cps.size() + 1);
  org_end.reserve(cps.size() + 1);
  if (prefix) {
    work.push_back(' ');
    org_begin.push_back(0);
    org_end.push_back(0);
  }
  for (size_t k = 0; k < cps.size(); ++k) {
    work.push_back(cps[k]);
    org_begin.push_back(static_cast<int32_t>(k));
    org_end.push_back(static_cast<int32_t>(k + 1));
  }
  const auto n = static_cast<int32_t>(work.size());
  std::vector<AddedTokenMatcher::Segment> segs;
  if (matcher_.empty()) {
    if (n > 0) segs.push_back({0, n, -1});
  } else {
    matcher_.Split(work, &segs);
  }
  std::vector<std::pair<int32_t, int32_t>> words;
  std::string bytes;
  std::vector<int32_t> byte_cp;  // code point (index into work) of each byte
  std::vector<Sym> syms;
  for (const auto& seg : segs) {
    if (seg.token >= 0) {
      const int32_t id = added_tokens_[seg.token].id;
      out->push_back({id, org_begin[seg.begin], org_end[seg.end - 1]});
      if (tokens != nullptr) tokens->push_back(id_to_token_[id]);
      continue;
    }
    words.clear();
    Gpt2PreTokenize(std::u32string_view(work).substr(seg.begin, seg.end - seg.begin), &words);
    for (const auto& [wb, we] : words) {
      bytes.clear();
      byte_cp.clear();
      for (int32_t k = seg.begin + wb; k < seg.begin + we; ++k) {
        const size_t before = bytes.size();
        AppendUtf8(work[k], &bytes);
        byte_cp.insert(byte_cp.end(), bytes.size() - before, k);
      }
      syms.clear();
      Bpe(bytes, &syms);
      int32_t pos = 0;
      for (const Sym& s : syms) {
        const int32_t first_cp = byte_cp[pos];
        const int32_t last_cp = byte_cp[pos + s.bytes - 1];
        out->push_back({symbol_token_id_[s.symbol], org_begin[first_cp], org_end[last_cp]});
        if (tokens != nullptr) tokens->push_back(symbols_[s.symbol]);
        pos += s.bytes;
      }
    }
  }
  return absl::OkStatus();
}

int ByteLevelBpeTokenizer::NumSpecialTokensToAdd(bool pair) const {
  if (options_.post_processor == BpeTemplate::kRoberta) return pair ? 4 : 2;
  const int per = options_.add_bos_token ? 1 : 0;
  return pair ? 2 * per : per;
}

absl::StatusOr<Encoding> ByteLevelBpeTokenizer::Assemble(
    const std::vector<Piece>& a, const std::vector<std::string>& ta, const std::vector<Piece>* b,
    const std::vector<std::string>* tb, bool add_special_tokens,
    const TruncationOptions& truncation) const {
  const bool pair = b != nullptr;
  const int32_t num_special = add_special_tokens ? NumSpecialTokensToAdd(pair) : 0;
  const auto len_a = static_cast<int32_t>(a.size());
  const int32_t len_b = pair ? static_cast<int32_t>(b->size()) : -1;
  const TruncationPlan plan = PlanTruncation(len_a, len_b, num_special, truncation);
  Encoding e;
  e.num_tokens_untruncated = len_a + std::max(len_b, 0) + num_special;
  e.truncated = plan.truncated();
  auto push = [&](int32_t id, const std::string& token, int32_t begin, int32_t end,
                  int32_t type) {
    e.ids.push_back(id);
    e.tokens.push_back(token);
    e.offsets.emplace_back(begin, end);
    e.type_ids.push_back(type);
  };
  auto push_special = [&](const std::optional<int32_t>& id, int32_t type) {
    push(*id, id_to_token_[*id], 0, 0, type);
  };
  auto push_range = [&](const std::vector<Piece>& v, const std::vector<std::string>& tok,
                        int32_t from, int32_t to, int32_t type) {
    for (int32_t i = from; i < to; ++i) push(v[i].id, tok[i], v[i].begin, v[i].end, type);
  };
  if (options_.post_processor == BpeTemplate::kRoberta) {
    // <s> A </s> (</s> B </s>); RoBERTa's token types are all 0.
    if (add_special_tokens) push_special(special_ids_.cls, 0);
    push_range(a, ta, plan.a_front, len_a - plan.a_back, 0);
    if (add_special_tokens) push_special(special_ids_.sep, 0);
    if (pair) {
      if (add_special_tokens) push_special(special_ids_.sep, 0);
      push_range(*b, *tb, plan.b_front, len_b - plan.b_back, 0);
      if (add_special_tokens) push_special(special_ids_.sep, 0);
    }
    return e;
  }
  // GPT-2: ([bos]) A (([bos]) B); B has token type 1 when adding special tokens.
  const bool bos = add_special_tokens && options_.add_bos_token;
  const int32_t type_b = add_special_tokens ? 1 : 0;
  if (bos) push_special(special_ids_.bos, 0);
  push_range(a, ta, plan.a_front, len_a - plan.a_back, 0);
  if (pair) {
    if (bos) push_special(special_ids_.bos, type_b);
    push_range(*b, *tb, plan.b_front, len_b - plan.b_back, type_b);
  }
  return e;
}

absl::StatusOr<Encoding> ByteLevelBpeTokenizer::Encode(absl::string_view text,
                                                       bool add_special_tokens,
                                                       const TruncationOptions& truncation) const {
  std::vector<Piece> a;
  std::vector<std::string> ta;
  if (absl::Status s = Tokenize(text, &a, &ta); !s.ok()) return s;
  return Assemble(a, ta, nullptr, nullptr, add_special_tokens, truncation);
}

absl::StatusOr<Encoding> ByteLevelBpeTokenizer::EncodePair(
    absl::string_view a, absl::string_view b, bool add_special_tokens,
    const TruncationOptions& truncation) const {
  std::vector<Piece> pa, pb;
  std::vector<std::string> ta, tb;
  if (absl::Status s = Tokenize(a, &pa, &ta); !s.ok()) return s;
  if (absl::Status s = Tokenize(b, &pb, &tb); !s.ok()) return s;
  return Assemble(pa, ta, &pb, &tb, add_special_tokens, truncation);
}

// ---------------------------------------------------------------------------
// Decoding and lookups

absl::StatusOr<std::string> ByteLevelBpeTokenizer::Decode(absl::Span<const int32_t> ids,
                                                          bool skip_special_tokens) const {
  // PreTrainedTokenizer._decode: tokens added beyond the vocabulary stand
  // alone; runs of the rest are joined and mapped back to bytes
  // (convert_tokens_to_string), decoded with errors="replace"; pieces joined
  // by " ".
  std::vector<std::string> sub_texts;
  std::string bytes;
  bool have_current = false;
  auto flush = [&]() {
    if (!have_current) return;
    sub_texts.push_back(DecodeUtf8Replace(bytes));
    bytes.clear();
    have_current = false;
  };
  std::u32string cps;
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    const bool in_range = id >= 0 && static_cast<size_t>(id) < id_to_token_.size();
    const int32_t use = in_range ? id : unk_id_;
    const std::string& token = id_to_token_[use];
    if (auto it = added_.find(token); it != added_.end() && it->second == use) {
      flush();
      sub_texts.push_back(token);
      continue;
    }
    have_current = true;
    if (!DecodeUtf8(token, &cps).ok()) {
      bytes.append(token);
      continue;
    }
    for (char32_t c : cps) {
      if (auto it = byte_decoder_.find(c); it != byte_decoder_.end()) {
        bytes.push_back(static_cast<char>(it->second));
      } else {
        // Not a bytes_to_unicode character (HF would raise KeyError): keep it.
        AppendUtf8(c, &bytes);
      }
    }
  }
  flush();
  std::string text = absl::StrJoin(sub_texts, " ");
  if (options_.clean_up_tokenization_spaces) CleanUpTokenizationSpaces(&text);
  return text;
}

absl::StatusOr<std::string> ByteLevelBpeTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) {
    return absl::NotFoundError(
        absl::StrCat("token id ", id, " is outside [0, ", id_to_token_.size(), ")"));
  }
  return id_to_token_[id];
}

std::optional<int32_t> ByteLevelBpeTokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_.find(token); it != added_.end()) return it->second;
  if (auto it = vocab_.find(token); it != vocab_.end()) return it->second;
  return std::nullopt;
}

}  // namespace maskserve::engine
