// The text <-> token-id interface every tokenizer implements (WordPiece now;
// byte-level BPE and SentencePiece later). Implementations reproduce the
// HuggingFace transformers 4.31 *slow* tokenizers exactly, because the models
// were trained on (and the golden files were made with) those ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace maskserve::engine {

// One encoded sequence (a single text or a pair), ready for the model.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;
  // [start, end) in Unicode code points of the input text; (0, 0) for added
  // special tokens. For pairs, offsets of B tokens refer to text B.
  std::vector<std::pair<int32_t, int32_t>> offsets;
  // Segment ids (BERT token_type_ids): 0 for [CLS] A [SEP], 1 for B [SEP].
  std::vector<int32_t> type_ids;
  // Whether truncation removed any token.
  bool truncated = false;
  // Length (special tokens included) before truncation.
  int32_t num_tokens_untruncated = 0;
};

// HF `truncation=...` / `max_length` / `truncation_side` (truncate_sequences).
struct TruncationOptions {
  enum class Strategy { kLongestFirst, kOnlyFirst, kOnlySecond };
  enum class Side { kRight, kLeft };
  int max_length = 0;                           // total length incl. specials; 0 = no truncation
  Strategy strategy = Strategy::kLongestFirst;  // which sequence loses tokens
  Side side = Side::kRight;                     // which end loses tokens
};

// Ids of the tokenizer's role tokens; nullopt when the tokenizer has none.
struct SpecialTokenIds {
  std::optional<int32_t> cls;
  std::optional<int32_t> sep;
  std::optional<int32_t> pad;
  std::optional<int32_t> unk;
  std::optional<int32_t> mask;
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;
};

// Implementations are immutable after construction: every method is const and
// safe to call from many threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // HF `tok(text, add_special_tokens=..., truncation=..., max_length=...)`.
  // InvalidArgument "text is not valid UTF-8 at byte N" for malformed input.
  virtual absl::StatusOr<Encoding> Encode(absl::string_view text, bool add_special_tokens,
                                          const TruncationOptions& truncation) const = 0;

  // HF `tok(a, b, ...)`: a sequence pair (an empty `b` is still a pair).
  virtual absl::StatusOr<Encoding> EncodePair(absl::string_view a, absl::string_view b,
                                              bool add_special_tokens,
                                              const TruncationOptions& truncation) const = 0;

  // HF `tok.decode(ids, skip_special_tokens=...)` with the tokenizer's default
  // clean_up_tokenization_spaces. Ids outside the vocabulary decode as the
  // unknown token, as in HF.
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                             bool skip_special_tokens) const = 0;

  // Number of ids (vocabulary plus added tokens); valid ids are [0, vocab_size).
  virtual int32_t vocab_size() const = 0;

  // Token string of `id`; NotFound outside [0, vocab_size).
  virtual absl::StatusOr<std::string> IdToToken(int32_t id) const = 0;

  // Id of an exact token string; nullopt when it is not in the vocabulary.
  virtual std::optional<int32_t> TokenToId(absl::string_view token) const = 0;

  virtual const SpecialTokenIds& special_ids() const = 0;

  // Whether `id` is one of HF's all_special_ids (what skip_special_tokens drops).
  virtual bool IsSpecial(int32_t id) const = 0;

  // How many tokens add_special_tokens adds to a single text or a pair.
  virtual int NumSpecialTokensToAdd(bool pair) const = 0;

  // tokenizer_config.json model_max_length; 0 when unknown or unbounded.
  virtual int model_max_length() const = 0;
};

}  // namespace maskserve::engine
