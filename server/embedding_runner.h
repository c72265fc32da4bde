// Runs embedding inputs of one model through the dynamic batcher and the
// engine's encoder: inputs from many requests are packed (padding-free) into
// one Encode call, and each input gets its pooled vector back. One runner
// per model, so one model's load never starves another's queue.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/attention_mask.h"
#include "engine/loaded_model.h"
#include "engine/pooling_mode.h"
#include "server/scheduler/dynamic_batcher.h"

namespace maskserve::server {

// One input to embed: its tokens (special tokens included) and how to pool.
struct EmbedInput {
  std::vector<int32_t> ids;
  // Segment ids (same length as ids) or empty for all-zero.
  std::vector<int32_t> type_ids;
  engine::PoolingMode pooling = engine::PoolingMode::kCls;
  engine::MaskSpec mask;
};

// The pooled vector [hidden_size] (before whitening / normalisation).
struct EmbedOutput {
  std::vector<float> pooled;
  // Tokens the model saw.
  int32_t tokens = 0;
};

using EmbedBatcher = DynamicBatcher<EmbedInput, EmbedOutput>;

struct EmbeddingRunnerOptions {
  // Batching limits and metrics (model label, registry, clock, workers).
  DynamicBatcherOptions batching;
  // OpenMP threads each batching worker computes with (0 = the process-wide
  // engine count); batching.num_workers x this should fit the CPU budget.
  int threads_per_worker = 0;
};

class EmbeddingRunner {
 public:
  // `model` must have an encoder.
  static absl::StatusOr<std::unique_ptr<EmbeddingRunner>> Create(
      std::shared_ptr<const engine::LoadedModel> model, const EmbeddingRunnerOptions& options);

  // Queues the inputs; `on_done` runs once with every pooled vector in input
  // order, or the first error (see DynamicBatcher::Submit).
  absl::StatusOr<RequestHandle> Submit(std::vector<EmbedInput> inputs, absl::Time deadline,
                                       EmbedBatcher::DoneFn on_done);
  bool Cancel(RequestHandle handle) { return batcher_->Cancel(handle); }
  // DynamicBatcher::CheckAdmission: a refusal Submit would give anyway.
  absl::Status CheckAdmission(absl::Time deadline) const {
    return batcher_->CheckAdmission(deadline);
  }
  void Shutdown() { batcher_->Shutdown(); }

  // Runs one packed batch (the batcher's BatchFn; public for tests).
  static absl::Status RunBatch(const engine::LoadedModel& model,
                               absl::Span<EmbedBatcher::Item* const> items);

 private:
  EmbeddingRunner() = default;
  std::shared_ptr<const engine::LoadedModel> model_;
  std::unique_ptr<EmbedBatcher> batcher_;
};

}  // namespace maskserve::server
