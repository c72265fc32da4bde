// BERT WordPiece tokenization, identical to HF transformers 4.31's slow
// BertTokenizer loaded with from_pretrained: special-token strings matched
// first, then BasicTokenizer (clean text, CJK split, lower-case + strip
// accents, punctuation split) and greedy longest-match-first WordPiece.
// Adds what HF's slow tokenizer lacks: code-point offsets into the input.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/hf_tokenizer_config.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

struct WordPieceOptions {
  std::vector<std::string> vocab;                // token of each id (vocab.txt line order)
  std::string continuing_subword_prefix = "##";  // marks word-internal pieces
  int max_input_chars_per_word = 100;            // longer words (in code points) become unk
  bool do_lower_case = true;                     // lower-case text (special tokens excepted)
  std::optional<bool> strip_accents;             // NFD + drop Mn; nullopt: iff do_lower_case
  bool tokenize_chinese_chars = true;            // every CJK ideograph is its own word
  bool do_basic_tokenize = true;                 // false: WordPiece on whitespace-split raw text
  std::vector<std::string> never_split;          // words BasicTokenizer leaves whole
  // Role tokens; empty content = the tokenizer has none. Tokens missing from
  // `vocab` get new ids after it, as from_pretrained adds them.
  HfSpecialToken unk_token{"[UNK]"};
  HfSpecialToken cls_token{"[CLS]"};
  HfSpecialToken sep_token{"[SEP]"};
  HfSpecialToken pad_token{"[PAD]"};
  HfSpecialToken mask_token{"[MASK]"};
  HfSpecialToken bos_token{""};
  HfSpecialToken eos_token{""};
  std::vector<HfSpecialToken> additional_special_tokens;  // also special (skipped on decode)
  std::vector<std::pair<std::string, int32_t>>
      added_tokens;                          // added_tokens.json: matched, not special
  int model_max_length = 0;                  // 0 = unknown
  bool clean_up_tokenization_spaces = true;  // Decode joins " ." -> "." etc.
};

// Which files of a model directory define the vocabulary.
enum class WordPieceSource {
  kAuto,           // vocab.txt when present (what the slow tokenizer reads), else tokenizer.json
  kVocabTxt,       // vocab.txt
  kTokenizerJson,  // tokenizer.json (model.type WordPiece)
};

// Options for `model_dir`: vocabulary from the chosen source, settings from
// tokenizer_config.json / special_tokens_map.json / added_tokens.json, then
// tokenizer.json's BertNormalizer, then BertTokenizer defaults.
absl::StatusOr<WordPieceOptions> WordPieceOptionsFromDirectory(
    const std::string& model_dir, WordPieceSource source = WordPieceSource::kAuto);

// Parses vocab.txt contents as HF's load_vocab does (one token per line,
// universal newlines). InvalidArgument when not UTF-8.
absl::StatusOr<std::vector<std::string>> ParseVocabTxt(absl::string_view contents);

class WordPieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Create(WordPieceOptions options);

  // One token of Tokenize(): id and [begin, end) code points of the text.
  struct Piece {
    int32_t id;
    int32_t begin;
    int32_t end;
  };

  // HF tokenize() + convert_tokens_to_ids: no special tokens added, no
  // truncation. Appends to `out`.
  absl::Status Tokenize(absl::string_view text, std::vector<Piece>* out) const;

  absl::StatusOr<Encoding> Encode(absl::string_view text, bool add_special_tokens,
                                  const TruncationOptions& truncation) const override;
  absl::StatusOr<Encoding> EncodePair(absl::string_view a, absl::string_view b,
                                      bool add_special_tokens,
                                      const TruncationOptions& truncation) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  absl::StatusOr<std::string> IdToToken(int32_t id) const override;
  std::optional<int32_t> TokenToId(absl::string_view token) const override;
  const SpecialTokenIds& special_ids() const override { return special_ids_; }
  bool IsSpecial(int32_t id) const override { return special_set_.contains(id); }
  int NumSpecialTokensToAdd(bool pair) const override;
  int model_max_length() const override { return options_.model_max_length; }

 private:
  struct Scratch;

  explicit WordPieceTokenizer(WordPieceOptions options) : options_(std::move(options)) {}

  void BasicTokenize(const std::u32string& text, const std::vector<int32_t>& org, int32_t begin,
                     int32_t end, Scratch* s, std::vector<Piece>* out) const;
  void ProcessWord(Scratch* s, std::vector<Piece>* out) const;
  void WordPiece(const char32_t* w, const int32_t* org, int32_t n, Scratch* s,
                 std::vector<Piece>* out) const;
  absl::StatusOr<Encoding> Assemble(const std::vector<Piece>& a, const std::vector<Piece>* b,
                                    bool add_special_tokens,
                                    const TruncationOptions& truncation) const;

  WordPieceOptions options_;
  bool strip_accents_ = true;
  absl::flat_hash_map<std::string, int32_t> vocab_;  // vocab.txt only: what WordPiece matches
  absl::flat_hash_map<std::string, int32_t> added_;  // tokens beyond the vocabulary
  std::vector<std::string> id_to_token_;
  std::vector<AddedToken> added_tokens_;  // matched in text before basic tokenization
  AddedTokenMatcher matcher_;
  absl::flat_hash_set<std::string> never_split_;
  absl::flat_hash_set<int32_t> special_set_;
  SpecialTokenIds special_ids_;
  int32_t unk_id_ = 0;
  int32_t max_piece_chars_ = 0;  // longest vocabulary entry in code points
};

}  // namespace maskserve::engine
