// Turns what a Generate request names as its input (prompt text, prompt ids,
// seq2seq source, forced target prefix, mask) into the token stream a
// GenerativeModel is stepped over, per GenerationKind:
//
//   decoder-only     Encode(prompt, add_special_tokens=true) (Llama's tokenizer
//                    adds BOS, GPT-2's adds nothing) or prompt_ids as given;
//                    a target prefix is appended without special tokens
//   UniLM            [CLS] source [SEP] with token type 0, then the target
//                    prefix (no special tokens) with type 1; the UNILM mask's
//                    prefix_length is the source part's length
//   encoder-decoder  source ids (with the source tokenizer's specials) for
//                    EncodeSource; decoder ids = decoder_start_token_id +
//                    target prefix (target tokenizer, no specials)
//
// Every error is INVALID_ARGUMENT (FAILED_PRECONDITION for a missing
// tokenizer) naming the request field, so the server can pass it through.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/attention_mask.h"
#include "engine/generative_model.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

// The request's input fields, as given.
struct GenerationInput {
  std::string prompt;               // decoder-only prompt text (seq2seq: the source)
  std::vector<int32_t> prompt_ids;  // decoder-only pre-tokenised prompt (exclusive with prompt)
  std::string source;               // UniLM segment 0 / encoder input
  std::string target_prefix;        // forced start of the output
  std::optional<MaskSpec> mask;     // nullopt = the model's natural mask
};

// The model input a RequestDecoder starts from.
struct GenerationPrompt {
  // Tokens stepped through the decoder stack before the first new token:
  // the prompt (decoder-only), [CLS] source [SEP] + prefix (UniLM), decoder
  // start + prefix (encoder-decoder). Never empty.
  std::vector<int32_t> ids;
  // Token type of each id (UniLM: 0 source, 1 target); empty = all 0.
  std::vector<int32_t> type_ids;
  // Type id of generated tokens (UniLM: 1).
  int32_t generated_type_id = 0;
  // Encoder-decoder only: the encoder input.
  std::vector<int32_t> source_ids;
  // What the output text continues, as detokeniser context: decoder-only,
  // the prompt (so prompt + text reads as one text, a leading space
  // included); seq2seq, only the target prefix (the output is a new segment,
  // not a continuation of the source).
  std::vector<int32_t> text_context_ids;
  // Attention pattern over the whole sequence, already checked by the model.
  MaskSpec mask;
  // Tokens of model input, for usage accounting (ids + source_ids).
  int prompt_tokens = 0;
};

// Builds the model input. `tokenizer` may be null (then only prompt_ids
// work). `target_tokenizer` encodes the target prefix of an encoder-decoder
// model whose target vocabulary differs from its source's (OpenNMT,
// Marian); null = `tokenizer`.
absl::StatusOr<GenerationPrompt> BuildGenerationPrompt(const GenerativeModel& model,
                                                       const Tokenizer* tokenizer,
                                                       const GenerationInput& input,
                                                       const Tokenizer* target_tokenizer = nullptr);

}  // namespace maskserve::engine
