// HF transformers 4.31's slow MarianTokenizer (opus-mt checkpoints):
// sentencepiece only SEGMENTS the text (source.spm for the encoder side,
// target.spm for the decoder side); the ids come from vocab.json (pieces it
// lacks become <unk>), or from target_vocab.json on the target side when
// tokenizer_config.json sets separate_vocabs. Per text segment between
// special-token strings: a leading ">>xx<<" language code is kept as one
// token and every other ">>..<<" is removed, the rest goes through the
// side's sentencepiece model. add_special_tokens appends </s> (A </s>, A B
// </s> for pairs). Decode maps ids through the target side's vocabulary,
// writes special tokens literally, joins the other pieces with target.spm's
// decode_pieces, and (by default) applies clean_up_tokenization.
//
// Not reproduced: the sacremoses punctuation normaliser, which
// MarianTokenizer uses only when the sacremoses package is installed.
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
#include "engine/tokenizer/spm_library.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

struct MarianTokenizerOptions {
  std::string source_spm;  // source.spm: segments encoder input
  std::string target_spm;  // target.spm: segments decoder prefixes, decodes output
  std::vector<std::pair<std::string, int32_t>> vocab;         // vocab.json
  std::vector<std::pair<std::string, int32_t>> target_vocab;  // target_vocab.json (separate_vocabs)
  bool separate_vocabs = false;                               // the target side uses target_vocab
  bool target_side = false;                                   // Encode as the target (decoder) side
  HfSpecialToken eos_token{"</s>"};                           // appended by add_special_tokens
  HfSpecialToken unk_token{"<unk>"};                          // pieces missing from the vocabulary
  HfSpecialToken pad_token{"<pad>"};  // padding (the decoder start of Marian models)
  std::vector<HfSpecialToken> additional_special_tokens;  // special, dropped on decode
  int model_max_length = 512;                             // 0 = unknown
  bool clean_up_tokenization_spaces = true;               // Decode joins " ." -> "." etc.
};

// Options for `model_dir` (source.spm, target.spm, vocab.json, and
// target_vocab.json when separate_vocabs) with tokenizer_config.json /
// special_tokens_map.json over the class defaults; `target_side` selects
// which side Encode serves.
absl::StatusOr<MarianTokenizerOptions> MarianTokenizerOptionsFromDirectory(
    const std::string& model_dir, bool target_side);

class MarianTokenizer final : public Tokenizer {
 public:
  // InvalidArgument when unk / pad / eos are missing from a vocabulary.
  static absl::StatusOr<std::unique_ptr<MarianTokenizer>> Create(MarianTokenizerOptions options);

  absl::StatusOr<Encoding> Encode(absl::string_view text, bool add_special_tokens,
                                  const TruncationOptions& truncation) const override;
  // A B </s>; token types 0 for A, 1 for B (pairs are not a Marian use case).
  absl::StatusOr<Encoding> EncodePair(absl::string_view a, absl::string_view b,
                                      bool add_special_tokens,
                                      const TruncationOptions& truncation) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const override;
  // Size of this side's vocabulary.
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  absl::StatusOr<std::string> IdToToken(int32_t id) const override;
  std::optional<int32_t> TokenToId(absl::string_view token) const override;
  const SpecialTokenIds& special_ids() const override { return special_ids_; }
  bool IsSpecial(int32_t id) const override { return special_set_.contains(id); }
  int NumSpecialTokensToAdd(bool pair) const override {
    (void)pair;
    return 1;
  }
  int model_max_length() const override { return options_.model_max_length; }

 private:
  struct Piece {
    int32_t id;
    int32_t begin;
    int32_t end;
    std::string token;
  };
  struct Vocab {
    absl::flat_hash_map<std::string, int32_t> ids;
    std::vector<std::string> tokens;  // by id (holes empty)
  };

  explicit MarianTokenizer(MarianTokenizerOptions options) : options_(std::move(options)) {}
  absl::Status Tokenize(absl::string_view text, std::vector<Piece>* out) const;
  // One text segment (no special-token strings) of `text`, code points
  // [begin, end) with byte offsets cp_byte.
  absl::Status TokenizeSegment(absl::string_view text, const std::vector<int32_t>& cp_byte,
                               const std::vector<int32_t>& byte_cp, int32_t begin, int32_t end,
                               std::vector<Piece>* out) const;
  int32_t IdOf(const std::string& token) const;
  absl::StatusOr<Encoding> Assemble(const std::vector<Piece>& a, const std::vector<Piece>* b,
                                    bool add_special_tokens,
                                    const TruncationOptions& truncation) const;

  MarianTokenizerOptions options_;
  std::unique_ptr<SpmModel> encode_spm_;  // this side's segmenter
  std::unique_ptr<SpmModel> decode_spm_;  // target.spm
  Vocab encode_vocab_;                    // this side's ids
  Vocab decode_vocab_;                    // the target side's ids (decoding)
  std::vector<std::string> id_to_token_;  // this side
  std::vector<AddedToken> specials_;      // matched in the text before sentencepiece
  AddedTokenMatcher matcher_;
  absl::flat_hash_set<int32_t> special_set_;
  absl::flat_hash_set<std::string> special_strings_;
  SpecialTokenIds special_ids_;
  int32_t unk_id_ = 0;
};

}  // namespace maskserve::engine
