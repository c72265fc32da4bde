// Byte-level BPE, identical to HF transformers 4.31's slow GPT2Tokenizer
// (and RobertaTokenizer, which differs only in its special tokens): added /
// special token strings cut out first, then GPT-2's regex pre-tokenization
// (gpt2_pretokenizer.h), each piece's UTF-8 bytes mapped through
// bytes_to_unicode and merged by BPE rank. Never produces unknown tokens for a
// complete GPT-2 vocabulary. Decoding maps back to bytes and decodes them
// with errors="replace", as HF does.
#pragma once

#include <array>
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

// Which HF class's special tokens (build_inputs_with_special_tokens).
enum class BpeTemplate {
  kGpt2,     // GPT2Tokenizer: nothing, or [bos] A ([bos] B) with add_bos_token
  kRoberta,  // RobertaTokenizer: <s> A </s> (</s> B </s>), token types all 0
};

struct ByteLevelBpeOptions {
  std::vector<std::pair<std::string, int32_t>> vocab;        // vocab.json: token -> id
  std::vector<std::pair<std::string, std::string>> merges;  // merges.txt, best rank first
  BpeTemplate post_processor = BpeTemplate::kGpt2;          // which special tokens are added
  bool add_prefix_space = false;  // prepend " " so the first word is treated like the others
  bool add_bos_token = false;     // kGpt2: prepend bos to each sequence
  // Role tokens; empty content = none. Tokens missing from `vocab` get new
  // ids after it, as from_pretrained adds them.
  HfSpecialToken bos_token{"<|endoftext|>", false, false};
  HfSpecialToken eos_token{"<|endoftext|>", false, false};
  HfSpecialToken unk_token{"<|endoftext|>", false, false};
  HfSpecialToken pad_token{"", false, false};
  HfSpecialToken cls_token{"", false, false};
  HfSpecialToken sep_token{"", false, false};
  HfSpecialToken mask_token{"", true, false};
  std::vector<HfSpecialToken> additional_special_tokens;      // special: skipped on decode
  std::vector<std::pair<std::string, int32_t>> added_tokens;  // added_tokens.json: not special
  int model_max_length = 0;                   // 0 = unknown
  bool clean_up_tokenization_spaces = true;   // Decode joins " ." -> "." etc.
  int cache_capacity = 16384;                 // words kept in the merge cache; 0 disables it
};

// Options for `model_dir`: vocab.json + merges.txt (what the slow tokenizer
// reads), else tokenizer.json with model.type "BPE" and a ByteLevel
// pre-tokenizer; settings from tokenizer_config.json / special_tokens_map.json
// / added_tokens.json over the class defaults (GPT2Tokenizer, or
// RobertaTokenizer for tokenizer_class Roberta/Bart/Longformer).
absl::StatusOr<ByteLevelBpeOptions> ByteLevelBpeOptionsFromDirectory(const std::string& model_dir);

// vocab.json contents: a JSON object of token -> id.
absl::StatusOr<std::vector<std::pair<std::string, int32_t>>> ParseVocabJson(
    absl::string_view contents);

// merges.txt contents exactly as GPT2Tokenizer reads them:
// read().split("\n")[1:-1] (the first line is always skipped, and so is the
// last one, which is empty when the file ends in a newline), each line split
// on whitespace; lines without exactly two parts keep their rank but can
// never match.
std::vector<std::pair<std::string, std::string>> ParseMergesTxt(absl::string_view contents);

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<ByteLevelBpeTokenizer>> Create(
      ByteLevelBpeOptions options);
  ~ByteLevelBpeTokenizer() override;

  // One token of Tokenize(): id and [begin, end) code points of the text. A
  // token holding part of a multi-byte character covers that character.
  struct Piece {
    int32_t id;
    int32_t begin;
    int32_t end;
  };

  // HF tokenize() + convert_tokens_to_ids: no special tokens added, no
  // truncation. Appends to `out`; `tokens` (optional) gets the token strings,
  // which differ from the vocabulary's only for pieces mapped to unk.
  absl::Status Tokenize(absl::string_view text, std::vector<Piece>* out,
                        std::vector<std::string>* tokens = nullptr) const;

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
  class MergeCache;
  // A BPE output symbol: interned string and how many input bytes it covers.
  struct Sym {
    int32_t symbol;
    int32_t bytes;
  };

  explicit ByteLevelBpeTokenizer(ByteLevelBpeOptions options);

  // BPE of one pre-token's bytes (cached).
  void Bpe(absl::string_view word, std::vector<Sym>* out) const;
  void BpeUncached(absl::string_view word, std::vector<Sym>* out) const;
  int32_t Intern(const std::string& s);
  absl::StatusOr<Encoding> Assemble(const std::vector<Piece>& a, const std::vector<std::string>& ta,
                                    const std::vector<Piece>* b,
                                    const std::vector<std::string>* tb, bool add_special_tokens,
                                    const TruncationOptions& truncation) const;

  ByteLevelBpeOptions options_;
  absl::flat_hash_map<std::string, int32_t> vocab_;  // vocab.json (the encoder)
  absl::flat_hash_map<std::string, int32_t> added_;  // added_tokens_encoder: beyond the vocab
  std::vector<std::string> id_to_token_;
  std::vector<AddedToken> added_tokens_;  // matched in the text before pre-tokenization
  AddedTokenMatcher matcher_;
  absl::flat_hash_set<int32_t> special_set_;
  SpecialTokenIds special_ids_;
  int32_t unk_id_ = 0;

  std::vector<std::string> symbols_;  // interned BPE symbols
  absl::flat_hash_map<std::string, int32_t> symbol_ids_;
  std::vector<int32_t> symbol_token_id_;  // id of each symbol (unk when not in the vocabulary)
  std::array<int32_t, 256> byte_symbol_{};  // symbol of each byte's bytes_to_unicode character
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left symbol, right symbol) -> merge
  absl::flat_hash_map<char32_t, uint8_t> byte_decoder_;  // inverse of bytes_to_unicode
  std::unique_ptr<MergeCache> cache_;
};

}  // namespace maskserve::engine
