// Character-level vocabulary tokenizer of OpenNMT/CTranslate2 models
// (source_vocab.txt / target_vocab.txt: one token per line, id = line
// number). Every non-whitespace code point is one token; whitespace only
// separates (OpenNMT feeds space-separated tokens, so "a t z" and "atz" encode
// alike). Characters outside the vocabulary become <unk>.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

struct CharVocabOptions {
  std::vector<std::string> vocab;     // token of each id (file line order, unstripped)
  std::string pad_token = "<blank>";  // OpenNMT's padding token
  std::string bos_token = "<s>";      // decoder start
  std::string eos_token = "</s>";     // end of sequence
  std::string unk_token = "<unk>";    // appended to `vocab` when missing, as OpenNMT-tf does
  bool add_bos = false;               // add_special_tokens prepends bos (target side)
  bool add_eos = false;               // add_special_tokens appends eos
  std::string decode_separator = " ";  // between decoded tokens (OpenNMT's tokenized output)
  int model_max_length = 0;            // 0 = unknown
};

// Splits vocabulary file contents into lines on "\n" only, keeping every
// other character (some entries are invisible: U+200E, U+200C, U+202C); a
// final newline does not start an extra entry. InvalidArgument when not UTF-8.
absl::StatusOr<std::vector<std::string>> ParseVocabLines(absl::string_view contents);

class CharVocabTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<CharVocabTokenizer>> Create(CharVocabOptions options);

  // Reads `path` (ParseVocabLines) into options.vocab, then Create.
  static absl::StatusOr<std::unique_ptr<CharVocabTokenizer>> FromFile(const std::string& path,
                                                                      CharVocabOptions options);

  absl::StatusOr<Encoding> Encode(absl::string_view text, bool add_special_tokens,
                                  const TruncationOptions& truncation) const override;
  // A then B, each with its own bos/eos; B has token type 1.
  absl::StatusOr<Encoding> EncodePair(absl::string_view a, absl::string_view b,
                                      bool add_special_tokens,
                                      const TruncationOptions& truncation) const override;
  // Tokens joined by decode_separator; skip_special_tokens drops pad, bos,
  // eos and unk.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(options_.vocab.size()); }
  absl::StatusOr<std::string> IdToToken(int32_t id) const override;
  std::optional<int32_t> TokenToId(absl::string_view token) const override;
  const SpecialTokenIds& special_ids() const override { return special_ids_; }
  bool IsSpecial(int32_t id) const override { return special_set_.contains(id); }
  int NumSpecialTokensToAdd(bool pair) const override;
  int model_max_length() const override { return options_.model_max_length; }

 private:
  struct Piece {
    int32_t id;
    int32_t begin;
    int32_t end;
  };

  explicit CharVocabTokenizer(CharVocabOptions options) : options_(std::move(options)) {}
  absl::Status Tokenize(absl::string_view text, std::vector<Piece>* out) const;
  absl::StatusOr<Encoding> Assemble(const std::vector<Piece>& a, const std::vector<Piece>* b,
                                    bool add_special_tokens,
                                    const TruncationOptions& truncation) const;

  CharVocabOptions options_;
  absl::flat_hash_map<std::string, int32_t> ids_;
  absl::flat_hash_set<int32_t> special_set_;
  SpecialTokenIds special_ids_;
  int32_t unk_id_ = 0;
};

}  // namespace maskserve::engine
