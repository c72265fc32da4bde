// One packed generation step, prepared for a model's forward pass: the
// StepSequences validated against the model and the KV cache pool, their new
// tokens packed back to back (ids, type ids, absolute positions, row
// offsets), one compiled AttentionMask per sequence (q_offset = num_cached),
// and access to the paged KV cache per layer: WriteKv stores the new tokens'
// keys/values, Kv() hands FusedAttention a KvSource that reads every cached
// and new key in place (no copies).
//
// Why a shared helper: every GenerativeModel (causal LMs, the UniLM encoder)
// must validate a step identically and name the sequence at fault in the
// same words ("sequence 3: ..."), and all of them need the same
// cache-validity rule (see Prepare). Why reusable: models keep one per
// calling thread and Prepare() only clears and refills its vectors, so a
// warmed-up decode step allocates nothing here except the masks' names.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/attention.h"
#include "engine/attention_mask.h"
#include "engine/generative_model.h"
#include "engine/kv_cache.h"

namespace maskserve::engine {

// What a step's inputs must satisfy for one model.
struct StepLimits {
  KvLayout layout;              // the pool must hold exactly this layout
  int vocab_size = 0;           // token ids must lie in [0, vocab_size)
  int max_sequence_length = 0;  // positions must lie in [0, max_sequence_length)
  int max_type_id = -1;         // type ids must lie in [0, max_type_id]; -1 = ignored (all 0)
};

// Floats from a KV block's layer-0 K section to layer `layer`'s K section
// (KvCachePool's block layout is [layer][K|V][kv_head][token][head_dim]).
int64_t KvLayerOffsetFloats(const KvCacheOptions& options, int layer);

// A KvSource of one layer, viewed through a layer-0 PagedKvSource by adding
// the layer offset to every run: one snapshot of the block tables serves
// every layer of a step.
class LayerKvSource final : public KvSource {
 public:
  void Reset(const KvSource* layer0, int64_t offset_floats) {
    base_ = layer0;
    offset_ = offset_floats;
  }
  int NumKeys(int seq) const override { return base_->NumKeys(seq); }
  KvRun Fetch(int seq, int kv_head, int key, int max_count) const override {
    KvRun run = base_->Fetch(seq, kv_head, key, max_count);
    run.k += offset_;
    run.v += offset_;
    return run;
  }

 private:
  const KvSource* base_ = nullptr;
  int64_t offset_ = 0;
};

class GenerationStep {
 public:
  GenerationStep() = default;
  GenerationStep(const GenerationStep&) = delete;
  GenerationStep& operator=(const GenerationStep&) = delete;

  // Validates `seqs` and lays the step out. InvalidArgument naming the
  // sequence index ("sequence 2: token id 99999 at new position 0 is outside
  // the vocabulary [0, 50257)") for: no tokens, negative num_cached, ids or
  // type ids out of range, positions past limits.max_sequence_length, fewer
  // reserved pool positions than num_cached + tokens, the same kv_seq twice,
  // masks that model.ValidateMask rejects or that AttentionMask cannot
  // compile, and masks under which a cached position would attend a new one
  // (a UNILM segment-0 prefix split across steps: cached keys/values would
  // be stale). InvalidArgument (no index) when the pool's layout differs from
  // limits.layout or seqs is empty.
  absl::Status Prepare(absl::Span<const StepSequence> seqs, const KvCachePool& pool,
                       const StepLimits& limits, const GenerativeModel& model);

  int num_seqs() const { return static_cast<int>(kv_seqs_.size()); }
  int num_tokens() const { return static_cast<int>(token_ids_.size()); }
  // Packed new tokens of all sequences, in order.
  absl::Span<const int32_t> token_ids() const { return token_ids_; }
  // Their type ids (0 when the sequence gave none or limits ignore them).
  absl::Span<const int32_t> type_ids() const { return type_ids_; }
  // Their absolute positions (num_cached + index within the sequence).
  absl::Span<const int32_t> positions() const { return positions_; }
  // num_seqs + 1 packed row offsets of the new tokens.
  absl::Span<const int32_t> cu_seqlens() const { return cu_seqlens_; }
  // Per sequence: new tokens as queries (q_offset = num_cached) against all
  // num_cached + new keys.
  absl::Span<const AttentionMask> masks() const { return masks_; }
  // Packed row of the last new token of every sequence with want_logits, in
  // order (one logits row each).
  absl::Span<const int32_t> logit_rows() const { return logit_rows_; }

  // Masks and row offsets for attending with only the logit_rows() as
  // queries (one row per want_logits sequence, none for the others): the
  // last layer of a model needs no other row. Built on first use per step.
  absl::Status PrepareLastRows();
  absl::Span<const AttentionMask> last_row_masks() const { return last_masks_; }
  absl::Span<const int32_t> last_row_cu_seqlens() const { return last_cu_; }

  // Stores packed rows k[t * stride ..], v[t * stride ..] (kv_heads *
  // head_dim floats each) of every new token t as `layer`'s keys/values.
  absl::Status WriteKv(KvCachePool* pool, int layer, const float* k, const float* v,
                       int64_t stride) const;

  // Keys/values of `layer` for FusedAttention, one sequence per step
  // sequence (num_cached + new keys). Call after the layer's WriteKv; the
  // block-table snapshot is taken at the first call of a step, so the pool
  // must not Append/Fork/Free these sequences until the step is over.
  absl::StatusOr<const KvSource*> Kv(const KvCachePool& pool, int layer);

  // A 64-byte aligned scratch buffer of at least `floats` floats, reused
  // (and grown, never shrunk) across steps. Contents are undefined.
  // ResourceExhausted when it cannot be allocated.
  absl::StatusOr<float*> Scratch(size_t floats);

 private:
  struct FreeDeleter {
    void operator()(float* p) const;
  };

  std::vector<SeqId> kv_seqs_;
  std::vector<int> num_keys_;
  std::vector<int32_t> token_ids_;
  std::vector<int32_t> type_ids_;
  std::vector<int32_t> positions_;
  std::vector<int32_t> cu_seqlens_;
  std::vector<AttentionMask> masks_;
  std::vector<const MaskSpec*> specs_;  // borrowed from the StepSequences, or truncated_
  std::vector<MaskSpec> truncated_;     // UNILM specs cut to this step's keys (reserved: stable)
  std::vector<int32_t> logit_rows_;
  std::vector<AttentionMask> last_masks_;
  std::vector<int32_t> last_cu_;
  bool last_ready_ = false;
  KvCacheOptions pool_options_;
  std::unique_ptr<PagedKvSource> layer0_;
  LayerKvSource layer_view_;
  std::unique_ptr<float, FreeDeleter> scratch_;
  size_t scratch_floats_ = 0;
};

}  // namespace maskserve::engine
