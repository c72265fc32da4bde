// SentencePiece tokenization with the semantics of HF transformers 4.31's
// slow LlamaTokenizer and T5Tokenizer (legacy=True, the behaviour of every
// checkpoint saved before 4.31 and of the golden files): special/added token
// strings are cut out of the text first, then each remaining segment is
// encoded by the sentencepiece model on its own (so each gets the model's
// dummy-prefix "▁"). The model (normalisation such as T5's nmt_nfkc included)
// runs in libmaskserve_spm.so, loaded at run time (see spm_library.h).
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

// Which HF class the tokenizer reproduces.
enum class SentencePieceFlavor {
  kLlama,  // LlamaTokenizer: [bos] A [eos] per sequence, role tokens never strip spaces
  kT5,     // T5Tokenizer: A </s> (B </s>), <extra_id_N> after the model's pieces
};

struct SentencePieceOptions {
  std::string model_path;                                 // the sentencepiece .model file
  SentencePieceFlavor flavor = SentencePieceFlavor::kLlama;  // HF class semantics
  bool add_bos_token = true;   // Llama: prepend bos to each sequence
  bool add_eos_token = false;  // Llama: append eos to each sequence (T5 always does)
  int extra_ids = 0;           // T5: number of <extra_id_N> ids after the model's pieces
  // Role tokens; empty content = none. Missing from the model: new ids are
  // appended, as from_pretrained adds them.
  HfSpecialToken bos_token{"<s>", false, false};
  HfSpecialToken eos_token{"</s>", false, false};
  HfSpecialToken unk_token{"<unk>", false, false};
  HfSpecialToken pad_token{"", false, false};
  std::vector<HfSpecialToken> additional_special_tokens;  // special, dropped by skip_special_tokens
  std::vector<std::pair<std::string, int32_t>> added_tokens;  // added_tokens.json: not special
  int model_max_length = 0;                   // 0 = unknown
  bool clean_up_tokenization_spaces = false;  // Decode joins " ." -> "." etc.
};

// Options for a model directory: the .model file (`model_file` inside
// `model_dir`, or the first of spiece.model / tokenizer.model /
// sentencepiece.bpe.model), the flavor from tokenizer_config.json's
// tokenizer_class (else spiece.model means T5, anything else Llama), and the
// class defaults overridden by tokenizer_config.json / special_tokens_map.json
// / added_tokens.json. Unimplemented for legacy=false and for other
// sentencepiece-based classes.
absl::StatusOr<SentencePieceOptions> SentencePieceOptionsFromDirectory(
    const std::string& model_dir, const std::string& model_file = "");

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Create(
      SentencePieceOptions options);

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

  SentencePieceFlavor flavor() const { return options_.flavor; }

 private:
  SentencePieceTokenizer(SentencePieceOptions options, std::unique_ptr<SpmModel> model)
      : options_(std::move(options)), model_(std::move(model)) {}

  absl::StatusOr<Encoding> Assemble(const std::vector<Piece>& a, const std::vector<Piece>* b,
                                    bool add_special_tokens,
                                    const TruncationOptions& truncation) const;
  // HF convert_tokens_to_string of the class, on ids of model pieces and
  // special tokens.
  absl::StatusOr<std::string> TokensToString(const std::vector<int32_t>& ids) const;

  SentencePieceOptions options_;
  std::unique_ptr<SpmModel> model_;
  int32_t model_size_ = 0;                           // pieces in the .model
  std::vector<std::string> id_to_token_;             // every id: pieces, extra ids, added
  absl::flat_hash_map<std::string, int32_t> added_;  // tokens beyond the model (added_tokens_encoder)
  absl::flat_hash_map<std::string, int32_t> extra_;  // T5 <extra_id_N>
  std::vector<AddedToken> added_tokens_;             // matched in the text before sentencepiece
  AddedTokenMatcher matcher_;
  absl::flat_hash_set<int32_t> special_set_;
  absl::flat_hash_set<std::string> special_strings_;  // HF all_special_tokens
  SpecialTokenIds special_ids_;
  int32_t unk_id_ = 0;
};

}  // namespace maskserve::engine
