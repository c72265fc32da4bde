// UniLM seq2seq generation on a BERT-family encoder with an MLM head
// (UniLM / bert4keras seq2seq / SimBERT style), as a GenerativeModel:
//
//   input  = [CLS] source [SEP] (type id 0, segment 0) then target tokens
//            (type id 1, segment 1)
//   mask   = UNILM with prefix_length = source length: c[j] <= c[i], so the
//            source is bidirectional and each target token sees the source
//            and the target up to itself
//   logits = the MLM head at the last position (the next target token)
//
// Because under UNILM no position attends a later position once the source
// is complete, keys and values can be cached: the first step must hold the
// whole source (GenerationStep::Prepare rejects a split segment-0 prefix),
// then every target token is one cached step (Encoder::EncodeStep).
// CAUSAL and causal LOCAL / DILATED / STRIDED masks run on the same weights
// (a "causal BERT"); BIDIRECTIONAL cannot generate and is rejected.
//
// The model borrows the Encoder (and its packed weights) that also serves
// embeddings: nothing is packed twice. The Encoder must outlive it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/generative_model.h"

namespace maskserve::engine {

class Encoder;

struct UnilmModelOptions {
  // Ids that end a target by default: the tokenizer's [SEP] (and any other
  // ids the caller wants); may be empty.
  std::vector<int32_t> eos_token_ids;
};

class UnilmModel final : public GenerativeModel {
 public:
  // FailedPrecondition when the encoder has no MLM head.
  static absl::StatusOr<std::unique_ptr<UnilmModel>> Create(const Encoder* encoder,
                                                            const UnilmModelOptions& options);

  GenerationKind kind() const override { return GenerationKind::kUnilm; }
  KvLayout kv_layout() const override;
  int vocab_size() const override;
  int max_sequence_length() const override;
  const std::vector<int32_t>& eos_token_ids() const override { return eos_; }
  // UNILM with prefix_length (the source length, [CLS] and [SEP] included).
  MaskSpec NaturalMask(int prefix_length) const override;
  // UNILM (prefix_length or segment_ids), CAUSAL, and LOCAL / DILATED /
  // STRIDED with causal = true; BIDIRECTIONAL is rejected (InvalidArgument
  // naming "mask").
  absl::Status ValidateMask(const MaskSpec& spec) const override;
  // Type ids must be 0 or 1 (empty = all 0).
  absl::Status Forward(absl::Span<const StepSequence> seqs, KvCachePool* pool,
                       std::vector<float>* logits) const override;

  const Encoder& encoder() const { return *encoder_; }

 private:
  UnilmModel(const Encoder* encoder, std::vector<int32_t> eos)
      : encoder_(encoder), eos_(std::move(eos)) {}

  const Encoder* encoder_;
  std::vector<int32_t> eos_;
};

}  // namespace maskserve::engine
