#include "engine/unilm_model.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/encoder.h"
#include "engine/generation_step.h"

namespace maskserve::engine {

absl::StatusOr<std::unique_ptr<UnilmModel>> UnilmModel::Create(const Encoder* encoder,
                                                               const UnilmModelOptions& options) {
  if (encoder == nullptr) return absl::InvalidArgumentError("UnilmModel: null encoder");
  if (!encoder->has_mlm_head()) {
    return absl::FailedPreconditionError(
        "UniLM generation needs an MLM head (cls.predictions.* or lm_head.*), and the checkpoint "
        "has none");
  }
  return std::unique_ptr<UnilmModel>(new UnilmModel(encoder, options.eos_token_ids));
}

KvLayout UnilmModel::kv_layout() const { return encoder_->kv_layout(); }
int UnilmModel::vocab_size() const { return encoder_->vocab_size(); }
int UnilmModel::max_sequence_length() const { return encoder_->max_sequence_length(); }

MaskSpec UnilmModel::NaturalMask(int prefix_length) const {
  MaskSpec m;
  m.kind = MaskKind::kUnilm;
  m.prefix_length = prefix_length;
  return m;
}

absl::Status UnilmModel::ValidateMask(const MaskSpec& spec) const {
  switch (spec.kind) {
    case MaskKind::kUnilm:
    case MaskKind::kCausal:
      return absl::OkStatus();
    case MaskKind::kLocal:
    case MaskKind::kDilated:
    case MaskKind::kStrided:
      if (spec.causal) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(
          "mask ", spec.ToString(), " lets a position attend later positions; UniLM generation ",
          "runs under UNILM, CAUSAL or a pattern with mask.causal = true"));
    case MaskKind::kBidirectional:
      return absl::InvalidArgumentError(
          "mask BIDIRECTIONAL is not valid for generation (a cached position would have to see "
          "the future); use UNILM (prefix = source length) or CAUSAL");
  }
  return absl::InvalidArgumentError("mask kind is unknown");
}

absl::Status UnilmModel::Forward(absl::Span<const StepSequence> seqs, KvCachePool* pool,
                                 std::vector<float>* logits) const {
  if (pool == nullptr || logits == nullptr) {
    return absl::InvalidArgumentError("Forward: pool and logits must not be null");
  }
  thread_local GenerationStep step;
  thread_local std::vector<float> hidden;
  StepLimits limits;
  limits.layout = kv_layout();
  limits.vocab_size = vocab_size();
  limits.max_sequence_length = max_sequence_length();
  limits.max_type_id = 1;
  if (absl::Status s = step.Prepare(seqs, *pool, limits, *this); !s.ok()) return s;
  const size_t rows = step.logit_rows().size();
  hidden.resize(rows * static_cast<size_t>(encoder_->hidden_size()));
  if (absl::Status s = encoder_->EncodeStep(step, pool, hidden.data()); !s.ok()) return s;
  logits->resize(rows * static_cast<size_t>(vocab_size()));
  return encoder_->MlmLogits(hidden.data(), static_cast<int>(rows), logits->data());
}

}  // namespace maskserve::engine
